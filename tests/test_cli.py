"""The job script as users run it: --help, bad input, and the demo (own subprocess, own Ray)."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from mmbatch.schema import partitioning

REPO = Path(__file__).resolve().parent.parent
JOB = str(REPO / "jobs" / "score_videos.py")


def run(*args, env=None, timeout=600):
    e = {**os.environ, **(env or {})}
    e.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, JOB, *args], capture_output=True, text=True, timeout=timeout, env=e,
                          cwd=env.get("CWD", str(REPO)) if env else str(REPO))


def test_help_is_instant_and_imports_nothing_heavy():
    code = ("import runpy, sys; sys.argv = ['score_videos.py', '--help']\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit: pass\n"
            "heavy = sorted(m for m in ('torch', 'ray', 'transformers', 'decord', 'av') if m in sys.modules)\n"
            "print('HEAVY', heavy)" % JOB)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--run-date" in out.stdout and "HEAVY []" in out.stdout


def test_missing_arguments_and_bad_date():
    r = run()
    assert r.returncode == 2 and "--input and --output are required" in r.stderr
    r = run("--input", "x", "--output", "y", "--run-date", "2026-13-01")
    assert r.returncode == 2 and "--run-date" in r.stderr


def test_bad_config_fails_fast_naming_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  text: {task: text_classification, source: tiny:roberta-sentiment, batchsize: 4}\n")
    r = run("--config", str(cfg), "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "models.text.batchsize: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_input_and_output_errors_come_before_ray_starts(tmp_path):
    """Wrong input and a file where the output folder belongs (exit 2 each: not worth retrying): one
    error line, and no Ray session was ever started."""
    r = run("--config", str(REPO / "pipelines" / "tiny.yaml"), "--input", str(tmp_path / "nope"),
            "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and f"error: input not found: {tmp_path / 'nope'}" in r.stderr
    assert "Started a local Ray instance" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    from mmbatch.synth import write_video

    write_video(tmp_path / "in" / "v.mp4", seconds=1.0, width=32, height=32)
    (tmp_path / "file").write_text("x")
    r = run("--config", str(REPO / "pipelines" / "tiny.yaml"), "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "file" / "out"))
    assert r.returncode == 2 and f"error: cannot write to the output {tmp_path / 'file' / 'out'}" in r.stderr
    assert "Started a local Ray instance" not in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_dry_run_says_what_would_happen_and_starts_nothing(tmp_path):
    from mmbatch.synth import write_video

    write_video(tmp_path / "in" / "a.mp4", seconds=1.0, width=32, height=32)
    write_video(tmp_path / "in" / "b.mp4", seconds=1.0, width=32, height=32)
    (tmp_path / "in" / "list.csv").write_text("uri\na.mp4\nb.mp4\n/etc/hostname.mp4\n")
    r = run("--config", str(REPO / "pipelines" / "tiny.yaml"), "--input", str(tmp_path / "in" / "list.csv"),
            "--output", str(tmp_path / "o"), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dry run: 3 inputs: 2 to score, 0 resumed, 0 skipped, 1 refused or unreadable" in r.stdout
    assert "refused /etc/hostname.mp4: outside the allowed input roots" in r.stdout
    assert "Started a local Ray instance" not in r.stderr + r.stdout
    assert not (tmp_path / "o" / "_runs").exists() and not list((tmp_path / "o").rglob("*.parquet"))


def test_demo_runs_and_reads_sentiment(tmp_path):
    r = run("--demo", "--run-date", "2026-11-27", env={"MMBATCH_DEMO_DIR": str(tmp_path / "demo")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 videos: 3 scored, 0 failed, 0 skipped; 7 clips" in r.stdout
    clips = pq.read_table(tmp_path / "demo" / "scores" / "clips", partitioning=partitioning()).to_pandas()
    by_text = {row.transcript: row for row in clips.itertuples()}
    happy = by_text["I'm really happy with the new service, it works wonderfully."]
    sad = by_text["But the delivery was late again and I'm very disappointed."]
    assert happy.text_valence > 0.3 and happy.sentiment == "positive"
    assert sad.text_valence < -0.3 and sad.sentiment == "negative"
    assert "customer_call" in r.stdout and "fused positive" in r.stdout
    # The console of a healthy night on a non-terminal: the plan once, no warning or error line from
    # any library (Ray's native core_worker line included: mmbatch.cli.console), the summary.
    lines = (r.stdout + r.stderr).splitlines()
    assert sum("3 inputs: 3 to score" in line for line in lines) == 1
    loud = re.compile(r" (WARNING|ERROR) | E \d+ \d+\]|Warning:|warnings\.warn|Traceback|Started a local Ray")
    assert not [line for line in lines if loud.search(line)], lines
    assert len(lines) <= 15, lines


def test_log_lines_as_json_for_schedulers():
    import logging

    from mmbatch.cli import JsonLines

    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("mmbatch.x", logging.WARNING, __file__, 1, "a %s", ("line",), sys.exc_info())
    out = json.loads(JsonLines().format(record))
    assert (out["level"], out["logger"], out["message"]) == ("WARNING", "mmbatch.x", "a line")
    assert out["traceback"].endswith("ValueError: bad") and out["time"].endswith("+00:00")


def test_a_benign_native_line_is_dropped_and_every_other_line_kept(tmp_path):
    """Ray's C++ core worker writes to fd 2 itself; the console filter (only in the command's own
    process) drops its one benign line and passes everything else, a partial last line included,
    once the process exits."""
    code = ("import os, sys; from mmbatch.cli import console; assert not console.drop_benign_native_lines(); "
            "console.command_process(); assert console.drop_benign_native_lines(); "
            "os.write(2, b'[2026 E 1 1] core_worker.cc:2465: Actor with class name: x has constructor arguments in "
            "the object store and max_restarts > 0. If the...\\nkept 1\\n'); "
            "print('kept 2', file=sys.stderr); os.write(2, b'[2026 E 1 1] core_worker.cc:1: other\\nno newline')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "kept 1\nkept 2\n[2026 E 1 1] core_worker.cc:1: other\nno newline"


def tiny_config_in(tmp_path, fmt: str) -> str:
    """pipelines/tiny.yaml with `output.format: fmt`."""
    text = (REPO / "pipelines" / "tiny.yaml").read_text().replace("output:\n", f"output:\n  format: {fmt}\n", 1)
    path = tmp_path / f"tiny-{fmt}.yaml"
    path.write_text(text)
    return str(path)


def test_a_degraded_night_commits_and_exits_3(tmp_path):
    """A Delta Lake output, through the whole job: two of three videos are not videos (over
    --max-failed-fraction) and the good one's .vtt sidecar is binary (text fails on every clip, with
    the reason): committed (one version a table), exit 3, the most serious reason on stderr and every
    reason in the night's report."""
    from deltalake import DeltaTable

    from mmbatch.synth import write_video

    src = tmp_path / "in"
    write_video(src / "good.mp4", seconds=2.0, width=64, height=48)
    (src / "good.vtt").write_bytes(b"WEBVTT\n\x00\xff\xfe" * 50)
    for name in ("a", "b"):
        (src / f"{name}.mp4").write_bytes(b"garbage" * 100)
    r = run("--config", tiny_config_in(tmp_path, "delta"), "--input", str(src), "--output", str(tmp_path / "o"),
            "--run-date", "2026-11-27", "--max-failed-fraction", "0.5")
    assert r.returncode == 3, r.stderr[-2000:]
    assert "3 videos: 1 scored, 2 failed" in r.stdout
    assert re.search(r"; busiest pool \w+ \(\d+% of its time working\)\n", r.stdout), r.stdout
    assert "2 of 3 videos failed (67% > max-failed-fraction 50%)" in r.stderr
    report = next((tmp_path / "o" / "_runs").glob("*.html")).read_text()  # the report read it through the format
    assert "2 of 3 videos failed" in report and "text on 100% of clips failed" in report
    assert list((tmp_path / "o" / "_runs").glob("*.json"))  # committed anyway
    videos = DeltaTable(str(tmp_path / "o" / "videos"))
    assert videos.version() == 0 and sorted(videos.to_pandas()["status"]) == ["error", "error", "ok"]
    clips = DeltaTable(str(tmp_path / "o" / "clips")).to_pandas()
    assert clips["video_id"].tolist() == ["good"] and clips["status"].tolist() == ["ok"]
    assert clips["text_error"].tolist() == ["transcript sidecar good.vtt is binary, not text"]
    assert not clips["has_text"].any()


