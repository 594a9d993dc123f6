"""The whole job against a real S3 endpoint (moto server on 127.0.0.1): inputs and outputs in buckets."""

import csv
import datetime as dt
import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import s3fs
from s3server import moto_server, storage_options

from mmbatch.config import parse_config
from mmbatch.errors import InputError
from mmbatch.inputs.sources import discover
from mmbatch.pipeline.run import run_pipeline
from mmbatch.schema import partitioning
from mmbatch.synth import write_video, write_vtt

DAY = dt.date(2026, 11, 27)
CUE = "A sentence from the sidecar transcript."


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server() as endpoint:
        opts = storage_options(endpoint)
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        for bucket in ("in-bucket", "out-bucket"):
            client.create_bucket(Bucket=bucket)
        fs = s3fs.S3FileSystem(**opts)
        local = tmp_path_factory.mktemp("s3src")
        # (a) plain files, keys with spaces and non-ASCII; one with a sidecar transcript
        write_video(local / "v1.mp4", seconds=6.0, seed=1)
        write_video(local / "v2.mkv", seconds=3.0, seed=2)
        write_vtt(local / "v1.vtt", [(0.0, 6.0, CUE)])
        fs.put(str(local / "v1.mp4"), "in-bucket/mixed/talk show ép 1.mp4")
        fs.put(str(local / "v1.vtt"), "in-bucket/mixed/talk show ép 1.vtt")
        fs.put(str(local / "v2.mkv"), "in-bucket/mixed/sub dir/b.MKV")
        # (c) a WebDataset shard with two samples, one with its transcript
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, src in (("s0001.mp4", "v1.mp4"), ("s0001.vtt", "v1.vtt"), ("s0002.mp4", "v2.mkv")):
                tar.add(str(local / src), arcname=name)
        fs.pipe("in-bucket/mixed/shard-000.tar", buf.getvalue())
        # (d) an HLS recording: playlist + 1 s .ts segments
        write_video(local / "hls" / "index.m3u8", seconds=5.0, seed=3, container_format="hls",
                    container_options={"hls_time": "1", "hls_list_size": "0"})
        fs.put(str(local / "hls") + "/", "in-bucket/mixed/live/cam1/", recursive=True)
        # (b) a manifest listing two of the files, one with its own video_id
        rows = [{"uri": "s3://in-bucket/mixed/talk show ép 1.mp4", "video_id": "episode-1"},
                {"uri": "sub dir/b.MKV", "video_id": ""}]
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=["uri", "video_id"])
        w.writeheader()
        w.writerows(rows)
        fs.pipe("in-bucket/mixed/list.csv", text.getvalue().encode())
        fs.pipe("in-bucket/mixed/list.jsonl", b'{"uri": "sub dir/b.MKV"}\n')
        yield {"endpoint": endpoint, "options": opts, "fs": fs}


def config(tiny_config, s3):
    return tiny_config.model_copy(update={"storage_options": s3["options"]})


def read(fs, root, table):
    path = f"{root}/{table}".removeprefix("s3://")
    return pq.read_table(path, filesystem=fs, partitioning=partitioning()).to_pandas()


def test_discovery_of_all_forms(s3):
    refs = {r.video_id: r for r in discover("s3://in-bucket/mixed/", s3["options"])}
    assert sorted(refs) == ["live/cam1/index", "shard-000/s0001", "shard-000/s0002", "sub dir/b", "talk show ép 1"]
    assert refs["live/cam1/index"].kind == "hls"
    assert refs["shard-000/s0001"].uri == "tar://s0001.mp4::s3://in-bucket/mixed/shard-000.tar"
    assert refs["shard-000/s0001"].sidecars == {"transcript": "tar://s0001.vtt::s3://in-bucket/mixed/shard-000.tar"}
    assert refs["talk show ép 1"].sidecars == {"transcript": "s3://in-bucket/mixed/talk show ép 1.vtt"}


