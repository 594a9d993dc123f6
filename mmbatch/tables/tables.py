"""How the output's two tables (`clips`, `videos`) are read: one `Tables` a run or reader, for the
output's format (`output.format`).

- `parquet`: plain hive folders; what a `run_date=D` folder holds is the date's committed night.
- `delta`, `iceberg` (delta.py, iceberg.py): the same folders hold the data files, but the table's
  log decides which of them are the night; superseded files stay on disk until upkeep removes
  them. So every reader in the project reads through this seam, never by listing folders.

`Tables.pin()` fixes the version a commit reads and builds on: a table commit succeeds only on top
of exactly that version (another run that committed meanwhile makes it fail, never merge).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
import re
from typing import Any

import pyarrow as pa

from mmbatch import storage
from mmbatch.errors import DamagedOutputError, OutputError
from mmbatch.schema import CLIPS_SCHEMA, PARTITION_COLUMN, VIDEOS_SCHEMA, file_schema

log = logging.getLogger(__name__)
TABLES = ("clips", "videos")
TABLE_SCHEMAS = {"clips": CLIPS_SCHEMA, "videos": VIDEOS_SCHEMA}


class TableConflictError(OutputError):
    """A table moved on after this run read it (another run committed the date meanwhile)."""

    @classmethod
    def of(cls, table: str, base: Any, why: str) -> "TableConflictError":
        return cls(f"{table} moved on after version {base} while this run committed (another run of the date "
                   f"wrote it): nothing of this run was committed; its staged work is kept, so a rerun commits "
                   f"it on top. ({why[:200]})")


# Where a night's commit point lies, one property of each output format (Tables.commit_point).
RUN_RECORD, TABLE_LOG = "run record", "table log"


class Tables:
    """The committed content of the output's tables, read through their format."""

    format = "parquet"
    commit_point = RUN_RECORD  # what commits a night: its run record, or (Delta, Iceberg) the tables' logs
    requires: tuple[str, str] | None = None  # (the module it needs, the pip extra that installs it)
    log_folder: str | None = None  # the folder in a table that marks this format (None: partitions alone)

    def __init__(self, fs, root: str, uri: str, storage_options: dict | None = None):
        self.fs, self.root, self.uri, self.storage_options = fs, root.rstrip("/"), uri, storage_options or {}
        self.pinned: dict[str, Any] = {}  # table formats: table -> the table at the version a commit builds on
        self._records: dict[str, dt.date] | None = None  # the run records' names, once read

    @classmethod
    def open(cls, fs, root: str, uri: str, storage_options: dict | None, output_config) -> Tables:
        """The output's tables in this format (output_config: an OutputConfig)."""
        return cls(fs, root, uri, storage_options)

    def folder(self, table: str) -> str:
        return posixpath.join(self.root, table)

    def uri_of(self, table: str) -> str:
        """The table's folder as table libraries take it: an absolute path, or `s3://bucket/...`."""
        if storage.is_local(self.uri):
            return os.path.abspath(self.folder(table))
        return f"{storage.protocol_of(self.uri)}://{self.folder(table)}"

    def exists(self, table: str) -> bool:
        raise NotImplementedError

    def check(self) -> None:
        """Reach the tables' store and catalog now (a wrong catalog fails before any work, and the
        format's library is loaded before the commit needs it); raises OutputError naming it, or
        DamagedOutputError naming a damaged table log or metadata file."""

    def checked(self, table: str, read, unreachable: str) -> None:
        """Table formats: `read()` reads the table's log or metadata through its library. A failure
        is DamagedOutputError naming the file when one of the table's own files is damaged or gone
        (a person must restore it: a rerun cannot), else OutputError (`unreachable`: exit 1, retried)."""
        from mmbatch.errors import short_reason

        try:
            read()
        except DamagedOutputError:
            raise
        except Exception as err:
            try:
                bad = self.damaged_metadata(table)
            except Exception:  # the store does not answer now: say what failed first
                bad = []
            if bad:
                raise damaged(bad, err, TABLE_LOG_ADVICE) from None
            if isinstance(err, FileNotFoundError):  # a file its log names is gone
                named = err.filename or next(iter(re.findall(r"'([^']+)'", str(err))), str(err))
                raise damaged([named], FileNotFoundError("named by the table's log, but gone"), TABLE_LOG_ADVICE) from None
            raise OutputError(f"{unreachable}: {short_reason(err, 300)}") from None

    def damaged_metadata(self, table: str) -> list[str]:
        """Table formats: the table's own log or metadata files that cannot be parsed, or a gap in them."""
        return []

    def holds_data(self, table: str) -> bool:
        """The table's folder holds data partitions (so a table that does not exist has lost its log)."""
        folder = self.folder(table)
        return self.fs.exists(folder) and any(
            posixpath.basename(p.rstrip("/")).startswith(PARTITION_COLUMN + "=") for p in self.fs.ls(folder, detail=False))

    def pin(self) -> dict[str, Any]:
        """Read (and until `unpin`, build on) the tables' current versions; returns them."""
        return {}

    def unpin(self) -> None:
        """Read the tables' latest versions again (after a commit)."""
        self.pinned = {}
        self._records = None

    def dates(self, table: str) -> list[dt.date]:
        """The dates with a committed night, in order."""
        raise NotImplementedError

    def read_date(self, table: str, day: dt.date, columns: list[str] | None = None) -> pa.Table | None:
        """The committed rows of one date (without `run_date`) in today's schema, or None for a date
        never committed."""
        target = file_schema(TABLE_SCHEMAS[table])
        if columns:
            target = pa.schema([target.field(c) for c in columns if c in target.names])
        try:
            t = self._read_date(table, day, target.names)
        except DamagedOutputError:
            raise
        except Exception as err:  # which file? the reader's message rarely says ('<Buffer>')
            bad = self.unreadable_files(table, day)
            if not bad:
                raise
            raise damaged(bad, err) from None
        return None if t is None else conform(t, target)

    def date_files(self, table: str, day: dt.date) -> list[str]:
        """The paths of the data files that make up the date's committed night."""
        return [posixpath.join(self.folder(table), path) for path, _, _ in self.files_of_date(table, day)]

    def unreadable_files(self, table: str, day: dt.date) -> list[str]:
        """The date's data files whose Parquet footer cannot be read (garbled, truncated, emptied, or
        listed but gone): a footer a file, a few small reads each, in parallel."""
        return storage.unreadable_parquet(self.fs, self.date_files(table, day))

    def _read_date(self, table: str, day: dt.date, columns: list[str]) -> pa.Table | None:
        raise NotImplementedError

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """Every committed row of the table in today's schema, `run_date` included (as a date)."""
        schema = TABLE_SCHEMAS[table]
        target = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        t = self._read_all(table, target.names)
        return target.empty_table() if t is None else conform(t, target)

    def _read_all(self, table: str, columns: list[str]) -> pa.Table | None:
        """Every committed row (any column order and types), date by date; formats read it at once."""
        parts = []
        for day in self.dates(table):
            t = self.read_date(table, day, [c for c in columns if c != PARTITION_COLUMN])
            if t is not None and t.num_rows:
                parts.append(t.append_column(PARTITION_COLUMN, pa.array([day] * t.num_rows, pa.date32())))
        return pa.concat_tables(parts) if parts else None

    # -- table formats only: versions written on a pinned version --------------------------------------
    def current(self, table: str) -> Any:
        """The table's version now (Delta: a number; Iceberg: a snapshot id); None: no table yet."""
        raise NotImplementedError

    def write_version(self, table: str, day: dt.date, files: list[tuple[str, int, int]], base: Any,
               properties: dict[str, str]) -> Any:
        """One table transaction on top of version `base` (None: create the table) that makes the date's files
        exactly `files` (path relative to the table folder, bytes, rows); returns the new version.
        Raises TableConflictError when the table is no longer at `base`."""
        raise NotImplementedError

    def version_of_commit(self, table: str, commit_id: str, after: Any = None) -> Any:
        """The version (newer than `after`) written for the night's `commit_id`, or None."""
        raise NotImplementedError

    def files_of_date(self, table: str, day: dt.date, version: Any = None) -> list[tuple[str, int, int]]:
        """The date's data files at `version` (now: None), as `write_version` takes them."""
        raise NotImplementedError

    def versions_of_date(self, table: str, day: dt.date) -> list[dict[str, Any]]:
        """mmbatch's commits of the date, oldest first: `version`, `before` (the version it was made
        on) and mmbatch's commit properties without their prefix (run_id, commit_id, operation, …)."""
        raise NotImplementedError

    def maintain(self, table: str, retention_hours: float) -> dict[str, Any]:
        """Upkeep of one table: history older than the retention expires and the data files that
        no remaining version uses are deleted. Returns what was done."""
        return {}


