"""Trust boundaries and limits: only what the night was given is read, secrets never land,
every input is bounded, and one bad input fails only itself."""

import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
from conftest import ref_batch

from mmbatch.config import ConfigError, parse_config
from mmbatch.decode.stage import DecodeStage
from mmbatch.encoders.speech import store_transcripts
from mmbatch.inputs import sources
from mmbatch.inputs.sources import VideoRef
from mmbatch.inputs.transcripts import SidecarError, TranscriptCache
from mmbatch.synth import write_video
from mmbatch.trust import AllowedRoots, TrustError, redact_text, redact_uri

SECRETS = ("FAKESIGNATURE0123456789", "AKIAFAKECREDENTIAL", "FAKETOKEN987", "hunter2pass")


@pytest.fixture
def listener():
    """A loopback HTTP server that counts requests: nothing may ever reach it."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_redaction_keeps_the_address_and_drops_secrets():
    presigned = ("https://bucket.s3.amazonaws.com/v/a.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
                 "AKIAFAKECREDENTIAL%2F20261127&X-Amz-Signature=FAKESIGNATURE0123456789&X-Amz-Security-Token=FAKETOKEN987"
                 "&X-Amz-Expires=600")
    assert redact_uri(presigned) == ("https://bucket.s3.amazonaws.com/v/a.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                                     "&X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&X-Amz-Expires=600")
    assert redact_uri("ftp://bob:hunter2pass@host/x.mp4") == "ftp://bob:***@host/x.mp4"
    assert redact_uri("https://acct.blob.core.windows.net/c/x.mp4?sv=2024&sig=FAKESIG") == \
        "https://acct.blob.core.windows.net/c/x.mp4?sv=2024&sig=***"
    assert redact_uri("tar://a.mp4::s3://bucket/shard.tar") == "tar://a.mp4::s3://bucket/shard.tar"
    assert redact_text(f"cannot read {presigned}: 403") == f"cannot read {redact_uri(presigned)}: 403"


def test_allowed_roots():
    roots = AllowedRoots.for_input("s3://media/nightly/manifest.csv", ["s3://archive/2025/"])
    assert roots.allows("s3://media/nightly/a/b.mp4") and roots.allows("s3://archive/2025/x.mp4")
    assert not roots.allows("s3://media/nightly/../private/x.mp4")  # no climbing out
    assert not roots.allows("s3://media/nightlyX/a.mp4") and not roots.allows("s3://other/nightly/a.mp4")
    assert not roots.allows("/media/nightly/a.mp4")  # same path, other scheme
    with pytest.raises(TrustError, match=r"http\(s\) inputs are not allowed unless listed in inputs.allowed_roots"):
        roots.check("http://127.0.0.1:9/a.mp4")
    local = AllowedRoots.for_input("/data/in")
    assert local.allows("/data/in/x.mp4") and local.allows("file:///data/in/x.mp4") and not local.allows("/data/inx/y")
    assert AllowedRoots.for_input("/data/in/*.mp4").allows("/data/in/x.mp4")


def test_manifest_rows_outside_the_input_are_refused_and_never_read(tmp_path, listener):
    url, hits = listener
    inside = write_video(tmp_path / "in" / "ok.mp4", seconds=1.0)
    private = write_video(tmp_path / "private" / "secret.mp4", seconds=1.0)
    (tmp_path / "private" / "secret.txt").write_text("private words")
    rows = [
        {"uri": "ok.mp4", "video_id": "ok"},
        {"uri": str(private), "video_id": "local"},
        {"uri": f"file://{private}", "video_id": "file"},
        {"uri": f"{url}/v.mp4?X-Amz-Signature={SECRETS[0]}", "video_id": "http"},
        {"uri": "s3://other-bucket/v.mp4", "video_id": "bucket"},
        {"uri": "../private/secret.mp4", "video_id": "climb"},
    ]
    (tmp_path / "in" / "night.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    refs = {r.video_id: r for r in sources.discover(str(tmp_path / "in" / "night.jsonl"))}
    assert refs["ok"].error == "" and refs["ok"].uri == str(inside)
    root = str(tmp_path / "in")
    assert refs["local"].error == (f"refused {private}: outside the allowed input roots ({root}); "
                                   "list it in inputs.allowed_roots to allow it")
    assert refs["file"].error.startswith(f"refused file://{private}: outside the allowed input roots")
    assert refs["http"].error == (f"refused {url}/v.mp4?X-Amz-Signature=***: http(s) inputs are not allowed "
                                  "unless listed in inputs.allowed_roots")
    assert "outside the allowed input roots" in refs["bucket"].error and "outside" in refs["climb"].error
    assert hits == []  # not one request reached the listener
    widened = sources.discover(str(tmp_path / "in" / "night.jsonl"),
                               trust=AllowedRoots.for_input(str(tmp_path / "in"), [str(tmp_path / "private")]))
    assert {r.video_id: r.error for r in widened}["local"] == ""


def _tar_with_corrupt_member(path):
    with tarfile.open(path, "w") as tar:
        for name in ("a", "b", "c"):
            for ext, data in ((".mp4", b"V" * 700), (".txt", f"words of {name}".encode())):
                info = tarfile.TarInfo(f"{name}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = bytearray(path.read_bytes())
    b_header = raw.find(b"b.mp4")
    raw[b_header + 148: b_header + 156] = b"garbage!"  # break its header checksum
    path.write_bytes(bytes(raw))
    return b_header


def test_a_corrupt_tar_member_fails_only_itself(tmp_path):
    offset = _tar_with_corrupt_member(tmp_path / "shard-000.tar")
    refs = {r.video_id: r for r in sources.discover(str(tmp_path / "shard-000.tar"))}
    # b.mp4's header is unreadable: its span is one failed input; b.txt alone is no sample.
    assert sorted(refs) == ["shard-000/a", "shard-000/c", f"shard-000/corrupt-at-{offset}"]
    assert refs[f"shard-000/corrupt-at-{offset}"].error == (
        f"corrupt tar member header at byte {offset} of the shard (1536 bytes skipped)")
    assert refs["shard-000/a"].error == "" and refs["shard-000/c"].error == ""
    assert refs["shard-000/c"].sidecars["transcript"].startswith("tar://c.txt::")


@pytest.mark.parametrize("segment", ["../private/seg0.ts", "{private}/seg0.ts", "file://{private}/seg0.ts",
                                     "{url}/seg0.ts?sig=FAKESIGNATURE0123456789", "s3://other-bucket/seg0.ts"])
def test_playlist_segments_outside_the_input_are_refused(tiny_config, tmp_path, listener, segment):
    url, hits = listener
    private = tmp_path / "private"
    private.mkdir()
    (private / "seg0.ts").write_bytes(b"\x47" * 188)
    segment = segment.format(private=private, url=url)
    playlist = tmp_path / "in" / "cam.m3u8"
    playlist.parent.mkdir()
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{segment}\n#EXT-X-ENDLIST\n")
    stage = DecodeStage(tiny_config, AllowedRoots.for_input(str(tmp_path / "in")), isolated=False)
    ref = VideoRef("cam", str(playlist), playlist.stat().st_size, "e", kind="hls")
    rows = list(stage(ref_batch(ref)))
    assert len(rows) == 1 and rows[0]["status"][0] == "error"
    error = str(rows[0]["error"][0])
    assert error.startswith("refused ") and ("outside the allowed input roots" in error or "http(s)" in error), error
    assert "FAKESIGNATURE" not in error and hits == []


def test_sidecars_are_bounded_and_never_silently_empty(tmp_path):
    big = tmp_path / "big.vtt"
    big.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\n" + "word " * 1000)
    binary = tmp_path / "bin.vtt"
    binary.write_bytes(b"WEBVTT\n\x00\x01\x02\xff" * 10)
    nocues = tmp_path / "nocues.srt"
    nocues.write_text("just some text without any timing lines")
    cache = TranscriptCache(max_bytes=1000)
    with pytest.raises(SidecarError, match=r"big.vtt is larger than inputs.max_sidecar_bytes \(1000\)"):
        cache.text_for(str(big), 0, 1)
    with pytest.raises(SidecarError, match="bin.vtt is binary, not text"):
        cache.text_for(str(binary), 0, 1)
    with pytest.raises(SidecarError, match="nocues.srt has no readable cues"):
        cache.text_for(str(nocues), 0, 1)
    batch = {"video_id": np.array(["v", "v"])}
    out = store_transcripts(batch, np.array(["x" * 50, "short"], dtype=object), np.array(["", ""], dtype=object), 10)
    assert out["transcript"].tolist() == ["x" * 10, "short"]
    assert out["text_error"].tolist() == ["transcript cut to inputs.max_transcript_chars (10 of 50)", ""]


def test_a_50_mb_sidecar_is_read_in_bounded_memory(tmp_path):
    big = tmp_path / "huge.vtt"
    cue = "00:00:00.000 --> 00:00:10.000\n" + "so many words in this cue " * 40 + "\n\n"
    with open(big, "w") as fh:
        fh.write("WEBVTT\n\n")
        while fh.tell() < 50 << 20:
            fh.write(cue)
    code = f"""