def test_manifests_csv_and_jsonl(s3):
    refs = discover("s3://in-bucket/mixed/list.csv", s3["options"])
    assert [(r.video_id, r.uri) for r in refs] == [
        ("episode-1", "s3://in-bucket/mixed/talk show ép 1.mp4"), ("sub dir/b", "s3://in-bucket/mixed/sub dir/b.MKV")]
    assert refs[0].size_bytes > 0 and refs[0].etag
    assert [r.video_id for r in discover("s3://in-bucket/mixed/list.jsonl", s3["options"])] == ["sub dir/b"]


@pytest.fixture(scope="module")
def s3_night(ray_cluster, tiny_config, s3):
    """One night on every input form, read from and written to S3: (output root, RunResult)."""
    out = "s3://out-bucket/scores"
    return out, run_pipeline(config(tiny_config, s3), "s3://in-bucket/mixed/", out, DAY)


def test_job_on_s3_in_and_out(s3_night, s3):
    fs, (out, result) = s3["fs"], s3_night
    assert (result.inputs, result.scored, result.failed) == (5, 5, 0)
    clips = read(fs, out, "clips")
    per_video = clips.groupby("video_id").size().to_dict()
    assert per_video == {"live/cam1/index": 1, "shard-000/s0001": 2, "shard-000/s0002": 1, "sub dir/b": 1,
                         "talk show ép 1": 2}
    # Sidecar transcripts replace speech recognition; the others are transcribed by (tiny) Whisper.
    by_vid = clips.groupby("video_id")["transcript"].first()
    assert by_vid["talk show ép 1"] == CUE and by_vid["shard-000/s0001"] == CUE
    assert by_vid["sub dir/b"] not in (None, CUE)  # no sidecar: (tiny, random) Whisper's output
    assert by_vid["live/cam1/index"] not in (None, CUE)
    videos = read(fs, out, "videos")
    assert sorted(videos["video_id"]) == sorted(per_video) and (videos["status"] == "ok").all()
    hls = videos.set_index("video_id").loc["live/cam1/index"]
    assert hls["duration_s"] == pytest.approx(5.0, abs=0.15)
    assert fs.exists(f"{out}/_runs/{result.run_id}.json")


def test_job_from_manifest(ray_cluster, tiny_config, s3):
    fs, out = s3["fs"], "s3://out-bucket/from-manifest"
    result = run_pipeline(config(tiny_config, s3), "s3://in-bucket/mixed/list.csv", out, DAY)
    assert (result.inputs, result.scored, result.clips) == (2, 2, 3)
    assert sorted(read(fs, out, "videos")["video_id"]) == ["episode-1", "sub dir/b"]


def test_missing_bucket(s3):
    with pytest.raises(InputError, match="input not found: s3://no-such-bucket/x/"):
        discover("s3://no-such-bucket/x/", s3["options"])


def test_empty_prefix(s3):
    with pytest.raises(InputError, match="input not found: s3://in-bucket/nothing-here/"):
        discover("s3://in-bucket/nothing-here/", s3["options"])


def test_unreadable_manifest_names_uri(s3):
    s3["fs"].pipe("in-bucket/bad/list.parquet", b"not parquet at all")
    with pytest.raises(InputError, match="unreadable manifest s3://in-bucket/bad/list.parquet"):
        discover("s3://in-bucket/bad/list.parquet", s3["options"])
    s3["fs"].pipe("in-bucket/bad/nouri.csv", b"path\na.mp4\n")
    with pytest.raises(InputError, match="has no 'uri' column"):
        discover("s3://in-bucket/bad/nouri.csv", s3["options"])


def test_access_denied_never_prints_the_secret():
    secret = "sUp3rS3cr3tValue"
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        opts = storage_options(endpoint, key="AKIAWRONGKEY", secret=secret)
        with pytest.raises(InputError) as err:
            discover("s3://some-bucket/videos/", opts)
    msg = str(err.value)
    assert msg.startswith("access denied listing s3://some-bucket/videos/"), msg
    assert secret not in msg