class ParquetTables(Tables):
    """Plain hive folders: each published `run_date=D` folder is exactly the committed night."""

    def exists(self, table: str) -> bool:
        return self.fs.exists(self.folder(table))

    def dates(self, table: str) -> list[dt.date]:
        if not self.exists(table):
            return []
        out = []
        for path in self.fs.ls(self.folder(table), detail=False):
            name = posixpath.basename(path.rstrip("/"))
            if name.startswith(PARTITION_COLUMN + "=") and not name.endswith(".old"):
                try:
                    out.append(dt.date.fromisoformat(name.split("=", 1)[1]))
                except ValueError:
                    log.warning("ignoring %s: not a partition of the %s table (run_date=YYYY-MM-DD)", path, table)
        return sorted(out)

    def date_files(self, table: str, day: dt.date) -> list[str]:
        """The folder's files and those its commit record lists (a listed file that is gone is
        reported unreadable); a file the record does not list is named in a warning (a stray copy:
        glob readers see its rows twice)."""
        folder = posixpath.join(self.folder(table), f"{PARTITION_COLUMN}={day.isoformat()}")
        found = sorted(self.fs.glob(posixpath.join(folder, "*.parquet"))) if self.fs.exists(folder) else []
        listed = self._committed_names(table, day, folder)
        if listed is None:
            return found
        for path in found:
            if posixpath.basename(path) not in listed:
                log.warning("%s is not among the files its night's commit record lists: a stray file, whose rows "
                            "readers of the folder see too; remove it (docs/operations.md, 'Damaged output files')", path)
        return sorted(set(found) | {posixpath.join(folder, name) for name in listed})

    def _committed_names(self, table: str, day: dt.date, folder: str) -> set[str] | None:
        """The file names the date's commit record lists (its `_SUCCESS` names the commit), or None
        when the marker or the record cannot be read."""
        from mmbatch.night.runs import list_run_records, read_run_record
        from mmbatch.output.layout import SUCCESS_MARKER

        try:
            commit_id = self.fs.cat_file(posixpath.join(folder, SUCCESS_MARKER)).decode().strip()
        except Exception:
            return None
        runs = posixpath.join(self.root, "_runs")
        if self._records is None:  # listed once a pin: the skip check asks for many dates
            self._records = list_run_records(self.fs, runs)
        for run_id, run_day in self._records.items():
            record = read_run_record(self.fs, posixpath.join(runs, f"{run_id}.json")) if run_day == day else None
            if record is not None and record.get("commit_id") == commit_id:
                outputs = record.get("outputs") or {}
                names = outputs.get("clip_files") if table == "clips" else [posixpath.basename(outputs.get("videos_file", ""))]
                return set(names) if isinstance(names, list) and all(isinstance(n, str) and n for n in names) else None
        return None

    def _read_date(self, table: str, day: dt.date, columns: list[str]) -> pa.Table | None:
        folder = posixpath.join(self.folder(table), f"{PARTITION_COLUMN}={day.isoformat()}")
        if not self.fs.exists(folder):
            return None
        target = file_schema(TABLE_SCHEMAS[table])
        target = pa.schema([target.field(c) for c in columns])
        parts = [conform(storage.read_parquet(self.fs, path), target)  # files of older schema versions too
                 for path in sorted(self.fs.glob(posixpath.join(folder, "*.parquet")))]
        return pa.concat_tables(parts) if parts else None


DATA_FILE_ADVICE = "restore it from a backup, or move it aside and rerun its date with all its inputs"
TABLE_LOG_ADVICE = "restore it from a backup or the object store's versions: a rerun cannot rebuild a table's log"


def damaged(paths: list[str], err: BaseException | None = None, advice: str = DATA_FILE_ADVICE) -> DamagedOutputError:
    """The error that names the output's unreadable files and what a person does about them."""
    from mmbatch.errors import short_reason

    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    why = f" ({short_reason(err, 200)})" if err is not None else ""
    return DamagedOutputError(f"the output's file {paths[0]}{more} cannot be read{why}: {advice} "
                              "(docs/operations.md, 'Damaged output files')")


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Rows written by an older schema version, in today's: columns it lacked are null, types
    are cast (v1's fixed-size embedding lists to lists)."""
    n = table.num_rows
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type) for f in target]
    return pa.Table.from_arrays(columns, schema=target)
