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

from mmbatch.errors import ExitCode
from mmbatch.pipeline.run import run_pipeline
from mmbatch.schema import partitioning
from mmbatch.synth import write_video, write_vtt

DAY = dt.date(2026, 11, 27)
VIDEOS = ("a", "b", "c")


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


# Resets and slow answers share a night (a slow answer still succeeds, so no request fails more
# often than with resets alone); a truncated body is retried by another path (s3fs's reads): its own night.
FAULTS = {"truncate": {"truncate": 0.1}, "reset-slow": {"reset": 0.1, "slow": 0.1}}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_night_through_a_faulty_store_commits_exactly_once(ray_cluster, tiny_config, store, fault):
    """The whole job through the proxy, each fault on 10% of requests. Every store path of a night
    is on the way: discovery, sidecars, spooling each video, staging clip files, the commit, the
    state table, the report."""
    from mmbatch.cli.score import finish

    endpoint, fs = store
    plan = FaultPlan(**FAULTS[fault], slow_s=0.3, seed=7)
    with fault_proxy(endpoint, plan) as proxy:
        config = tiny_config.model_copy(update={"storage_options": storage_options(proxy)})
        result = run_pipeline(config, "s3://in-bucket/night/", f"s3://out-bucket/{fault}", DAY)
    assert min(plan.counts[f] for f in FAULTS[fault]) > 0, plan.counts  # the faults happened
    assert result.inputs == len(VIDEOS) == result.scored + result.failed + result.skipped
    assert (result.scored, result.failed) == (len(VIDEOS), 0)  # retried through
    args = type("Args", (), {"max_failed_fraction": None, "demo": False})()
    assert finish(args, config, result, DAY) == ExitCode.OK  # so the exit code says committed, and is true
    read = {t: pq.read_table(f"out-bucket/{fault}/{t}", filesystem=fs, partitioning=partitioning()).to_pandas()
            for t in ("clips", "videos")}  # read directly, not through the proxy
    assert sorted(read["videos"]["video_id"]) == list(VIDEOS) and (read["videos"]["status"] == "ok").all()
    clips = read["clips"]
    assert clips["clip_id"].is_unique and len(clips) == result.clips == sum(read["videos"]["n_clips"])
    assert set(clips["video_id"]) == set(VIDEOS)
