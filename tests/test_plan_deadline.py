"""The plan has a deadline (run.plan_timeout_s): a stalled read fails the night with exit 1 and
a message naming what was being read, and the night's lease is released."""

from __future__ import annotations

import datetime as dt
import io
import tarfile
import threading

import pytest

from mmbatch.errors import ExitCode, PlanTimeoutError

DAY = dt.date(2026, 11, 27)


def stall(*args, **kwargs):
    threading.Event().wait(3600)  # a store that never answers (the plan's thread is a daemon)


def with_timeout(config, seconds: float):
    return config.model_copy(update={"run": config.run.model_copy(update={"plan_timeout_s": seconds})})


def test_a_stalled_shard_scan_fails_the_dry_run_naming_the_shard(tmp_path, tiny_config, monkeypatch, capsys):
    import yaml

    from mmbatch.cli import score
    from mmbatch.inputs import containers

    shard = tmp_path / "in" / "shard-007.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("a.mp4")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    config = tmp_path / "night.yaml"
    config.write_text(yaml.safe_dump(with_timeout(tiny_config, 1.0).model_dump(mode="json")))
    monkeypatch.setattr(containers, "_scan", stall)
    code = score.main(["--config", str(config), "--input", str(shard.parent), "--output", str(tmp_path / "out"),
                       "--run-date", DAY.isoformat(), "--dry-run"])
    err = capsys.readouterr().err
    assert code == ExitCode.SYSTEM
    assert f"run.plan_timeout_s = 1 s; it was scanning the tar shard {shard}" in err, err


def test_a_plan_stalled_after_taking_the_lease_releases_it(tmp_path, tiny_config, monkeypatch, sample_videos):
    from mmbatch.cli.score import plan_while_ray_starts
    from mmbatch.encoders import inspect
    from mmbatch.pipeline.run import PlanWatch, plan_run

    monkeypatch.setattr(inspect, "inspect_models", stall)  # e.g. a model folder on a store that stalls
    watch, started = PlanWatch(), []
    out = tmp_path / "out"
    with pytest.raises(PlanTimeoutError, match=r"run.plan_timeout_s = 3 s; it was reading the configured models' configs"):
        plan_while_ray_starts(lambda checked: plan_run(with_timeout(tiny_config, 3.0), str(sample_videos), str(out),
                                                       DAY, checked=checked, watch=watch),
                              lambda: started.append("ray"), 3.0, watch)
    assert started == ["ray"] and watch.lease is not None
    assert not (out / "_locks" / f"run_date={DAY.isoformat()}.json").exists()  # released, not left to lapse


def test_without_a_deadline_the_plan_is_waited_for():
    """No timeout: a plan still busy after Ray started is waited for (an infinite wait is None,
    not float('inf'), which threading refuses)."""
    import time

    from mmbatch.cli.score import plan_while_ray_starts

    def slow_plan(checked):
        checked()
        time.sleep(0.3)
        return "planned"

    assert plan_while_ray_starts(slow_plan, lambda: None) == "planned"


def test_sigterm_while_planning_releases_the_lease_and_exits_143(tmp_path, tiny_config, monkeypatch, capsys,
                                                                 sample_videos):
    """A scheduler's timeout during planning: one `error:` line, the documented code, and the lease
    released at once, so a retry from another host is not refused for the lease's lifetime."""
    import os
    import signal
    import time

    import yaml

    from mmbatch.cli import score
    from mmbatch.encoders import inspect

    config = tmp_path / "night.yaml"
    config.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    out = tmp_path / "out"
    lock = out / "_locks" / f"run_date={DAY.isoformat()}.json"

    def stall_then_see_term(*args, **kwargs):  # the models take long to read; the lease is held meanwhile
        threading.Event().wait(3600)

    def terminate_when_leased():
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(inspect, "inspect_models", stall_then_see_term)
    monkeypatch.setattr(score, "init_ray", lambda *args, **kwargs: None)
    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_when_leased, daemon=True).start()
    try:
        code = score.main(["--config", str(config), "--input", str(sample_videos), "--output", str(out),
                           "--run-date", DAY.isoformat()])
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == ExitCode.TERMINATED == 143
    assert "error: terminated (SIGTERM); nothing was committed" in capsys.readouterr().err
    assert not lock.exists()
