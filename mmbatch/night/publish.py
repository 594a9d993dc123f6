"""Publish: the assembled night replaces the date's partitions. One Publisher a run, chosen once
from the output's format and filesystem.

Plain Parquet (the run record, written first, is the commit):
- `LocalFolderPublisher`: the assembled folder replaces the partition in one atomic rename
  (`renameat2(RENAME_EXCHANGE)` on Linux): readers see the old or the new night, never a mix.
- `ObjectStorePublisher`: the new files are copied in, then the superseded ones deleted, then
  `_SUCCESS` (object stores have no atomic rename of a prefix).

Delta / Iceberg (`TablePublisher`; the table commit is the commit, the run record follows it): the
assembled files are put under `<table>/run_date=D/` with names of their own, then one transaction a
table makes them the date's files, on exactly the version the run read.

All are idempotent: a publish interrupted after its commit point is finished by running it again.
"""

from __future__ import annotations

import ctypes
import os
import posixpath
from typing import Any

from mmbatch import storage
from mmbatch.output.layout import SUCCESS_MARKER, OutputLayout
from mmbatch.tables.tables import TABLE_LOG, TABLES, Tables


class Publisher:
    """How staged files become the night's partitions on one kind of storage."""


    def __init__(self, fs):
        self.fs = fs

    def link(self, src: str, dst: str) -> None:
        """Put a staged file into the assembly (the staged file stays for a resume)."""
        raise NotImplementedError

    def publish_table(self, staged: str, target: str, commit_id: str) -> None:
        raise NotImplementedError

    def publish(self, layout: OutputLayout, record: dict[str, Any]) -> dict[str, Any]:
        """Both tables of the assembled night (`layout.publish`) into their partitions; returns
        the table versions committed ({} for plain Parquet)."""
        for table in TABLES:
            self.publish_table(posixpath.join(layout.publish, table), layout.partition_of(table), record["commit_id"])
        return {}


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


class TablePublisher(Publisher):
    """Delta and Iceberg: the night's files go under the table's folder, one commit a table."""


    def __init__(self, fs, tables: Tables):
        super().__init__(fs)
        self.tables, self.files = tables, publisher_for(fs)

    def link(self, src: str, dst: str) -> None:
        self.files.link(src, dst)

    def publish(self, layout: OutputLayout, record: dict[str, Any]) -> dict[str, Any]:
        commit_id, base = record["commit_id"], record.get("table_base") or {}
        versions = {}
        for table in TABLES:
            done = self.tables.version_of_commit(table, commit_id, base.get(table))
            if done is None:
                files = self._place(layout, table, commit_id)
                done = self.tables.write_version(table, layout.run_date, files, base.get(table),
                                          commit_properties(record, table))
            versions[table] = done
        return versions

    def _place(self, layout: OutputLayout, table: str, commit_id: str) -> list[tuple[str, int, int]]:
        """Put the assembled files of `table` under its folder (names of this commit's own);
        returns them as (path relative to the table folder, bytes, rows)."""
        import pyarrow.parquet as pq

        staged = posixpath.join(layout.publish, table)
        out = []
        for src in sorted(p for p in self.fs.find(staged) if p.endswith(".parquet")):
            rel = posixpath.join(layout.partition, f"{commit_id[:8]}-{posixpath.basename(src)}")
            dst = posixpath.join(self.tables.folder(table), rel)
            if not self.fs.exists(dst):
                self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
                self.files.link(src, dst)
            with self.fs.open(dst, "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
            out.append((rel, self.fs.size(dst), rows))
        return out


def commit_properties(record: dict[str, Any], table: str) -> dict[str, str]:
    """What a table commit says about the night (strings: both formats' metadata are string maps)."""
    counts = record.get("counts") or {}
    return {"mmbatch.run_id": record["run_id"], "mmbatch.commit_id": record["commit_id"],
            "mmbatch.run_date": record["run_date"], "mmbatch.model_fingerprint": record["model_fingerprint"],
            "mmbatch.table": table, "mmbatch.operation": record.get("operation", "night"),
            **{f"mmbatch.{k}": str(v) for k, v in counts.items()},
            **{f"mmbatch.{k}": str(v) for k, v in (record.get("commit_notes") or {}).items()}}


def publisher_for(fs, tables: Tables | None = None) -> Publisher:
    if tables is not None and tables.commit_point == TABLE_LOG:
        return TablePublisher(fs, tables)
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