import resource, numpy as np
from mmbatch.encoders.speech import SidecarTranscriptStage
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stage = SidecarTranscriptStage()
n = 64
batch = {{"video_id": np.array(["v"] * n), "clip_index": np.arange(n), "status": np.array(["ok"] * n),
          "transcript_uri": np.array([{str(big)!r}] * n), "start_s": np.arange(n) * 10.0, "end_s": np.arange(n) * 10.0 + 10}}
out = stage(batch)
print(sorted(set(map(str, out["text_error"]))), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    errors, growth_mb = proc.stdout.strip().rsplit(" ", 1)
    assert errors == "['transcript sidecar huge.vtt is larger than inputs.max_sidecar_bytes (1048576)']"
    assert int(growth_mb) < 64, f"peak RSS grew {growth_mb} MB for a 50 MB sidecar"


def test_clip_settings_near_zero_are_refused():
    with pytest.raises(ConfigError, match=r"clips.window_s: Input should be greater than or equal to 0.1"):
        parse_config({"clips": {"window_s": 1e-300, "stride_s": 1e-300}, "models": {"text": {
            "task": "text_classification", "source": "x"}}})


def test_forged_container_duration_fabricates_no_clips(tmp_path):
    """A Matroska header claiming 10x the real length: chunks past the decoded end fail, with the reason."""
    import struct

    path = write_video(tmp_path / "v.mkv", seconds=4.0, width=64, height=48)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"\x44\x89")  # Segment Info > Duration, an 8-byte float (ms)
    assert raw[at + 2] == 0x88
    (ms,) = struct.unpack(">d", raw[at + 3: at + 11])
    raw[at + 3: at + 11] = struct.pack(">d", ms * 10)
    path.write_bytes(bytes(raw))
    cfg = parse_config({"clips": {"window_s": 2.0, "stride_s": 2.0, "frames_per_clip": 2},
                        "decode": {"image_size": 32, "split_clips": 4, "split_floor_kbps": None},  # header read
                        "models": {"vision": {"task": "image_zero_shot", "source": "x"}}})
    from mmbatch.decode.split import SplitStage

    ref = VideoRef("v", str(path), path.stat().st_size, "e")
    chunks = list(SplitStage(cfg)(ref_batch(ref)))
    assert len(chunks) == 5  # 20 windows planned from the forged 40.5 s
    stage = DecodeStage(cfg, isolated=False)
    rows = [r for chunk in chunks for r in stage(chunk)]
    ok = [r for r in rows if r["status"][0] == "ok"]
    assert [(float(r["start_s"][0]), float(r["end_s"][0])) for r in ok] == [(0.0, 2.0), (2.0, 4.0)]
    errors = [str(r["error"][0]) for r in rows if r["status"][0] == "error"]
    assert errors == [f"clip at {2.0 * i:.1f} s lies beyond the decoded end of the video (4.0 s; the container "
                      "claims 40.5 s)" for i in range(2, 20)]
    assert len(rows) == 20  # every planned clip has exactly one row: the video completes


