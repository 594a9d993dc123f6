"""glibc's allocator settings for the job's processes: keep freed memory for reuse.

By default glibc serves an allocation above its mmap threshold (128 KiB, raised as such
blocks are freed) with a fresh mapping, and returns the top of the heap to the kernel once
128 KiB of it is free. A stage that allocates and frees frames, audio and activations of a
few hundred KiB to a few MiB for every clip then has the kernel map and zero the same memory
again and again: on a 2-core machine the encoder actor took 2,800 page faults a clip and the
decode child 1,000, a fifth of all CPU time in the kernel (docs/performance.md).

With blocks below 32 MiB taken from the heap and the heap trimmed only past 1 GiB free, each
process reuses its own memory. Set through the environment, read by glibc when a process
starts (Ray's workers, their decode children), or with mallopt for a process already running.
Values the environment already has win: an operator's own tuning is kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest allowed mmap threshold on 64-bit
TRIM_THRESHOLD_BYTES = 2**30
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}
# mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def malloc_env(environ: dict[str, str]) -> dict[str, str]:
    """MALLOC_ENV, with any value `environ` already sets kept."""
    return {name: environ.get(name, value) for name, value in MALLOC_ENV.items()}


def tune_this_process(environ: dict[str, str] | None = None) -> bool:
    """Apply malloc_env to the running process (its allocator read the environment when it
    started). False where the C library has no mallopt (not glibc): nothing changes."""
    env = malloc_env(dict(os.environ) if environ is None else environ)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    try:
        mmap, trim = int(env["MALLOC_MMAP_THRESHOLD_"]), int(env["MALLOC_TRIM_THRESHOLD_"])
    except ValueError:  # an operator's value glibc would ignore too
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap) and mallopt(_M_TRIM_THRESHOLD, trim))
