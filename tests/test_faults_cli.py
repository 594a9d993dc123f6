"""Faults as operators meet them, through the job itself (own subprocess, own local Ray): inputs that
are not regular files or not UTF-8, a stray file in `_runs/`, a state update that fails after the
commit, and SIGTERM mid-night. Each ends in the documented exit code with its cause named."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

REPO = Path(__file__).resolve().parent.parent
JOB = str(REPO / "jobs" / "score_videos.py")
TINY = str(REPO / "pipelines" / "tiny.yaml")


def job(*args: str) -> list[str]:
    return [sys.executable, JOB, "--config", TINY, "--num-cpus", "2", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.pop("RAY_ADDRESS", None)
    return e


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(job(*args), capture_output=True, text=True, timeout=600, env=env(), cwd=str(REPO))


def videos(out: Path, day: str) -> pd.DataFrame:
    return pd.read_parquet(out / "videos" / f"run_date={day}").set_index("video_id")


def test_odd_inputs_a_stray_run_record_and_a_failed_state_update(ray_cluster, tmp_path, caplog):
    """Through the job: a dry run, then a night whose state update fails after its commit. The next
    night, which has nothing to score, runs in this process on the session's Ray."""
    from mmbatch.config import load_config
    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.synth import write_video

    src = tmp_path / "in [x]"  # read as a folder, not a pattern
    write_video(src / "good.mp4", seconds=1.0, width=32, height=32)
    os.mkfifo(src / "pipe.mp4")
    os.symlink(src / "gone.mp4", src / "dangling.mp4")
    shutil.copy(src / "good.mp4", os.fsencode(src) + b"/bad\xff.mp4")
    out = tmp_path / "out"
    io = ("--input", str(src), "--output", str(out), "--max-failed-fraction", "1")

    r = run(*io, "--run-date", "2026-11-27", "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 inputs: 1 to score, 0 resumed, 0 skipped, 3 refused or unreadable" in r.stdout
    assert "refused pipe: not a regular file" in r.stdout and "refused bad\\xff:" in r.stdout

    out.mkdir(exist_ok=True)
    (out / "state").write_text("not a folder")  # the state update after the commit fails
    r = run(*io, "--run-date", "2026-11-27")
    assert r.returncode == 3, r.stderr[-3000:]  # committed: never 1, which a scheduler would retry
    assert "committed, but the state table was not updated" in r.stderr
    v = videos(out, "2026-11-27")
    assert v.loc["good", "status"] == "ok" and v.loc["bad\\xff", "error_stage"] == "input"
    assert v.loc["pipe", "error"] == "not a regular file (a FIFO, socket or device); nothing was read"
    assert v.loc["dangling", "error"].startswith("a symbolic link that leads nowhere")

    (out / "state").unlink()
    record = next((out / "_runs").glob("2026-11-27_*.json"))
    shutil.copy(record, out / "_runs" / "latest.json")  # an operator's convenience copy
    config = load_config(TINY)
    config = config.model_copy(update={"run": config.run.model_copy(update={"max_failed_fraction": 1.0})})
    result = run_pipeline(config, str(src), str(out), dt.date(2026, 11, 28))
    assert (result.inputs, result.scored, result.failed, result.skipped) == (4, 0, 3, 1)  # good: not scored twice
    assert result.exit_code == 0
    assert "latest.json: not a run record" in caplog.text


def test_sigterm_mid_night_releases_the_lease_exits_143_and_leaves_no_process(tmp_path):
    from mmbatch.synth import write_video

    for i in range(3):
        write_video(tmp_path / "in" / f"v{i}.mp4", seconds=8.0, width=64, height=64, seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen(job("--input", str(tmp_path / "in"), "--output", str(out), "--run-date", "2026-11-27"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=str(REPO))
    deadline = time.monotonic() + 300
    while not list(out.glob("_staging/*/inputs-*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)  # the graph is running
    started = psutil.Process(proc.pid).children(recursive=True)  # Ray's processes, started by the driver
    proc.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert "error: terminated (SIGTERM); nothing was committed" in stderr
    assert not (out / "_locks" / "run_date=2026-11-27.json").exists()  # released, a retry is not refused
    assert not list(out.glob("_runs/*.json"))
    gone, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, [p.info if hasattr(p, "info") else p for p in alive]


def test_a_run_date_far_in_the_future_needs_saying_so(tmp_path):
    """A mistyped 2100-01-01 would stop every real night after it from skipping what it scored."""
    from mmbatch.synth import write_video

    write_video(tmp_path / "in" / "v.mp4", seconds=1.0, width=32, height=32)
    io = ("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--run-date", "2100-01-01")
    r = run(*io, "--dry-run")
    assert r.returncode == 2 and "--run-date 2100-01-01 is more than a day after today" in r.stderr
    assert "--allow-future-date" in r.stderr
    r = run(*io, "--dry-run", "--allow-future-date")
    assert r.returncode == 0 and "1 to score" in r.stdout, r.stderr[-2000:]


def test_each_mistake_exits_with_its_code(tmp_path, capsys):
    """The one rule: a mistake, or an input or output that needs a person, exits 2 naming it; what a
    retry may mend exits 1. Checked without Ray (--dry-run reaches every check before scoring)."""
    import json

    from mmbatch.cli import score
    from mmbatch.synth import write_video

    write_video(tmp_path / "in" / "v.mp4", seconds=1.0, width=32, height=32)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "twice.yaml").write_text(Path(TINY).read_text() + "\nrun:\n  lock_ttl_s: 60\nrun:\n  lock_ttl_s: 90\n")
    (tmp_path / "typo.yaml").write_text(Path(TINY).read_text().replace("clips:\n", "clips:\n  windows_s: 3\n", 1))
    (tmp_path / "delta.yaml").write_text(Path(TINY).read_text().replace("output:\n", "output:\n  format: delta\n", 1))
    parquet_out = tmp_path / "parquet-out"
    (parquet_out / "clips" / "run_date=2026-11-26").mkdir(parents=True)
    (parquet_out / "clips" / "run_date=2026-11-26" / "part-0.parquet").write_bytes(b"")
    held = tmp_path / "held"
    (held / "_locks").mkdir(parents=True)
    (held / "_locks" / "run_date=2026-11-27.json").write_text(json.dumps(
        {"holder": "other", "host": "elsewhere", "pid": 1, "expires_at": time.time() + 600}))
    cases = {  # what went wrong: (argv changes, exit code, what the error line names)
        "a file where the output folder belongs": ({"--output": str(tmp_path / "afile" / "out")}, 2, "afile"),
        "an input that does not exist": ({"--input": str(tmp_path / "nope")}, 2, "nope"),
        "a key given twice": ({"--config": str(tmp_path / "twice.yaml")}, 2, "'run' is given twice"),
        "a mistyped key": ({"--config": str(tmp_path / "typo.yaml")}, 2, "clips.windows_s: unknown key"),
        "another format's tables": ({"--config": str(tmp_path / "delta.yaml"), "--output": str(parquet_out)}, 2,
                                    "holds parquet tables, but output.format is delta"),
        "the night held by another run": ({"--output": str(held)}, 1, "another run holds"),
    }
    before = signal.getsignal(signal.SIGTERM)  # main() takes SIGTERM over; this process gets it back
    try:
        for what, (changes, code, named) in cases.items():
            args = {"--config": TINY, "--input": str(tmp_path / "in"), "--output": str(tmp_path / "out"),
                    "--run-date": "2026-11-27", **changes}
            got = score.main([x for kv in args.items() for x in kv] + ["--dry-run"])
            err = capsys.readouterr().err
            assert (got, named in err) == (code, True), (what, err)
    finally:
        signal.signal(signal.SIGTERM, before)