def test_refused_rows_fail_per_video_and_no_secret_lands_anywhere(ray_cluster, tiny_config, tmp_path, listener, caplog):
    import datetime as dt
    import logging

    import pyarrow.parquet as pq

    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.schema import partitioning

    url, hits = listener
    write_video(tmp_path / "in" / "ok.mp4", seconds=2.0, width=64, height=48)
    write_video(tmp_path / "private" / "p.mp4", seconds=1.0, width=64, height=48)
    rows = [{"uri": "ok.mp4"},
            {"uri": f"{url}/a.mp4?X-Amz-Credential={SECRETS[1]}&X-Amz-Signature={SECRETS[0]}"
                    f"&X-Amz-Security-Token={SECRETS[2]}", "video_id": "presigned"},
            {"uri": f"s3://bob:{SECRETS[3]}@other-bucket/v.mp4", "video_id": "bucket"},
            {"uri": str(tmp_path / "private" / "p.mp4"), "video_id": "private"}]
    (tmp_path / "in" / "night.csv").write_text("uri,video_id\n" + "\n".join(f"{r['uri']},{r.get('video_id', '')}"
                                                                             for r in rows))
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        result = run_pipeline(tiny_config, str(tmp_path / "in" / "night.csv"), str(out), dt.date(2026, 11, 27))
    assert (result.inputs, result.scored, result.failed) == (4, 1, 3)
    videos = pq.read_table(out / "videos", partitioning=partitioning()).to_pandas().set_index("video_id")
    assert videos.loc[["presigned", "bucket", "private"], "error_stage"].tolist() == ["input"] * 3
    assert videos.loc["bucket", "uri"] == "s3://bob:***@other-bucket/v.mp4"
    assert videos.loc["presigned", "error"].startswith(f"refused {url}/a.mp4?X-Amz-Credential=***&X-Amz-Signature=***")
    assert hits == []
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in SECRETS:
        assert secret.encode() not in written and secret not in caplog.text, secret


