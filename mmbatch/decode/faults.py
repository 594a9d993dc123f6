"""Fault-injection backends (select with `decode.backend: mmbatch.decode.faults:<Class>`).

They reproduce, on demand, the failures real decoders show in production, so the watchdog and
the error accounting can be exercised end to end: a decoder that never returns (decord#373) and
one that takes its process down (a segfault in native code). Files whose name does not contain
the trigger word decode normally (PyAV), so one bad video can sit among good ones.
"""

from __future__ import annotations

import os
import time

from mmbatch.decode.video import PyAVVideo


class StuckVideo(PyAVVideo):
    """Never returns from opening a file whose name contains "stuck"."""

    def __init__(self, path, info, size):
        if "stuck" in os.path.basename(path):
            while True:
                time.sleep(3600)
        super().__init__(path, info, size)


class CrashingVideo(PyAVVideo):
    """Kills its own process, as a segfault in native code would, on files named "crash…"."""

    def __init__(self, path, info, size):
        if "crash" in os.path.basename(path):
            os.abort()
        super().__init__(path, info, size)


class SlowVideo(PyAVVideo):
    """Takes a second to open every file: makes "kill the run half-way" tests deterministic."""

    def __init__(self, path, info, size):
        time.sleep(1.0)
        super().__init__(path, info, size)
