"""Decode in a child process that is killed when it stalls.

A decoder can loop forever in native code holding the GIL (decord does: dmlc/decord#373): no
Python-level timeout can interrupt that thread. So a decode worker keeps one long-lived child process
(spawned once, reused for every video) and waits on a pipe with a deadline. A child that
sends nothing for `timeout_s` is killed; the video's missing clips become error rows with the
reason, and a fresh child serves the next video.

Protocol: the parent sends a task's video refs, all at once; the child takes them in order and
sends, per video: ("plan", n_rows) once the clips are planned (or never, for a video that fails
before), then one ("row", batch) per row, then ("done", None).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from typing import Any

STARTUP_TIMEOUT_S = 300  # a fresh child imports torch, torchaudio, av and decord


def _child_main(conn, stage_factory: Callable, factory_args: tuple) -> None:
    stage = stage_factory(*factory_args)
    stage.setup()
    conn.send(("ready", None))  # imports done: from here on, silence means a stuck decoder
    while True:
        try:
            ref = conn.recv()
        except (EOFError, OSError):  # the parent went away: exit instead of lingering
            return
        if ref is None:
            return
        for kind, payload in stage.decode_events(ref):
            conn.send((kind, payload))
        conn.send(("done", None))


class IsolatedDecoder:
    def __init__(self, stage_factory: Callable, factory_args: tuple, timeout_s: float):
        self.stage_factory, self.factory_args, self.timeout_s = stage_factory, factory_args, timeout_s
        self._proc = None
        self._conn = None

    def _ensure_child(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        ctx = mp.get_context("spawn")  # fork would copy a process that may hold torch/Ray threads
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child, self.stage_factory, self.factory_args), daemon=True)
        try:
            self._proc.start()
        except RuntimeError as err:  # spawn re-imports __main__: a script without a main guard
            parent.close()
            self.kill()
            raise RuntimeError("decode worker process could not start: a script that decodes in its own "
                               "process must do so under `if __name__ == '__main__':` (spawn re-imports it)") from err
        finally:
            child.close()
        self._conn = parent
        try:
            started = parent.poll(STARTUP_TIMEOUT_S) and parent.recv()[0] == "ready"
        except (EOFError, OSError):  # it died before saying so; its stderr has the traceback
            self._proc.join(timeout=10)
            code = self._proc.exitcode
            self.kill()
            raise RuntimeError(f"decode worker process exited during start-up (exit code {code}); "
                               "its traceback is in the worker's stderr") from None
        if not started:
            self.kill()
            raise RuntimeError(f"decode worker process did not start within {STARTUP_TIMEOUT_S} s")

    def kill(self) -> None:
        if self._proc is not None and self._proc.pid is not None:  # pid: it was started
            self._proc.kill()
            self._proc.join(timeout=10)
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(timeout=5)
            except (OSError, BrokenPipeError):
                pass
        self.kill()

    def events_each(self, refs: list[dict[str, Any]]) -> Iterator[tuple[int, str, Any]]:
        """The child's events for each video in turn, as (index, kind, payload), each video's opened
        by (index, "begin", None); ("timeout", seconds) if the child stalls, ("crashed", exit code)
        if it dies. Every ref is sent up front, so the child goes from one video to the
        next without waiting for this process to relay the last clip (measured: no change in
        throughput; the child's waits are between tasks).
        After a timeout or a crash the videos left go to a fresh child. Stopped early, the child is
        killed: it would still be decoding videos nobody reads."""
        i, finished = 0, False
        try:
            while i < len(refs):
                self._ensure_child()
                for ref in refs[i:]:
                    self._conn.send(ref)
                for j in range(i, len(refs)):
                    i = j + 1
                    yield j, "begin", None
                    yield from ((j, kind, payload) for kind, payload in self._until_done())
                    if self._proc is None:  # killed: the rest go to a fresh child
                        break
            finished = True
        finally:
            if not finished:
                self.kill()

    def _until_done(self) -> Iterator[tuple[str, Any]]:
        timeout = self.timeout_s
        while True:
            if not self._conn.poll(timeout):
                self.kill()
                yield "timeout", timeout
                return
            try:
                kind, payload = self._conn.recv()
            except (EOFError, OSError):  # the child crashed (segfault in native code, OOM kill)
                code = self._proc.exitcode if self._proc is not None else None
                self.kill()
                yield "crashed", code
                return
            if kind == "done":
                return
            yield kind, payload
