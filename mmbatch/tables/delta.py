"""`output.format: delta`: each table (`clips`, `videos`) is a Delta Lake table at `<output>/<table>`,
partitioned by `run_date`.

The workers' Parquet files are the table's data files. A night is one Delta commit a table: it adds
the night's files and removes the date's superseded ones (a partition overwrite), with the run id,
commit id, fingerprint and counts in the commit's metadata. The commit is made on the exact version
the run read (`max_commit_retries=0`): a run that lost a race fails, it never merges into the other.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from typing import Any

import pyarrow as pa

from mmbatch import storage
from mmbatch.schema import PARTITION_COLUMN
from mmbatch.tables import damage
from mmbatch.tables.tables import TABLE_LOG, TABLE_LOG_ADVICE, TABLE_SCHEMAS, TABLES, TableConflictError, Tables, damaged

COMMIT_ID_KEY = "mmbatch.commit_id"
RUN_DATE_KEY = "mmbatch.run_date"


def _ours(entry: dict[str, Any]) -> dict[str, Any]:
    """mmbatch's keys of a commit's metadata, without the prefix."""
    return {k.split(".", 1)[1]: v for k, v in entry.items() if k.startswith("mmbatch.")}


OBJECT_STORE_NAMES = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN",
                      "endpoint": "AWS_ENDPOINT_URL", "region": "AWS_REGION"}


def object_store_options(storage_options: dict | None) -> dict[str, str]:
    """s3fs-style storage options as delta-rs's (Rust object_store) options."""
    s3 = storage.s3_settings(storage_options)
    out = {OBJECT_STORE_NAMES[k]: v for k, v in s3.items()}
    if s3.get("endpoint", "").startswith("http://"):
        out["AWS_ALLOW_HTTP"] = "true"
    return out


