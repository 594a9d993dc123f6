"""The throughput benchmark's CPU accounting: process kinds and the per-clip / fixed split."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.cpu_account import KINDS, CpuAccount, budget, process_kind, tree_cpu_s

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("title,parent,kind", [
    ("ray::MapWorker(MapBatches(decode)).submit", "ray daemons", "decode"),
    ("ray::MapWorker(MapBatches(encoders))", "ray daemons", "models"),
    ("ray::MapWorker(MapBatches(text))", "ray daemons", "models"),
    ("ray::MapWorker(MapBatches(fusion))", "ray daemons", "fusion"),
    ("ray::MapBatches(split)", "ray daemons", "split"),
    ("ray::Write", "ray daemons", "write"),
    ("ray::IDLE", "ray daemons", "ray system actors and idle workers"),
    ("ray::_StatsActor.get_datasets", "ray daemons", "ray system actors and idle workers"),
    ("/usr/bin/python -B -c", "decode", "decode children"),
    ("/usr/bin/python -B -c", "decode children", "decode children"),
    (".../ray/core/src/ray/gcs/gcs_server --log_dir", "driver", "ray daemons"),
    ("python .../dashboard/agent.py", "ray daemons", "ray daemons"),
    ("/usr/bin/python .../ray/_private/workers/default_worker.py", "ray daemons", "ray worker start-ups"),
    ("/usr/bin/python -c", "models", "other children"),
])
def test_process_kinds(title, parent, kind):
    assert process_kind(title, parent, is_root=False) == kind
    assert process_kind(title, parent, is_root=True) == "driver"


def test_budget_splits_per_clip_from_fixed_cost():
    small = {"clips": 100, "cpu_s": {"decode": 3.0 + 100 * 0.03, "ray daemons": 10.0 + 100 * 0.001}}
    large = {"clips": 1600, "cpu_s": {"decode": 3.0 + 1600 * 0.03, "ray daemons": 10.0 + 1600 * 0.001}}
    b = budget(small, large)
    assert b["by_kind"]["decode"] == {"ms_per_clip": 30.0, "fixed_s": 3.0}
    assert b["by_kind"]["ray daemons"] == {"ms_per_clip": 1.0, "fixed_s": 10.0}
    assert b["by_kind"]["models"] == {"ms_per_clip": 0.0, "fixed_s": 0.0}
    assert b["ms_per_clip_total"] == 31.0 and set(b["by_kind"]) == set(KINDS)
    assert b["clips_per_s_if_cpu_bound"]["2"] == round(2000 / 31.0, 1)
    assert "cores_while_running" not in b["by_kind"]["decode"]  # no wall times given
    timed = budget({**small, "wall_s": 20.0}, {**large, "wall_s": 70.0})
    assert timed["by_kind"]["decode"]["cores_while_running"] == round(1500 * 0.03 / 50, 3)
    with pytest.raises(ValueError):
        budget(large, small)


def test_account_books_a_busy_child_to_its_kind():
    """A child that burns ~0.3 s of CPU is booked, to within the sampler's tick, under its kind."""
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                              "while time.process_time()-t<0.3: pass\ntime.sleep(5)"])
    try:
        account = CpuAccount(root=os.getpid())
        deadline = time.time() + 10
        while time.time() < deadline:
            account.sample([os.getpid(), child.pid])
            if account.seconds["ray daemons"] >= 0.29:  # the driver's non-Ray children count as Ray's
                break
            time.sleep(0.1)
        burnt = tree_cpu_s([child.pid, 2**22 + 1])  # a pid that is gone counts nothing
    finally:
        child.kill()
        child.wait()
    assert 0.29 <= account.seconds["ray daemons"] <= 0.6 and 0.29 <= burnt <= 0.6
    assert account.seconds["driver"] > 0 and account.summary(10)["cpu_ms_per_clip"]["driver"] > 0
    # Ray's own processes are also booked by name (here the child's script-less `python -c`).
    by_process = account.summary(10)["ray_cpu_s_by_process"]
    assert list(by_process) == [os.path.basename(sys.executable)] and 0.29 <= by_process[os.path.basename(sys.executable)] <= 0.6


def test_pool_busy_share_names_the_pool_the_others_wait_for():
    """Ray Data's per-operator busy seconds over each pool's actors and the run: actors seen alive
    at once when counted, else the pool's maximum; task operators (split, write) have no share."""
    from benchmarks.throughput import bench_config, load, pool_busy_share

    config = load(bench_config(str(REPO / "pipelines" / "tiny.yaml")))  # decode [1, 2], encoders [1, 1]
    stages = [{"operator": "FromItems", "wall_seconds": 0.1},
              {"operator": "MapBatches(split)->StreamingRepartition[num_rows_per_block=1,strict=False]",
               "wall_seconds": 4.0},
              {"operator": "MapBatches(decode)", "wall_seconds": 48.0},
              {"operator": "MapBatches(encoders)", "wall_seconds": 30.0},
              {"operator": "Write", "wall_seconds": 1.0}]
    assert pool_busy_share(stages, config, 60.0, {"decode": 1, "encoders": 1}) == {"decode": 0.8, "encoders": 0.5}
    assert pool_busy_share(stages, config, 60.0) == {"decode": 0.4, "encoders": 0.5}  # decode's maximum: 2


def test_machine_info_names_the_machine_a_report_came_from():
    from benchmarks.cpu_account import machine_info

    info = machine_info()
    assert info["logical_cpus"] == os.cpu_count() and info["memory_gib"] > 0
    assert info["cpu_model"] == next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                     if line.startswith("model name"))
