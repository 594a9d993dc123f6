"""Store faults beyond 503, through a fault-injecting proxy in front of moto (tests/faultproxy.py):
bodies cut short mid-GET, connection resets and slow responses, each on 10% of requests. The
night commits, every input is accounted for, no clip is written twice, and the exit code follows."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest
import s3fs
from faultproxy import FaultPlan, fault_proxy
from s3server import moto_server, storage_options

from mmbatch.schema import partitioning
from mmbatch.synth import write_video, write_vtt
from pipelines.run import run_pipeline

DAY = dt.date(2026, 11, 27)
VIDEOS = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with moto_server() as endpoint:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        for bucket in ("in-bucket", "out-bucket"):
            client.create_bucket(Bucket=bucket)
        fs = s3fs.S3FileSystem(**storage_options(endpoint))
        local = tmp_path_factory.mktemp("faults")
        for i, name in enumerate(VIDEOS):
            write_video(local / f"{name}.mp4", seconds=3.0, width=48, height=32, seed=10 + i)
            write_vtt(local / f"{name}.vtt", [(0.0, 3.0, f"Clip {name} says something kind.")])
            fs.put(str(local / f"{name}.mp4"), f"in-bucket/night/{name}.mp4")
            fs.put(str(local / f"{name}.vtt"), f"in-bucket/night/{name}.vtt")
        yield endpoint, fs


def test_a_night_through_a_faulty_store_commits_exactly_once(ray_cluster, tiny_config, store):
    """The whole job, with all three faults on 10% of requests each (about 30% of requests faulted)."""
    endpoint, fs = store
    plan = FaultPlan(truncate=0.1, reset=0.1, slow=0.1, slow_s=1.0, seed=7)
    out = "s3://out-bucket/night"
    with fault_proxy(endpoint, plan) as proxy:
        config = tiny_config.model_copy(update={"storage_options": storage_options(proxy)})
        result = run_pipeline(config, "s3://in-bucket/night/", out, DAY)
    assert min(plan.counts[f] for f in ("truncate", "reset", "slow")) > 0, plan.counts  # the faults happened
    assert result.inputs == len(VIDEOS) == result.scored + result.failed + result.skipped
    assert (result.scored, result.failed) == (len(VIDEOS), 0)  # retried through, so exit 0 is the truth
    read = {t: pq.read_table(f"out-bucket/night/{t}", filesystem=fs, partitioning=partitioning()).to_pandas()
            for t in ("clips", "videos")}  # read directly, not through the proxy
    assert sorted(read["videos"]["video_id"]) == list(VIDEOS) and (read["videos"]["status"] == "ok").all()
    clips = read["clips"]
    assert clips["clip_id"].is_unique and len(clips) == result.clips == sum(read["videos"]["n_clips"])
    assert set(clips["video_id"]) == set(VIDEOS)


@pytest.mark.parametrize("fault", ["truncate", "reset", "slow"])
def test_each_fault_kind_on_every_store_path_of_a_night(store, tmp_path, fault):
    """Each fault alone on 10% of requests, on what a night does with the store without Ray:
    discovery, spooling every video and sidecar, staging clip files, the commit, the state table."""
    from nights import Night, clip_rows

    from mmbatch.inputs import containers
    from mmbatch.inputs.sources import discover

    endpoint, fs = store
    plan = FaultPlan(**{fault: 0.1}, slow_s=0.2, seed=3)
    with fault_proxy(endpoint, plan) as proxy:
        opts = storage_options(proxy)
        for round_ in range(2):  # enough requests that the fault is drawn
            refs = discover("s3://in-bucket/night/", opts)
            assert [r.video_id for r in refs] == list(VIDEOS)
            for ref in refs:
                local = tmp_path / f"{round_}-{ref.video_id}.mp4"
                containers.spool_stream(ref.uri, opts, str(local))
                assert local.read_bytes() == fs.cat(ref.uri.removeprefix("s3://"))
            out = f"s3://out-bucket/{fault}-{round_}"
            manifest = Night(out, refs, storage_options=opts).write(*[clip_rows(v, 2) for v in VIDEOS]).commit()
            assert manifest["counts"]["clips"] == 2 * len(VIDEOS)
            clips = pq.read_table(f"out-bucket/{fault}-{round_}/clips", filesystem=fs).to_pandas()
            assert sorted(clips["clip_id"]) == sorted(f"{v}-{i}" for v in VIDEOS for i in range(2))
    assert plan.counts[fault] > 0, plan.counts