def test_a_shard_with_corrupt_members_scores_the_rest(ray_cluster, tiny_config, tmp_path):
    """b's header is broken; d's claims 500 GiB in a shard of kilobytes (a truncated shard, valid
    checksum): the members before, between and after are scored, each damaged one is one failed input."""
    import datetime as dt

    import pyarrow.parquet as pq

    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.schema import partitioning

    shard = tmp_path / "in" / "shard-000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for name in ("a", "b", "c", "d", "e"):
            video = write_video(tmp_path / "src" / f"{name}.mp4", seconds=1.5, width=48, height=32, seed=ord(name))
            tar.add(video, arcname=f"{name}.mp4")
    raw = bytearray(shard.read_bytes())
    at = {name: raw.find(f"{name}.mp4".encode()) for name in ("b", "d")}
    raw[at["b"] + 148: at["b"] + 156] = b"garbage!"  # its checksum no longer holds
    d = at["d"]  # base-256 size, valid checksum
    raw[d + 124: d + 136] = bytes([0x80]) + (500 * 2**30).to_bytes(11, "big")
    raw[d + 148: d + 156] = b" " * 8
    raw[d + 148: d + 156] = b"%06o\0 " % sum(raw[d: d + 512])
    shard.write_bytes(bytes(raw))
    result = run_pipeline(tiny_config, str(shard), str(tmp_path / "out"), dt.date(2026, 11, 27))
    videos = pq.read_table(tmp_path / "out" / "videos", partitioning=partitioning()).to_pandas().set_index("video_id")
    corrupt = sorted((int(v.rsplit("-", 1)[1]), v) for v in videos.index if "corrupt-at-" in v)
    assert len(corrupt) == 2 and corrupt[0][0] <= at["b"] < corrupt[1][0] <= at["d"]  # from each (extended) header
    assert videos["status"].to_dict() == {**{f"shard-000/{n}": "ok" for n in "ace"}, **{v: "error" for _, v in corrupt}}
    assert (result.inputs, result.scored, result.failed) == (5, 3, 2)
