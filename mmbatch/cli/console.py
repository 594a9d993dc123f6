"""The command's console: the lines Ray's native code writes to this process's stderr itself.

Ray's C++ core worker writes to file descriptor 2 directly, below Python's logging, so its lines
cannot be silenced at a logger. One of them is printed on every healthy night: Ray Data 2.60 starts
each actor pool with constructor arguments in the object store and restarts allowed, and the core
worker logs that at ERROR (`core_worker.cc … has constructor arguments in the object store and
max_restarts > 0`, ray-project/ray#53727; Ray Data holds those arguments for the pool's life).
`drop_benign_native_lines` passes stderr through a pipe that drops exactly such lines. It is
installed once Ray has started (Ray's own processes keep the real stderr), only where stderr is
not a terminal (a terminal gets Ray Data's progress bars, which need it unbuffered), and it hands
back the real stderr at exit, flushing what is still in the pipe.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

BENIGN_NATIVE_LINES = (
    re.compile(rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store "
               rb"and max_restarts > 0"),
)
_installed: list[int] = []  # the real stderr's duplicate, once installed
_own: list[bool] = []  # set by command_process(): this process is the command's, its stderr the command's


def command_process() -> None:
    """Mark this process as the command's own (the console script, jobs/score_videos.py): only then is
    its stderr filtered, never in a process that merely calls the command's functions (a notebook, tests)."""
    _own.append(True)


def drop_benign_native_lines(patterns=BENIGN_NATIVE_LINES) -> bool:
    """Filter this process's stderr (fd 2); False where it is not the command's own process, is a
    terminal, or is filtered already."""
    if not _own or _installed or sys.stderr.isatty():
        return False
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, real, patterns), name="mmbatch-stderr", daemon=True)
    pump.start()
    _installed.append(real)

    def restore():
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer gone: the pump reads its end and stops
        pump.join(timeout=5)

    atexit.register(restore)
    return True


def _pump(read_end: int, real: int, patterns) -> None:
    """Copy whole lines from the pipe to the real stderr, but those a pattern matches."""
    pending = b""
    while chunk := os.read(read_end, 65536):
        try:
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not any(p.search(line) for p in patterns))
        except Exception:  # never keep a line back for a fault here: pass everything from now on
            kept, pending, patterns = pending + chunk, b"", ()
        _write_all(real, kept)
    if pending:
        _write_all(real, pending)
    os.close(read_end)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the real stderr is gone (a closed pipe): nothing left to tell
        pass
