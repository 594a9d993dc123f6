"""Nights on a multi-node cluster (tests/cluster.py): a 0-CPU head, two CPU-type nodes (one with a
disk of its own), a GPU-type node, and a moto S3 endpoint every node reaches. Jobs attach through
RAY_ADDRESS as `ray job submit` jobs do; the nodes start without the driver's credentials, S3
endpoint or model cache, so what the job needs has to travel with it.

Lean on purpose (1-CPU nodes, short videos): each night here takes tens of seconds on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from cluster import (
    DECODE,
    ENCODERS,
    LocalCluster,
    can_isolate_disks,
    lose_nodes_mid_night,
    node_typed_config,
    score_job,
)
from s3server import moto_server

from mmbatch.schema import partitioning
from mmbatch.synth import write_video

DAY = dt.date(2026, 11, 27)
KEY, SECRET = "AKIAMMBATCHCLUSTER", "s3cr3t-that-must-never-rest"
pytestmark = pytest.mark.skipif(can_isolate_disks() is not None, reason=f"no node with a disk of its own: "
                                                                          f"{can_isolate_disks()}")


@pytest.fixture(scope="module")
def s3():
    import boto3
    import s3fs

    with moto_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name="us-east-1").create_bucket(Bucket="night")
        fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
        yield endpoint, fs


@pytest.fixture(scope="module")
def data(tmp_path_factory, s3):
    """Six 6 s videos (two clips each at the tiny preset's 5 s windows), locally; in the bucket,
    twelve under night/in-long/ (a night long enough to lose nodes in) and one under night/one/."""
    root = tmp_path_factory.mktemp("cluster-data")
    for i in range(6):
        write_video(root / "videos" / f"v{i}.mp4", seconds=6.0, seed=i, width=64, height=48)
    for i in range(12):
        s3[1].put(str(root / "videos" / f"v{i % 6}.mp4"), f"night/in-long/v{i:02d}.mp4")
    s3[1].put(str(root / "videos" / "v0.mp4"), "night/one/v0.mp4")
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, data):
    logs = tmp_path_factory.mktemp("cluster-logs")
    with LocalCluster(logs) as c:
        c.cpu = [c.add_node(1, resources={"cpu_node": 1000}),
                 c.add_node(1, resources={"cpu_node": 1000}, private=data)]  # this one cannot see `data`
        c.gpu = c.add_node(1, num_gpus=1, resources={"gpu_node": 1000})
        yield c


def job(cluster, s3, config: Path, *, input_uri: str, output_uri: str, wait: bool = True):
    creds = {"AWS_ENDPOINT_URL": s3[0], "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    return score_job(cluster, config, input_uri=input_uri, output_uri=output_uri, run_date=DAY.isoformat(),
                     env=creds, wait=wait)


def clips_at(fs, root: str):
    return pq.read_table(f"{root}/clips", filesystem=fs, partitioning=partitioning()).to_pandas()


def test_local_folders_refused_when_a_node_has_its_own_disk(cluster, s3, data, tmp_path):
    out = data / "scores"
    r = job(cluster, s3, node_typed_config(tmp_path), input_uri=str(data / "videos"), output_uri=str(out))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert "not all of them see the night's local folders" in r.stderr
    assert f"the input {data / 'videos'} is not the same on node" in r.stderr and "missing there" in r.stderr
    assert "the output" in r.stderr and "Use object storage (s3://...)" in r.stderr
    # Refused before any video was read: nothing staged, no clips, the night's lease given back.
    assert not list(out.glob("clips/**/*.parquet")) and not list(out.glob("_staging/**/*.parquet"))
    assert not list(out.glob("_locks/*.json"))


def test_workers_without_credentials_are_an_output_error(cluster, s3, tmp_path):
    """The driver has the credentials but the config does not send them: the workers cannot write,
    and the night says so (exit 2: a rerun changes nothing), not "unexpected failure"."""
    r = job(cluster, s3, node_typed_config(tmp_path, worker_env=[]), input_uri="s3://night/one/",
            output_uri="s3://night/out-nocreds/")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert "the workers cannot write clip files under s3://night/out-nocreds/" in r.stderr
    assert "run.worker_env" in r.stderr and "unexpected failure" not in r.stderr
    # Found by each node's probe write before any model loaded: nothing scored, staged or left locked.
    assert "NoCredentialsError" in r.stderr and "nothing was scored" in r.stderr
    assert not s3[1].glob("night/out-nocreds/_staging/**") and not s3[1].glob("night/out-nocreds/_locks/*.json")


def test_unplaceable_gpu_pool_fails_after_placement_timeout(cluster, s3, tmp_path):
    cfg = node_typed_config(tmp_path, placement_timeout_s=5)
    raw = yaml.safe_load(cfg.read_text())
    raw["encoders"]["pool"]["num_gpus"] = 2  # the cluster has one GPU
    cfg.write_text(yaml.safe_dump(raw))
    t0 = time.time()
    r = job(cluster, s3, cfg, input_uri="s3://night/one/", output_uri="s3://night/out-unplaceable/")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
    assert "could not be placed within run.placement_timeout_s = 5 s" in r.stderr and "2 GPU" in r.stderr
    assert time.time() - t0 < 180
    assert not s3[1].glob("night/out-unplaceable/_locks/*.json")  # the lease was given back


def test_s3_night_on_node_types_survives_losing_a_decode_node_and_the_gpu_node(cluster, s3, tmp_path):
    """A 3-node night on S3, credentials only as run.worker_env names them. The one decode actor
    opens a video a second; its CPU-type node is lost a few seconds after it comes up (most videos
    still to decode), and the GPU-type node (the encoders' actor, which runs fusion too) once the
    first clips are staged or decode is back up on the other CPU node, whichever comes first (both
    with most videos still to decode, so the encoders have work after their loss). The other CPU
    node has room for decode; a GPU replacement joins, as an autoscaler would start one. Runs last:
    it takes a CPU node away. (Per-model pools, each with its own actor, and fusion's:
    benchmarks/cluster_night.py.)"""
    fs = s3[1]
    before = cluster.actors()
    cfg = node_typed_config(tmp_path, file_mb=0.001)  # a file every few clips: the first shows early
    raw = yaml.safe_load(cfg.read_text())
    raw["decode"]["backend"] = "mmbatch.decode.faults:SlowVideo"
    raw["decode"]["pool"]["concurrency"] = [1, 1]  # one decode actor: its node is the one lost
    cfg.write_text(yaml.safe_dump(raw))
    proc = job(cluster, s3, cfg, input_uri="s3://night/in-long/", output_uri="s3://night/out/", wait=False)
    try:
        lost, _, _ = lose_nodes_mid_night(cluster, before, fs, "night/out", proc, decode_node=True, gpu_node=True)
        assert len(lost) == 2, [n.name for n in lost]  # decode ran on one CPU-type node, then the GPU node
        log = proc.communicate(timeout=600)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-4000:]
    assert "12 videos: 12 scored, 0 failed, 0 skipped; 24 clips" in log
    clips = clips_at(fs, "night/out")
    assert len(clips) == 24 and clips["clip_id"].is_unique and (clips["status"] == "ok").all()
    # The lost actors restarted elsewhere and finished the night there: decode on the other
    # CPU-type node, the encoders on the GPU-type replacement; never on another node type.
    last = cluster.actor_nodes(before)
    assert last[DECODE] == {n.name for n in cluster.cpu} - {lost[0].name}, last
    assert last[ENCODERS] == {cluster.gpu.name}, last
    # The credentials reached the workers (they wrote the files) and never rest anywhere we write.
    for path in fs.find("night/out"):
        assert SECRET.encode() not in fs.cat(path), path
    assert SECRET not in log