def test_an_iceberg_night_is_rolled_back_and_maintained(ray_cluster, tmp_path):
    """A night on an Iceberg output (embedded catalog; in this process, on the session's Ray: the
    job's own path to a table format is the degraded Delta night's), then `mmbatch rollback` (the
    date goes back to before its only night: empty) and `mmbatch maintain` on it."""
    import json

    from mmbatch.config import load_config
    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.synth import write_video
    from mmbatch.tables.formats import open_tables

    src = tmp_path / "in"
    write_video(src / "v.mp4", seconds=2.0, width=64, height=48)
    out = str(tmp_path / "o")
    result = run_pipeline(load_config(tiny_config_in(tmp_path, "iceberg")), str(src), out, dt.date(2026, 11, 27))
    assert (result.scored, result.exit_code) == (1, 0)
    tables = open_tables(out)
    [night] = tables.versions_of_date("clips", dt.date(2026, 11, 27))
    assert tables.format == "iceberg" and tables.read("clips", ["video_id"]).column("video_id").to_pylist() == ["v"]
    cli = [sys.executable, "-m", "mmbatch.cli"]
    r = subprocess.run([*cli, "rollback", "--output", out, "--run-date", "2026-11-27", "--json"], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and json.loads(r.stdout)["rolled_back_run"] == night["run_id"], r.stderr
    assert open_tables(out).read("clips").num_rows == 0
    r = subprocess.run([*cli, "maintain", "--output", out, "--vacuum-hours", "0", "--json"], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0 and json.loads(r.stdout)["clips"]["removed_files"] == 1, r.stderr
    r = subprocess.run([*cli, "rollback", "--output", out, "--run-date", "2026-11-27", "--json"], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "no committed night left" in r.stderr


def test_mmbatch_command_dispatches_to_the_same_jobs(tmp_path):
    """`mmbatch <command>` (the console script) and `python jobs/<job>.py` run the same code."""
    cmd = [sys.executable, "-m", "mmbatch.cli"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and all(f"  {c} " in r.stdout for c in ("score", "nightly", "report", "train"))
    r = subprocess.run([*cmd, "score", "--input", "x"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "usage: mmbatch score" in r.stderr and "--input and --output are required" in r.stderr
    r = subprocess.run([*cmd, "report", "--output", str(tmp_path / "none")], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"error: no committed run under {tmp_path / 'none'}"
    for job in (["report", "--output", "o"], ["train", "--output", "o", "--labels", "l.csv", "--out", "h"]):
        r = subprocess.run([*cmd, *job, "--config", "missing.yaml"], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.strip() == "error: config file not found: missing.yaml"
    r = subprocess.run([*cmd, "scor"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "unknown command 'scor'" in r.stderr


def test_wheel_ships_the_command_and_its_yaml(tmp_path):
    """A non-editable install has the console script, the CLI modules and the shipped pipeline YAMLs.
    Built from a copy of the sources: setuptools writes build/ beside them and reuses it later."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("mmbatch", "pipelines"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("mmbatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.rsplit("/", 1)[-1] for n in names if "/data/share/mmbatch/pipelines/" in n}
    for needed in ("mmbatch/cli/score.py", "mmbatch/cli/nightly.py", "mmbatch/cli/report.py",
                   "mmbatch/cli/train.py", "mmbatch/pipeline/run.py"):
        assert needed in names
    assert {"demo.yaml", "video_sentiment.yaml", "tiny.yaml"} <= shipped
    assert not [n for n in names if n.startswith("pipelines/")]  # no top-level `pipelines` import name
    r = subprocess.run([sys.executable, "-c", "import pipelines"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "No module named 'pipelines'" in r.stderr  # nor in the installed checkout
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mmbatch = mmbatch.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


class _Plan:
    def __init__(self):
        self.lease = self
        self.released = False

    def release(self):
        self.released = True


def test_ray_starts_only_once_inputs_and_output_are_checked():
    """The plan runs in a thread; Ray starts when the plan says inputs and output passed, while it
    reads the models. An input error never starts Ray; a model error is raised once Ray is up; a
    Ray that fails to start frees the night the plan took."""
    import pytest

    from mmbatch.cli.score import plan_while_ray_starts
    from mmbatch.errors import InputError, ModelLoadError

    started = []

    def bad_input(checked):
        raise InputError("input not found: x")

    with pytest.raises(InputError):
        plan_while_ray_starts(bad_input, lambda: started.append("ray"))
    assert started == []

    def bad_model(checked):
        checked()
        raise ModelLoadError("models.text: not found")

    with pytest.raises(ModelLoadError):
        plan_while_ray_starts(bad_model, lambda: started.append("ray"))
    assert started == ["ray"]

    plan = _Plan()
    assert plan_while_ray_starts(lambda checked: checked() or plan, lambda: started.append("ray")) is plan
    assert not plan.released

    def ray_fails():
        raise ConnectionError("GCS did not start")

    with pytest.raises(ConnectionError):
        plan_while_ray_starts(lambda checked: checked() or plan, ray_fails)
    assert plan.released


def test_commands_exit_after_the_exit_handlers_without_teardown(tmp_path):
    """exit_now: atexit handlers (Ray's shutdown, logging) run, buffered output is flushed, the code is kept."""
    marker = tmp_path / "handler-ran"
    code = ("import atexit, pathlib, sys\n"
            "from mmbatch.cli import exit_now\n"
            f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
            "sys.stdout.write('buffered')\n"
            "exit_now(3)\n"
            "print('not reached')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 3 and r.stdout == "buffered" and marker.read_text() == "yes"


def test_a_local_ray_gets_this_code_on_its_path():
    from mmbatch.allocator import MALLOC_ENV
    from mmbatch.cli import CODE_ROOT
    from mmbatch.cli.score import local_ray_environment
    from mmbatch.config import parse_config

    env = local_ray_environment({"PYTHONPATH": f"/extra{os.pathsep}{CODE_ROOT}"})
    assert env == {"PYTHONPATH": f"{CODE_ROOT}{os.pathsep}/extra", **MALLOC_ENV}  # first, once; the user's entries kept
    assert local_ray_environment({}) == {"PYTHONPATH": str(CODE_ROOT), **MALLOC_ENV}
    # run.malloc_tuning off: the allocator is left as the environment has it.
    off = parse_config({"models": {"text": {"task": "text_classification", "source": "tiny:roberta-sentiment"}},
                        "run": {"malloc_tuning": False}})
    assert local_ray_environment({}, off) == {"PYTHONPATH": str(CODE_ROOT)}


def test_version_and_license(capsys):
    """`mmbatch --version` names the installed version; the LICENSE file is the license pyproject declares."""
    from importlib.metadata import version

    from mmbatch.cli import main

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"mmbatch {version('mmbatch')}"
    declared = re.search(r'^license = \{ text = "([^"]+)" \}', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    text = (REPO / "LICENSE").read_text()
    assert declared == "Apache-2.0" and "Apache License" in text and "Version 2.0, January 2004" in text


def test_every_subcommand_takes_log_level_and_every_flag_has_help():
    """One grammar: --log-level and --log-format on each subcommand, --json wherever results are
    printed, help on every flag; train's scored-output root is
    --output like the others' (--clips still works, with a deprecation line)."""
    import contextlib
    import io

    import pytest

    from mmbatch.cli import COMMANDS, main

    for name in COMMANDS:
        if name == "models":
            continue  # subcommands of its own (fetch, list); --log-level sits before them
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main([name, "--help"])
        options = out.getvalue().split("options:", 1)[1]
        assert "--log-level" in options and "--log-format" in options, name
        assert name == "nightly" or "--json" in options, name  # every command that prints results
        bare = re.findall(r"^  (--[\w-]+)(?: [A-Z_ .\[\]]+)?\n  (?=-)", options, re.M)
        assert bare == [], (name, bare)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "--clips", "/nonexistent/scores", "--labels", "l.csv", "--out", "h"])
    assert code == 2 and err.getvalue().startswith("warning: --clips is deprecated: use --output")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["models", "--json", "list"]) == 0
    import json

    assert {json.loads(line)["bundle"] for line in out.getvalue().splitlines()} >= {"whisper-base", "fer-emotion"}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["scroe"]) == 2
    assert err.getvalue().startswith("mmbatch: unknown command 'scroe'; did you mean 'score'?")