def test_secrets_are_masked_in_outputs(s3_night, s3):
    fs, (out, result) = s3["fs"], s3_night
    manifest = fs.cat(f"{out}/_runs/{result.run_id}.json").decode()
    meta = pq.read_schema(fs.open(fs.glob(f"{out}/clips/*/*.parquet")[0])).metadata[b"mmbatch.config"].decode()
    for text in (manifest, meta):
        assert '"secret": "***"' in text and '"key": "***"' in text and "testing" not in text



def test_spooling_a_large_object_keeps_memory_flat(s3, tmp_path):
    """Remote videos reach the decoder through node-local disk in 4 MiB chunks, never whole in RAM."""
    import subprocess
    import sys

    s3["fs"].pipe("in-bucket/big/blob.mp4", b"\0" * (96 << 20))
    code = """
import resource, sys, json
sys.path.insert(0, %r)
from mmbatch import storage
from mmbatch.inputs import containers
opts = json.loads(sys.argv[1])
fs, path = storage.filesystem("s3://in-bucket/big/blob.mp4", opts)
fs.info(path)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
containers.spool_stream("s3://in-bucket/big/blob.mp4", opts, sys.argv[2])
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""" % str(Path(__file__).resolve().parent.parent)
    import json

    out = subprocess.run([sys.executable, "-c", code, json.dumps(s3["options"]), str(tmp_path / "spool.mp4")],
                         capture_output=True, text=True, timeout=300)
    before, after = map(int, out.stdout.split())
    assert (tmp_path / "spool.mp4").stat().st_size == 96 << 20
    assert (after - before) / 1024 < 40, f"peak RSS grew {(after - before) / 1024:.0f} MB for a 96 MB object"


def test_standard_aws_environment_is_honoured(s3, monkeypatch):
    """No storage_options: endpoint and keys come from the AWS environment, as on a real cluster."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    refs = discover("s3://in-bucket/mixed/sub dir/")
    assert [r.video_id for r in refs] == ["b"]


def test_model_from_an_s3_folder_is_fetched_once_per_content(s3, tmp_path, monkeypatch):
    import json

    from mmbatch.models import loading as models

    monkeypatch.setenv("MMBATCH_CACHE", str(tmp_path / "cache"))
    s3["fs"].put(models.resolve_source("tiny:roberta-sentiment") + "/", "in-bucket/models/roberta/", recursive=True)
    local = models.resolve_source("s3://in-bucket/models/roberta", s3["options"])
    assert Path(local, "config.json").exists() and Path(local).is_relative_to(tmp_path / "cache")
    identity = models.model_identity("s3://in-bucket/models/roberta", None, s3["options"])
    fetched = Path(local, "config.json").stat().st_mtime_ns
    assert models.resolve_source("s3://in-bucket/models/roberta", s3["options"]) == local  # unchanged: no fetch
    assert Path(local, "config.json").stat().st_mtime_ns == fetched
    # The folder is updated under the same URI: the identity (and so the fingerprint) changes,
    # and the new content is fetched into a new cache entry.
    cfg = json.loads(Path(local, "config.json").read_text())
    cfg["label2id"] = {"NEGATIVE": 0, "NEUTRAL": 1, "POSITIVE": 2, **cfg.get("label2id", {})}
    s3["fs"].pipe("in-bucket/models/roberta/config.json", json.dumps(cfg).encode())
    assert models.model_identity("s3://in-bucket/models/roberta", None, s3["options"]) != identity
    updated = models.resolve_source("s3://in-bucket/models/roberta", s3["options"])
    assert updated != local and json.loads(Path(updated, "config.json").read_text()) == cfg
    from mmbatch.encoders.inspect import inspect_models

    cfg = parse_config({"storage_options": s3["options"],
                        "models": {"text": {"task": "text_classification", "source": "s3://in-bucket/models/roberta"}}})
    assert inspect_models(cfg).text == 32
