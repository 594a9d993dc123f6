"""The allocator settings the job gives its processes (mmbatch.allocator): what they are, that an
operator's own values win, and that glibc really stops faulting freed memory in again."""

from __future__ import annotations

import subprocess
import sys

from mmbatch import allocator

# A batch's buffers: eight 1 MiB arrays made, touched and freed, 100 times. By default glibc gives
# the freed top of the heap back to the kernel each time and faults it in again the next (8 x 256
# pages a round), as the encoder and decode child did for each batch of clips.
CHURN = """
import resource, sys
{setup}
import numpy as np
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    arrays = [np.ones(2**20, np.uint8) for _ in range(8)]
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(setup: str = "", env: dict | None = None) -> int:
    r = subprocess.run([sys.executable, "-c", CHURN.format(setup=setup)], capture_output=True, text=True,
                       env=env, timeout=60, check=True)
    return int(r.stdout)


def test_values_the_environment_has_win():
    assert allocator.malloc_env({}) == {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
    assert allocator.malloc_env({"MALLOC_TRIM_THRESHOLD_": "0"})["MALLOC_TRIM_THRESHOLD_"] == "0"


def test_freed_memory_is_reused_by_a_started_or_a_running_process():
    default = faults(env={"PATH": ""})
    started = faults(env={"PATH": "", **allocator.MALLOC_ENV})  # a worker: glibc reads them at start
    running = faults("from mmbatch import allocator; assert allocator.tune_this_process()", env={
        "PATH": "", "PYTHONPATH": ":".join(sys.path)})  # the driver: mallopt
    assert default >= 100 * 8 * 200, default  # every round faulted its pages in again
    assert started < 8 * 2 * 256 and running < 8 * 2 * 256, (started, running)  # once, and kept


def test_a_value_glibc_would_not_take_changes_nothing():
    assert allocator.tune_this_process({"MALLOC_MMAP_THRESHOLD_": "lots"}) is False
