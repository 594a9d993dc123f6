"""Publish: the assembled night replaces the date's partitions. One Publisher a run, chosen once
from the output's filesystem; the seam where other output formats plug in.

- `LocalFolderPublisher`: the assembled folder replaces the partition in one atomic rename
  (`renameat2(RENAME_EXCHANGE)` on Linux): readers see the old or the new night, never a mix.
- `ObjectStorePublisher`: the new files are copied in, then the superseded ones deleted, then
  `_SUCCESS` (object stores have no atomic rename of a prefix).

Both are idempotent: a publish interrupted after the commit record is finished by running it again.
"""

from __future__ import annotations

import ctypes
import os
import posixpath

from mmbatch import storage
from mmbatch.output.layout import SUCCESS_MARKER, OutputLayout

TABLES = ("clips", "videos")


class Publisher:
    """How staged files become the night's partitions on one kind of storage."""

    def __init__(self, fs):
        self.fs = fs

    def link(self, src: str, dst: str) -> None:
        """Put a staged file into the assembly (the staged file stays for a resume)."""
        raise NotImplementedError

    def publish_table(self, staged: str, target: str, commit_id: str) -> None:
        raise NotImplementedError

    def publish(self, layout: OutputLayout, commit_id: str) -> None:
        """Both tables of the assembled night (`layout.publish`) into their partitions."""
        for table in TABLES:
            self.publish_table(posixpath.join(layout.publish, table), layout.partition_of(table), commit_id)


class LocalFolderPublisher(Publisher):
    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def publish_table(self, staged: str, target: str, commit_id: str) -> None:
        if not os.path.isdir(staged):
            return  # published already
        marker = posixpath.join(staged, SUCCESS_MARKER)
        if not os.path.exists(marker) or open(marker).read() != commit_id:
            self.fs.rm(staged, recursive=True)  # the old partition, swapped out before a crash
            return
        os.makedirs(posixpath.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            os.rename(staged, target)
        elif exchange(staged, target):  # one atomic step: readers see the old or the new night
            self.fs.rm(staged, recursive=True)
        else:  # no renameat2: the date is absent for an instant, never partial
            old = staged + ".old"
            os.rename(target, old)
            os.rename(staged, target)
            self.fs.rm(old, recursive=True)


class ObjectStorePublisher(Publisher):
    def link(self, src: str, dst: str) -> None:
        self.fs.copy(src, dst)  # server-side copy

    def publish_table(self, staged: str, target: str, commit_id: str) -> None:
        if not self.fs.exists(staged):
            return
        new = [p for p in self.fs.find(staged) if posixpath.basename(p) != SUCCESS_MARKER]
        names = {posixpath.basename(p) for p in new}
        for p in new:
            self.fs.copy(p, posixpath.join(target, posixpath.basename(p)))
        if self.fs.exists(target):
            for p in self.fs.find(target):
                if posixpath.basename(p) not in names:
                    self.fs.rm(p)  # superseded: gone only once the new files are in place
        self.fs.copy(posixpath.join(staged, SUCCESS_MARKER), posixpath.join(target, SUCCESS_MARKER))
        self.fs.rm(staged, recursive=True)


def publisher_for(fs) -> Publisher:
    return LocalFolderPublisher(fs) if storage.is_local_fs(fs) else ObjectStorePublisher(fs)


def exchange(a: str, b: str) -> bool:
    """Atomically swap two local paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) == 0
