"""Nights on a multi-node cluster (tests/cluster.py): a 0-CPU head, two CPU-type nodes (one with a
disk of its own), a GPU-type node, and a moto S3 endpoint every node reaches. Jobs attach through
RAY_ADDRESS as `ray job submit` jobs do; the nodes start without the driver's credentials, S3
endpoint or model cache, so what the job needs has to travel with it.

Lean on purpose (1-CPU nodes, short videos): each night here takes tens of seconds on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from cluster import LocalCluster, can_isolate_disks
from s3server import moto_server

from mmbatch.schema import partitioning
from mmbatch.synth import write_video

REPO = Path(__file__).resolve().parent.parent
DAY = dt.date(2026, 11, 27)
KEY, SECRET = "AKIAMMBATCHCLUSTER", "s3cr3t-that-must-never-rest"
DECODE, ENCODERS = "MapWorker(MapBatches(decode))", "MapWorker(MapBatches(encoders))"
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
    """Six 6 s videos (two clips each at the tiny preset's 5 s windows), locally and in the bucket;
    twelve under night/in-long/ for a night long enough to lose a node in."""
    root = tmp_path_factory.mktemp("cluster-data")
    for i in range(6):
        write_video(root / "videos" / f"v{i}.mp4", seconds=6.0, seed=i, width=64, height=48)
    s3[1].put(str(root / "videos") + "/", "night/in/", recursive=True)
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


def night_config(tmp_path: Path, **run) -> Path:
    """tiny.yaml with node types: decode on CPU-type nodes, the encoders on the GPU-type node.
    No credentials or endpoint in it: the endpoint comes from AWS_ENDPOINT_URL, the credentials
    from the variables run.worker_env names."""
    cfg = yaml.safe_load((REPO / "pipelines" / "tiny.yaml").read_text())
    cfg["storage_options"] = {"client_kwargs": {"region_name": "us-east-1"}}
    cfg["decode"]["pool"] = {"num_cpus": 0.5, "concurrency": [1, 2], "batch_size": 1, "resources": {"cpu_node": 0.001}}
    cfg["encoders"]["pool"] = {"num_cpus": 0.5, "num_gpus": 1, "concurrency": [1, 1], "batch_size": 4,
                               "resources": {"gpu_node": 0.001}}
    cfg["output"] = {"write_cpus": 0.1, "target_file_mb": 0.02}  # small files: progress shows mid-night
    cfg["run"] = {"ray_data_reservation": False, "worker_env": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], **run}
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def job(cluster, s3, config: Path, *, input_uri="s3://night/in/", output_uri="s3://night/out/", env=None,
        wait: bool = True, **popen):
    env = {**os.environ, **cluster.job_env(), "AWS_ENDPOINT_URL": s3[0], "AWS_ACCESS_KEY_ID": KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET, **(env or {})}
    cmd = [sys.executable, str(REPO / "jobs" / "score_videos.py"), "--config", str(config), "--input", input_uri,
           "--output", output_uri, "--run-date", DAY.isoformat(), "--log-level", "WARNING"]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def clips_at(fs, root: str):
    return pq.read_table(f"{root}/clips", filesystem=fs, partitioning=partitioning()).to_pandas()


def test_local_folders_refused_when_a_node_has_its_own_disk(cluster, s3, data, tmp_path):
    out = data / "scores"
    r = job(cluster, s3, night_config(tmp_path), input_uri=str(data / "videos"), output_uri=str(out))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert "not all of them see the night's local folders" in r.stderr
    assert f"the input {data / 'videos'} is not the same on node" in r.stderr and "missing there" in r.stderr
    assert "the output" in r.stderr and "Use object storage (s3://...)" in r.stderr
    # Refused before any video was read: nothing staged, no clips, the night's lease given back.
    assert not list(out.glob("clips/**/*.parquet")) and not list(out.glob("_staging/**/*.parquet"))
    assert not list(out.glob("_locks/*.json"))


def test_s3_night_on_node_types_with_named_credentials(cluster, s3, tmp_path):
    fs = s3[1]
    before = cluster.actors()
    r = job(cluster, s3, night_config(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "6 videos: 6 scored, 0 failed, 0 skipped; 12 clips" in r.stdout
    clips = clips_at(fs, "night/out")
    assert len(clips) == 12 and clips["clip_id"].is_unique and (clips["status"] == "ok").all()
    # Decode only on CPU-type nodes, the encoders only on the GPU-type node.
    nodes = cluster.node_ids()
    actors = cluster.new_actors(before)
    decode_nodes = {a["node"] for a in actors if a["cls"] == DECODE}
    encoder_nodes = {a["node"] for a in actors if a["cls"] == ENCODERS}
    assert decode_nodes and all("cpu_node" in nodes[n] for n in decode_nodes)
    assert encoder_nodes and all("gpu_node" in nodes[n] for n in encoder_nodes)
    # The credentials reached the workers (they wrote the files) and never rest anywhere we write.
    for path in fs.find("night/out"):
        assert SECRET.encode() not in fs.cat(path), path
    assert SECRET not in r.stdout + r.stderr


def test_workers_without_credentials_are_an_output_error(cluster, s3, tmp_path):
    """The driver has the credentials but the config does not send them: the workers cannot write,
    and the night says so (exit 2: a rerun changes nothing), not "unexpected failure"."""
    r = job(cluster, s3, night_config(tmp_path, worker_env=[]), input_uri="s3://night/one/",
            output_uri="s3://night/out-nocreds/")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert "the workers cannot write clip files under s3://night/out-nocreds/" in r.stderr
    assert "run.worker_env" in r.stderr and "unexpected failure" not in r.stderr


def test_unplaceable_gpu_pool_fails_after_placement_timeout(cluster, s3, tmp_path):
    cfg = night_config(tmp_path, placement_timeout_s=5)
    raw = yaml.safe_load(cfg.read_text())
    raw["encoders"]["pool"]["num_gpus"] = 2  # the cluster has one GPU
    cfg.write_text(yaml.safe_dump(raw))
    t0 = time.time()
    r = job(cluster, s3, cfg, input_uri="s3://night/one/", output_uri="s3://night/out-unplaceable/")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
    assert "could not be placed within run.placement_timeout_s = 5 s" in r.stderr and "2 GPU" in r.stderr
    assert time.time() - t0 < 180
    assert not s3[1].glob("night/out-unplaceable/_locks/*.json")  # the lease was given back


def test_losing_the_encoder_node_mid_night_commits_exactly_once(cluster, s3, data, tmp_path):
    """The GPU-type node dies once the first clips are written (most of the night still to encode);
    a replacement joins, as an autoscaler would start one, and the encoder actor restarts there."""
    fs = s3[1]
    before = cluster.actors()
    cfg = night_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["output"]["target_file_mb"] = 0.001  # a file every few clips: the first shows early in the night
    cfg.write_text(yaml.safe_dump(raw))
    proc = job(cluster, s3, cfg, input_uri="s3://night/in-long/", output_uri="s3://night/out-lost/", wait=False)
    try:
        deadline = time.time() + 300
        while not fs.glob("night/out-lost/_staging/*/parts/*.parquet"):  # encoders are producing
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.5)
            fs.invalidate_cache()
        lost = cluster.gpu
        cluster.kill_node(lost)  # the encoder actor's node is lost mid-night
        cluster.gpu = cluster.add_node(1, num_gpus=1, resources={"gpu_node": 1000}, wait=False)  # its replacement
        log = proc.communicate(timeout=600)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-4000:]
    assert "12 videos: 12 scored, 0 failed, 0 skipped; 24 clips" in log
    clips = clips_at(fs, "night/out-lost")
    assert len(clips) == 24 and clips["clip_id"].is_unique
    # The encoder actor came back on the replacement node and finished the night there.
    nodes = cluster.node_ids()
    ran_on = {cluster.node_of(a["node"], nodes) for a in cluster.new_actors(before) if a["cls"] == ENCODERS}
    assert ran_on == {cluster.gpu.name}, (ran_on, lost.name)
