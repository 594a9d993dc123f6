"""Nightly operations: model changes rescore, a killed driver resumes, `ray job submit` works."""

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from s3server import free_port, moto_server, storage_options

from mmbatch.pipeline.run import run_pipeline
from mmbatch.schema import partitioning
from mmbatch.synth import write_video

REPO = Path(__file__).resolve().parent.parent
DAY = dt.date(2026, 11, 27)


def read(root, table):
    return pq.read_table(Path(root) / table, partitioning=partitioning()).to_pandas()


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    for i in range(12):
        write_video(root / f"v{i:02d}.mp4", seconds=2.0, seed=i, width=64, height=48)
    return root


def _kill_session(pid: int) -> None:
    """Kill a process group we started, plus anything of its session that moved groups."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        p, sid = map(int, line.split())
        if sid == pid:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_changed_models_rescore_everything(ray_cluster, tiny_config, many_videos, tmp_path):
    first = run_pipeline(tiny_config, str(many_videos / "v00.mp4"), str(tmp_path), DAY)
    changed = tiny_config.model_copy(update={"clips": tiny_config.clips.model_copy(update={"frames_per_clip": 2})})
    nxt = run_pipeline(changed, str(many_videos / "v00.mp4"), str(tmp_path), DAY + dt.timedelta(days=1))
    # The same models again, as an attached night whose encoders' pool could never be placed (2 GPUs; the
    # session's Ray has 1): nothing to score, so no pool starts and nothing waits for room.
    enc = changed.encoders
    unplaceable = changed.model_copy(update={
        "encoders": enc.model_copy(update={"pool": enc.pool.model_copy(update={"num_gpus": 2})}),
        "run": changed.run.model_copy(update={"placement_timeout_s": 1})})
    same = run_pipeline(unplaceable, str(many_videos / "v00.mp4"), str(tmp_path), DAY + dt.timedelta(days=2),
                        strict_resources=False)
    assert (first.scored, nxt.scored, nxt.skipped, same.skipped, same.exit_code) == (1, 1, 0, 1, 0)
    assert first.manifest["model_fingerprint"] != nxt.manifest["model_fingerprint"]
    assert same.manifest["model_fingerprint"] == nxt.manifest["model_fingerprint"]  # pools are operational


def test_killed_driver_resumes_exactly_once(ray_cluster, tiny_config, many_videos, tmp_path):
    n_videos = 6
    cfg = yaml.safe_load((REPO / "pipelines" / "tiny.yaml").read_text())
    cfg["output"] = {"target_file_mb": 0.0001}  # a file per block: videos complete one by one
    for name in ("vision", "speech", "audio", "text"):  # no stage waits to fill a batch:
        cfg["models"][name]["pool"]["batch_size"] = 1   # videos reach the writer one by one
    cfg["fusion"]["pool"]["batch_size"] = 1
    cfg["encoders"]["pool"]["batch_size"] = 1  # tiny.yaml colocates the models in one actor
    cfg["decode"]["pool"].update(concurrency=[1, 1], batch_size=1)  # videos arrive one by one, a second each
    cfg["decode"]["backend"] = "mmbatch.decode.faults:SlowVideo"  # (a block each): the kill lands mid-run
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(n_videos):  # the kill comes at the first staged video: half of them are plenty to come
        shutil.copy(many_videos / f"v{i:02d}.mp4", src)
    # Attached to the session's Ray, as a `ray job submit` driver to its cluster: killing the driver
    # ends the night's actors, the cluster stays (and the resume below runs on it).
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    job_log = tmp_path / "job.log"
    with job_log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "score_videos.py"), "--config", str(cfg_path),
                                 "--input", str(src), "--output", str(out), "--run-date", DAY.isoformat()],
                                env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    staging = out / "_staging"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(staging.rglob("records-*.parquet"))) < 1:
            assert proc.poll() is None, f"the job ended before it could be killed: {job_log.read_text()[-3000:]}"
            time.sleep(0.05)
        # While it runs, a second run of the same output and date is refused, naming the first.
        from mmbatch.config import load_config
        from mmbatch.night.lock import LockedError

        with pytest.raises(LockedError, match=rf"another run holds run date {DAY} .* \(pid {proc.pid}\)"):
            run_pipeline(load_config(cfg_path), str(src), str(out), DAY)
    finally:
        _kill_session(proc.pid)
        proc.wait(timeout=30)
    assert not (out / "_runs").exists(), "killed before the commit"
    done_before = len(list(staging.rglob("records-*.parquet")))
    assert 1 <= done_before < n_videos

    result = run_pipeline(load_config(cfg_path), str(src), str(out), DAY)
    assert result.manifest["resumed_from_ledger"] == done_before
    videos, clips = read(out, "videos"), read(out, "clips")
    assert sorted(videos["video_id"]) == [f"v{i:02d}" for i in range(n_videos)] and (videos["status"] == "ok").all()
    assert clips["clip_id"].is_unique and len(clips) == n_videos
    assert (result.inputs, result.scored) == (n_videos, n_videos)


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head as our own subprocess (`ray start --head --block`), stopped by its PID."""
    port, dash = free_port(), free_port()
    temp = Path("/tmp") / f"rayhead-{port}"  # short: Ray's unix socket paths have a length limit
    # Every port free and explicit: the session's local Ray already holds the defaults (52365…).
    ports = {f"--{name}": str(free_port()) for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port")}
    cmd = ["ray", "start", "--head", "--block", "--port", str(port), "--dashboard-port", str(dash),
           "--dashboard-host", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "1", "--include-dashboard", "true",
           "--temp-dir", str(temp), "--disable-usage-stats", *[x for kv in ports.items() for x in kv]]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except urllib.error.HTTPError:  # 401 without a token: the server is up
                break
            except Exception:
                assert proc.poll() is None, "ray head exited during start-up"
                time.sleep(1)
        else:
            pytest.fail("ray head did not come up")
        # The dashboard answers before its job agent is ready ("No available agent to submit
        # job"): wait until a trivial job goes through.
        env["RAY_AUTH_MODE"] = "token"
        while time.time() < deadline + 60:
            ready = subprocess.run(["ray", "job", "submit", "--address", address, "--", "true"], env=env,
                                   capture_output=True, text=True, timeout=120)
            if ready.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"ray head never accepted a job: {ready.stderr[-1000:]}")
        yield address
    finally:
        # Killed with its whole session: Ray 2.60's graceful stop of a --block head takes past a minute.
        _kill_session(proc.pid)
        proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_against_s3(ray_head, many_videos, tmp_path):
    import s3fs

    with moto_server() as endpoint:
        opts = storage_options(endpoint)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="nightly")
        fs = s3fs.S3FileSystem(**opts)
        for name in ("v00.mp4", "v01.mp4"):
            fs.put(str(many_videos / name), f"nightly/in/{name}")
        cfg = yaml.safe_load((REPO / "pipelines" / "tiny.yaml").read_text())
        cfg["storage_options"] = opts
        cfg_path = tmp_path / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        env.pop("RAY_ADDRESS", None)
        r = subprocess.run(["ray", "job", "submit", "--address", ray_head, "--working-dir", str(REPO), "--",
                            "python", "jobs/score_videos.py", "--config", str(cfg_path), "--input", "s3://nightly/in/",
                            "--output", "s3://nightly/out/", "--run-date", DAY.isoformat()],
                           env=env, capture_output=True, text=True, timeout=600, cwd=str(REPO))
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        assert "2 videos: 2 scored, 0 failed, 0 skipped; 2 clips" in r.stdout
        runs = fs.glob("nightly/out/_runs/*.json")
        assert len(runs) == 1 and json.loads(fs.cat(runs[0]))["counts"]["scored"] == 2
        clips = pq.read_table("nightly/out/clips", filesystem=fs, partitioning=partitioning())
        assert clips.num_rows == 2


