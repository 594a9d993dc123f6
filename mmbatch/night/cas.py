"""Compare-and-swap of one small object: what the lease on a night is written with.

- Object stores (S3 and compatibles): create-if-absent is a PUT with `If-None-Match: *`, replace
  is a PUT with `If-Match: <the ETag this writer read>`; the store refuses (412) a write that
  lost a race. A store that refuses conditional writes altogether is said so in the log, and the
  slot falls back to plain writes (the lease then reads its write back, as before).
- Local or mounted folders: the same operations under an exclusive `flock` of the folder, with
  the write itself atomic (temp file + rename); the version is the content's hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath

from mmbatch import storage

log = logging.getLogger(__name__)


class Changed(Exception):
    """The object is not the version the writer expected: another writer won the race."""


class LocalSlot:
    conditional = True

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[bytes | None, str | None]:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write(self, data: bytes, expect: str | None) -> str:
        """Create (expect None) or replace the version `expect`; Changed if it is not there."""
        folder = posixpath.dirname(self.path)
        self.fs.makedirs(folder, exist_ok=True)
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # every writer of the folder's leases takes it: one at a time
            if self.read()[1] != expect:
                raise Changed(self.path)
            storage.write_bytes_atomic(self.fs, self.path, data)
            return hashlib.sha256(data).hexdigest()
        finally:
            os.close(fd)  # releases the flock

    def delete(self) -> None:
        self.fs.rm(self.path)


_PRECONDITION = ("pre-condition", "precondition", "conditionalrequestconflict")
_UNSUPPORTED = ("notimplemented", "not implemented", "not supported", "invalidargument")


class ObjectSlot:
    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path
        self.conditional = True

    def read(self) -> tuple[bytes | None, str | None]:
        # The version first: if the object changes before it is read, a write that expects this
        # version is refused, so a decision made on newer content is never written over it.
        try:
            version = self.fs.info(self.path, refresh=True).get("ETag")
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        if version is None and self.conditional:
            self._fall_back("it reports no ETag")
        return data, version

    def write(self, data: bytes, expect: str | None) -> str | None:
        if not self.conditional:
            storage.write_bytes_atomic(self.fs, self.path, data)
            return None
        condition = {"mode": "create"} if expect is None else {"IfMatch": expect}
        try:
            out = self.fs.pipe_file(self.path, data, **condition)
        except FileExistsError:
            raise Changed(self.path) from None
        except Exception as err:
            text = f"{type(err).__name__} {err}".lower()
            if any(word in text for word in _PRECONDITION):
                raise Changed(self.path) from None
            if not any(word in text for word in _UNSUPPORTED):
                raise
            self._fall_back(f"it refuses conditional writes: {err}")
            return self.write(data, expect)
        return (out or {}).get("ETag")

    def _fall_back(self, why: str) -> None:
        log.warning("no compare-and-swap on %s (%s): the lease falls back to write-then-read-back, which two "
                    "runs starting within the same second can both pass", self.path, why)
        self.conditional = False

    def delete(self) -> None:
        self.fs.rm(self.path)


def slot_for(fs, path: str):
    return LocalSlot(fs, path) if storage.is_local_fs(fs) else ObjectSlot(fs, path)