class DeltaTables(Tables):
    format = "delta"
    commit_point = TABLE_LOG
    requires, log_folder = ("deltalake", "delta"), "_delta_log"

    def __init__(self, fs, root: str, uri: str, storage_options: dict | None = None):
        super().__init__(fs, root, uri, storage_options)
        self.options = object_store_options(storage_options)

    def exists(self, table: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.uri_of(table), storage_options=self.options)

    def check(self) -> None:
        for table in TABLES:
            self.checked(table, lambda t=table: self._read_log(t), f"cannot read the Delta table {self.uri_of(table)}")

    def _read_log(self, table: str) -> None:
        """The whole log as the commit will read it; a folder with data but no log is damaged."""
        if self.exists(table):
            self._actions(table)
        elif self.holds_data(table):
            raise damaged([posixpath.join(self.folder(table), "_delta_log")], FileNotFoundError(
                "the table's folder holds data partitions but no Delta log"), TABLE_LOG_ADVICE)

    def damaged_metadata(self, table: str) -> list[str]:
        return damage.delta_damaged(self.fs, posixpath.join(self.folder(table), "_delta_log"))

    def load(self, table: str, version: int | None = None):
        """The table now (or at `version`); None where it does not exist yet."""
        from deltalake import DeltaTable

        if table in self.pinned and version is None:
            return self.pinned[table]
        if not self.exists(table):
            return None
        return DeltaTable(self.uri_of(table), version=version, storage_options=self.options)

    def pin(self) -> dict[str, Any]:
        self.pinned = {}
        self.pinned = {t: self.load(t) for t in TABLES}
        return {t: (d.version() if d is not None else None) for t, d in self.pinned.items()}

    def _actions(self, table: str, version: int | None = None) -> list[dict[str, Any]]:
        d = self.load(table, version)
        if d is None:
            return []
        columns = ["path", "size_bytes", "num_records", f"partition.{PARTITION_COLUMN}"]  # not the column stats
        return pa.table(d.get_add_actions(flatten=True)).select(columns).to_pylist()

    def dates(self, table: str) -> list[dt.date]:
        return sorted({a[f"partition.{PARTITION_COLUMN}"] for a in self._actions(table)} - {None})

    def _read_date(self, table: str, day: dt.date, columns: list[str]) -> pa.Table | None:
        d = self.load(table)
        if d is None or day not in self.dates(table):
            return None
        import pyarrow.dataset as pads

        t = d.to_pyarrow_dataset().to_table(columns=columns, filter=pads.field(PARTITION_COLUMN) == day)
        return t.drop_columns([PARTITION_COLUMN]) if PARTITION_COLUMN in t.column_names else t

    def _read_all(self, table: str, columns: list[str]) -> pa.Table | None:
        d = self.load(table)
        return None if d is None else d.to_pyarrow_dataset().to_table(columns=columns)

    def files_of_date(self, table: str, day: dt.date, version: int | None = None) -> list[tuple[str, int, int]]:
        return sorted((a["path"], a["size_bytes"], a["num_records"]) for a in self._actions(table, version)
                      if a[f"partition.{PARTITION_COLUMN}"] == day)

    def versions_of_date(self, table: str, day: dt.date) -> list[dict[str, Any]]:
        out = []
        for entry in reversed(self.history(table)):
            if entry.get(RUN_DATE_KEY) == day.isoformat():
                v = int(entry["version"])
                out.append({"version": v, "before": v - 1 if v > 0 else None, **_ours(entry)})
        return out

    def history(self, table: str, after: int | None = None) -> list[dict[str, Any]]:
        """Commits newer than version `after` (all: None), newest first, with mmbatch's metadata."""
        d = _fresh(self, table)
        if d is None:
            return []
        return d.history(limit=None if after is None else max(d.version() - after, 0))

    def write_version(self, table: str, day: dt.date, files: list[tuple[str, int, int]], base: int | None,
               properties: dict[str, str]) -> int:
        """One commit on top of version `base` (None: the table is created): the date's files become
        exactly `files` (path relative to the table, bytes, rows). Returns the new version."""
        from deltalake import CommitProperties, Schema
        from deltalake.transaction import AddAction, create_table_with_add_actions

        now = int(dt.datetime.now().timestamp() * 1000)
        adds = [AddAction(p, size, {PARTITION_COLUMN: day.isoformat()}, now, True, json.dumps({"numRecords": rows}))
                for p, size, rows in files]
        props = CommitProperties(custom_metadata=properties, max_commit_retries=0)
        schema = TABLE_SCHEMAS[table]
        try:
            if base is None:
                create_table_with_add_actions(self.uri_of(table), Schema.from_arrow(schema), adds, mode="error",
                                              partition_by=[PARTITION_COLUMN], storage_options=self.options,
                                              commit_properties=props)
            else:
                d = self.load(table, base)
                d.create_write_transaction(adds, mode="overwrite", schema=schema, partition_by=[PARTITION_COLUMN],
                                           partition_filters=[(PARTITION_COLUMN, "=", day.isoformat())],
                                           commit_properties=props)
        except Exception as err:
            if "already exists" in str(err) or type(err).__name__ == "CommitFailedError":
                raise TableConflictError.of(f"the Delta table {self.uri_of(table)}", base, str(err)) from None
            raise
        return self.version_of_commit(table, properties[COMMIT_ID_KEY], base)

    def version_of_commit(self, table: str, commit_id: str, after: int | None = None) -> int | None:
        """The version after `after` whose commit carries `commit_id`, or None."""
        for entry in self.history(table, after):
            if entry.get(COMMIT_ID_KEY) == commit_id:
                return int(entry["version"])
        return None

    def maintain(self, table: str, retention_hours: float) -> dict[str, Any]:
        """Vacuum (`full`: files no version references, e.g. from a commit that lost a race, go too)
        and a checkpoint, so readers replay a short log."""
        d = _fresh(self, table)
        if d is None:
            return {}
        removed = d.vacuum(retention_hours=int(retention_hours), dry_run=False, enforce_retention_duration=False,
                           full=True)
        d.create_checkpoint()
        # a file removed twice in the history is listed twice, once by its absolute path
        removed = {p.removeprefix(self.uri_of(table).rstrip("/") + "/") for p in removed}
        return {"removed_files": len(removed), "version": d.version()}

    def current(self, table: str) -> int | None:
        d = _fresh(self, table)
        return None if d is None else d.version()


def _fresh(tables: DeltaTables, table: str):
    """The table's latest version, never the pinned one."""
    from deltalake import DeltaTable

    if not tables.exists(table):
        return None
    return DeltaTable(tables.uri_of(table), storage_options=tables.options)