def test_nightly_wrapper_reads_exit_codes_and_retries_only_what_is_worth_it(ray_head, tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)

    def nightly(*job_args):
        return subprocess.run([sys.executable, str(REPO / "jobs" / "nightly.py"), "--address", ray_head, "--retries",
                               "1", "--backoff-s", "0", "--poll-s", "1", "--", "--config", "pipelines/tiny.yaml",
                               *job_args], env=env, capture_output=True, text=True, timeout=600, cwd=str(REPO))

    # A wrong input cannot be fixed by retrying: exit 2 after one attempt.
    r = nightly("--input", str(tmp_path / "does-not-exist"), "--output", str(tmp_path / "out"), "--run-date", "2026-11-27")
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-2000:]
    assert "attempt 1: FAILED, exit code 2" in r.stdout and "attempt 2" not in r.stdout
    assert "input not found" in r.stdout and "mmbatch-2026-11-27-1" in r.stdout
    # The night held by another run (a live lease elsewhere) is worth retrying: exit 1, retried once.
    write_video(tmp_path / "in" / "v.mp4", seconds=1.0, width=32, height=32)
    locks = tmp_path / "out2" / "_locks"
    locks.mkdir(parents=True)
    (locks / "run_date=2026-11-28.json").write_text(json.dumps(
        {"holder": "2026-11-28_other", "host": "elsewhere", "pid": 1, "expires_at": time.time() + 3600}))
    r = nightly("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out2"), "--run-date", "2026-11-28")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "attempt 1: FAILED, exit code 1" in r.stdout and "attempt 2: FAILED, exit code 1" in r.stdout
    assert "another run holds run date 2026-11-28" in r.stdout
