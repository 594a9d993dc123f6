"""Decode in a child process that is killed when it stalls.

A decoder can loop forever in native code holding the GIL (decord does: dmlc/decord#373): no
Python-level timeout can interrupt that thread. So a decode worker keeps one long-lived child process
(spawned once, reused for every video) and waits on a pipe with a deadline. A child that
sends nothing for `timeout_s` is killed; the video's missing clips become error rows with the
reason, and a fresh child serves the next video.

Protocol: the parent sends a task's video refs, all at once; the child takes them in order and
sends, per video: ("plan", n_rows) once the clips are planned (or never, for a video that fails
before), then one ("row", batch) per row, then ("done", None).

A row's large arrays (frames, audio) travel through a ring of shared-memory slots, the pipe
carrying only where they lie: through the pipe they were pickled, written, read and unpickled,
1-2 ms of each side's CPU a clip (docs/performance.md). A slot is reused once the parent has
copied it out (it says so on a pipe of its own); a row too large for a slot is pickled whole, and
without room in /dev/shm every row is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

STARTUP_TIMEOUT_S = 300  # a fresh child imports torch, torchaudio, av and decord
RING_SLOTS = 4  # rows in flight between the child and the parent
SHARED_MIN_BYTES = 64 * 1024  # smaller arrays ride the pipe: a slot is not worth it
RING_MAX_BYTES = 64 * 2**20  # a larger ring (huge frames) is not made: its rows ride the pipe


def ring_fits(size: int) -> bool:
    """Whether /dev/shm has room for a ring of `size` bytes, four times over: containers often mount
    64 MB there, and a write past what it holds is a SIGBUS, not an error. Else rows ride the pipe."""
    if size > RING_MAX_BYTES:
        return False
    try:
        room = os.statvfs("/dev/shm")
    except OSError:  # no /dev/shm (macOS)
        return False
    return room.f_bavail * room.f_frsize >= 4 * size


@dataclass(frozen=True)
class InSlot:
    """Where an array of a row lies in the ring: its slot, offset, dtype and shape."""

    slot: int
    offset: int
    dtype: str
    shape: tuple[int, ...]


class Ring:
    """`slots` shared-memory slots of `slot_bytes`, made by the parent (which unlinks the segment's
    name) and attached by the child. The parent says each slot it has emptied with a message on a
    pipe of its own: no named semaphore, which a killed worker would leave behind in /dev/shm, and
    a parent that dies closes the pipe, so a child waiting for a slot exits."""

    def __init__(self, ctx, slot_bytes: int, slots: int = RING_SLOTS):
        from multiprocessing import shared_memory

        self.slot_bytes, self.slots = slot_bytes, slots
        self.shm = shared_memory.SharedMemory(create=True, size=slot_bytes * slots)
        self._emptied, self._say_emptied = ctx.Pipe(duplex=False)  # the child reads, the parent writes
        self._next, self._free, self._unlinked = 0, slots, False

    def __getstate__(self):  # what the child gets: the segment by name, and the pipe's reading end
        return {"name": self.shm.name, "slot_bytes": self.slot_bytes, "slots": self.slots, "emptied": self._emptied}

    def __setstate__(self, state):
        from multiprocessing import shared_memory

        # A spawned child shares its parent's resource tracker; attaching registers the same name again.
        self.slot_bytes, self.slots, self._emptied = state["slot_bytes"], state["slots"], state["emptied"]
        self.shm = shared_memory.SharedMemory(name=state["name"])
        self._next, self._free = 0, self.slots

    def _wait_for_slot(self) -> None:
        while self._emptied.poll(0 if self._free else None):
            try:
                self._emptied.recv_bytes()
            except (EOFError, OSError):  # the parent is gone: nobody will empty a slot
                raise SystemExit("decode worker gone") from None
            self._free += 1

    def put(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """The child's side: the row's large arrays into the next free slot (waiting for one)."""
        large = {k: v for k, v in batch.items() if isinstance(v, np.ndarray) and v.nbytes >= SHARED_MIN_BYTES}
        if not large or sum(v.nbytes for v in large.values()) > self.slot_bytes:
            return batch
        self._wait_for_slot()
        self._free -= 1
        slot, self._next = self._next, (self._next + 1) % self.slots
        out, offset = dict(batch), slot * self.slot_bytes
        for k, v in large.items():
            np.ndarray(v.shape, v.dtype, self.shm.buf, offset)[...] = v
            out[k] = InSlot(slot, offset, v.dtype.str, v.shape)
            offset += v.nbytes
        return out

    def take(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """The parent's side: the row with its arrays copied out, and their slot said to be empty."""
        placed = {k: v for k, v in batch.items() if isinstance(v, InSlot)}
        if not placed:
            return batch
        out = dict(batch)
        for k, v in placed.items():
            out[k] = np.ndarray(v.shape, np.dtype(v.dtype), self.shm.buf, v.offset).copy()
        self._say_emptied.send_bytes(b"")
        return out

    def unlink(self) -> None:
        """Remove the segment's name, once both processes have it mapped: the memory lives while
        they do, and nothing is left behind however they end (Ray kills workers at shutdown)."""
        if not self._unlinked:
            self.shm.unlink()
            self._unlinked = True

    def close(self) -> None:
        self.unlink()
        self.shm.close()
        self._emptied.close()
        self._say_emptied.close()


def _child_main(conn, decoder_factory: Callable, factory_args: tuple, ring: Ring | None = None) -> None:
    decoder = decoder_factory(*factory_args)  # decoder.VideoDecoder
    decoder.setup()
    conn.send(("ready", None))  # imports done: from here on, silence means a stuck decoder
    while True:
        try:
            ref = conn.recv()
        except (EOFError, OSError):  # the parent went away: exit instead of lingering
            return
        if ref is None:
            return
        for kind, payload in decoder.events(ref):
            conn.send((kind, ring.put(payload) if ring is not None and kind == "row" else payload))
        conn.send(("done", None))


class IsolatedDecoder:
    def __init__(self, decoder_factory: Callable, factory_args: tuple, timeout_s: float, slot_bytes: int = 0):
        """`slot_bytes`: the large arrays of one row, at most (0: every row through the pipe)."""
        self.decoder_factory, self.factory_args, self.timeout_s = decoder_factory, factory_args, timeout_s
        self.slot_bytes = slot_bytes
        self._proc = None
        self._conn = None
        self._ring = None

    def _ensure_child(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        ctx = mp.get_context("spawn")  # fork would copy a process that may hold torch/Ray threads
        parent, child = ctx.Pipe()
        fits = self.slot_bytes and ring_fits(self.slot_bytes * RING_SLOTS)
        self._ring = Ring(ctx, self.slot_bytes) if fits else None  # a fresh ring a child
        self._proc = ctx.Process(target=_child_main, args=(child, self.decoder_factory, self.factory_args, self._ring),
                                 daemon=True)
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
        if self._ring is not None:  # the child has it mapped: its name can go
            self._ring.unlink()

    def kill(self) -> None:
        if self._proc is not None and self._proc.pid is not None:  # pid: it was started
            self._proc.kill()
            self._proc.join(timeout=10)
        if self._ring is not None:
            self._ring.close()
        self._proc = self._conn = self._ring = None

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
            yield kind, self._ring.take(payload) if self._ring is not None and kind == "row" else payload
