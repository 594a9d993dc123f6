"""A lease on one night of one output, so two runs never commit the same date at once.

The lease is a small JSON object (`_locks/run_date=D.json`) naming the holder (run id, host,
pid) and an expiry. The holder renews it from a background thread; a crashed run stops
renewing, so its lease lapses after `ttl_s` and the next night is never blocked for good. On
the holder's own host a lease whose process is gone is taken over at once (a killed run
restarted on the same machine resumes without waiting).

Taking, renewing and releasing the lease are compare-and-swaps (mmbatch/night/cas.py):
create-if-absent and replace-if-unchanged with S3's conditional writes, or under a folder lock
locally, so of two runs starting at once exactly one holds the night. A store without
conditional writes falls back to write-then-read-back (said in the log), where two runs starting
within the same second could both pass. A holder whose renewals fail for longer than
the TTL (a store that stalls) has lost the lease, as has one whose lease another run took over:
it stops renewing and `check()` refuses its commit.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from mmbatch import storage
from mmbatch.errors import MmbatchError
from mmbatch.night.cas import Changed, slot_for

log = logging.getLogger(__name__)


class LockedError(MmbatchError):
    """Another run holds the lease on this output and date."""


class LeaseLostError(MmbatchError):
    """This run's lease lapsed (renewals failed for longer than its TTL: a store that stalls) or
    another run took it over: the run must not commit. Worth retrying; its staged work is kept."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    def __init__(self, fs, path: str, holder: str, ttl_s: float = 300.0, what: str = "this output and date"):
        self.fs, self.path, self.ttl_s, self.what = fs, path, ttl_s, what
        self.me = {"holder": holder, "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.valid_until = 0.0  # by this holder's clock: the expiry of its last successful write
        self.lost: str | None = None  # why the lease is no longer ours
        self.slot = slot_for(fs, path)
        self.version: str | None = None  # of the lease object as this holder last wrote it

    def _read(self) -> dict | None:
        return self._parse(self.slot.read()[0])

    @staticmethod
    def _parse(data: bytes | None) -> dict | None:
        if data is None:
            return None
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return {}  # damaged: treated as expired
        if not isinstance(body, dict) or not isinstance(body.get("expires_at", 0), (int, float)):
            return {}  # valid JSON, but not a lease: treated as expired too
        return body

    def _write(self, expect: str | None) -> None:
        """Write our lease over the version `expect` (None: where there is none); Changed if another
        writer got there first."""
        started = time.time()  # the lease counts from before the write: a slow write cannot extend it
        body = {**self.me, "expires_at": started + self.ttl_s}
        self.version = self.slot.write(json.dumps(body).encode(), expect)
        self.valid_until = started + self.ttl_s

    def _mine(self, cur: dict | None) -> bool:
        return bool(cur) and (cur.get("host"), cur.get("pid"), cur.get("holder")) == (
            self.me["host"], self.me["pid"], self.me["holder"])

    def _is_live_other(self, cur: dict | None) -> bool:
        if not cur or cur.get("expires_at", 0) < time.time():
            return False
        if (cur.get("host"), cur.get("pid")) == (self.me["host"], self.me["pid"]):
            return False
        if cur.get("host") == self.me["host"] and isinstance(cur.get("pid"), int) and not _pid_alive(cur["pid"]):
            return False  # its process is gone on this very host
        return True

    def acquire(self) -> None:
        data, version = self.slot.read()
        cur = self._parse(data)
        if self._is_live_other(cur):
            raise LockedError(self._refusal(cur))
        try:
            self._write(version)
        except Changed:  # another run took it between our read and our write
            raise LockedError(self._refusal(self._read() or {})) from None
        if not self.slot.conditional:
            time.sleep(0.05)  # no compare-and-swap: let a racing writer land, then see who won
            cur = self._read()
            if cur and (cur.get("host"), cur.get("pid")) != (self.me["host"], self.me["pid"]):
                raise LockedError(self._refusal(cur))

    def probe(self) -> None:
        """Prove the output takes writes (for a dry run): refuse if the night is held, else
        write and delete a probe object next to the lease."""
        cur = self._read()
        if self._is_live_other(cur):
            raise LockedError(self._refusal(cur))
        probe = f"{self.path}.probe-{self.me['pid']}"
        storage.write_bytes_atomic(self.fs, probe, b"probe")
        self.fs.rm(probe)

    def _refusal(self, cur: dict) -> str:
        left = max(0.0, cur.get("expires_at", 0) - time.time())
        return (f"another run holds {self.what}: {cur.get('holder')} on host {cur.get('host')} "
                f"(pid {cur.get('pid')}); its lease expires in {left:.0f} s unless renewed. "
                f"Wait for it to finish, or delete {self.path} if you are sure it is dead.")

    def start_renewing(self) -> None:
        def renew():
            while not self._stop.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except LeaseLostError as err:
                    log.error("%s", err)
                    return
                except Exception as err:  # next tick tries again; the lease lasts ttl_s
                    log.warning("could not renew the lease %s: %s", self.path, err)

        self._thread = threading.Thread(target=renew, name="mmbatch-lease", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        """Extend the lease, unless it is no longer ours: lapsed (then another run may hold the
        night, and writing again would take it from that run) or taken over."""
        self.check()
        data, version = self.slot.read()
        cur = self._parse(data)
        if self._mine(cur):
            try:
                return self._write(version if self.slot.conditional else None)
            except Changed:
                cur = self._read()
        self.lost = f"another run took over {self.what}: {(cur or {}).get('holder')} on host {(cur or {}).get('host')}"
        self.check()

    def check(self) -> None:
        """Raise LeaseLostError unless this run still holds its lease (called before the commit)."""
        if self.lost is None and time.time() > self.valid_until:
            self.lost = (f"the lease on {self.what} lapsed {time.time() - self.valid_until:.0f} s ago (it could not be "
                         f"renewed within run.lock_ttl_s = {self.ttl_s:g} s: a store that stalls?)")
        if self.lost is not None:
            raise LeaseLostError(f"{self.lost}; this run does not commit. Its staged work is kept: a rerun of the "
                                 "date resumes it")

    def acquire_waiting(self, timeout_s: float) -> None:
        """For short critical sections (the state table): wait for the holder to finish."""
        deadline = time.time() + timeout_s
        while True:
            try:
                return self.acquire()
            except LockedError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def _remove_empty_folder(self) -> None:
        """Locally, leave no empty `_locks/` behind (os.rmdir refuses a folder another run uses)."""
        if storage.is_local_fs(self.fs):
            try:
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            cur = self._read()
            if cur is not None and (cur.get("host"), cur.get("pid")) == (self.me["host"], self.me["pid"]):
                self.slot.delete()
                self._remove_empty_folder()
        except Exception as err:  # an unreleased lease only lapses later
            log.warning("could not release the lease %s: %s", self.path, err)
