"""Upkeep and undo of an output's tables: `mmbatch maintain` and `mmbatch rollback`.

- **maintain**: Delta vacuum / Iceberg snapshot expiry and orphan clean-up, per table, with a
  retention: superseded files stay readable (time travel, rollback) until it has passed.
- **rollback**: a date goes back to what it was before its latest night, as a new commit a table
  (the history keeps both). Rolling back again goes one night further back. Plain Parquet deletes
  superseded files when it publishes, so there is nothing to roll back to: refused, with the reason.

Both hold the date's lease (rollback) or every table's own commit check (maintain), so a running
night is never changed under it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
from typing import Any

from mmbatch import storage
from mmbatch.errors import ExitCode, OutputError
from mmbatch.night.lock import Lease
from mmbatch.night.publish import commit_properties
from mmbatch.night.runs import read_run_record
from mmbatch.output.layout import OutputLayout
from mmbatch.tables.formats import open_tables
from mmbatch.tables.tables import TABLE_LOG, TABLES, Tables

log = logging.getLogger(__name__)


class RollbackError(OutputError):
    """Nothing to roll back to: the format keeps no history, the date has no earlier night, or its
    files were removed by upkeep."""

    exit_code = ExitCode.USAGE  # nothing a rerun changes


def maintain(output: str, retention_hours: float, storage_options: dict | None = None,
             output_config=None) -> dict[str, Any]:
    """Upkeep of both tables; returns what was done per table."""
    tables = open_tables(output, storage_options, output_config)
    if tables.commit_point != TABLE_LOG:
        return {"format": tables.format, "note": "plain Parquet deletes superseded files when it publishes"}
    done: dict[str, Any] = {"format": tables.format, "retention_hours": retention_hours}
    for table in TABLES:
        done[table] = tables.maintain(table, retention_hours)
    return done


def rollback(output: str, run_date: dt.date, storage_options: dict | None = None, output_config=None,
             lease_ttl_s: float = 600) -> dict[str, Any]:
    """Restore the date to its content before its latest night that is not rolled back yet."""
    tables = open_tables(output, storage_options, output_config)
    if tables.commit_point != TABLE_LOG:
        raise RollbackError(f"the output {output} is plain Parquet, which deletes superseded files when it "
                            "publishes: there is no earlier version of a date to restore (use output.format "
                            "delta or iceberg for table history)")
    layout = OutputLayout(tables.root, run_date, f"{run_date.isoformat()}_rollback")
    lease = Lease(tables.fs, layout.lock, layout.run_id, ttl_s=lease_ttl_s, what=f"run date {run_date.isoformat()}")
    lease.acquire()
    try:
        plan = {table: _target(tables, table, run_date) for table in TABLES}
        versions = {}
        for table, (undone, files) in plan.items():
            base = tables.current(table)
            record = {"run_id": layout.run_id, "commit_id": f"rollback-{undone['commit_id']}",
                      "run_date": run_date.isoformat(), "model_fingerprint": undone.get("model_fingerprint", ""),
                      "operation": "rollback", "commit_notes": {"rolled_back": undone["commit_id"]}}
            lease.check()
            versions[table] = tables.write_version(table, run_date, files, base, commit_properties(record, table))
        undone_run = plan["videos"][0].get("run_id")
        _mark_rolled_back(tables, layout, undone_run)
    finally:
        lease.release()
    return {"run_date": run_date.isoformat(), "rolled_back_run": undone_run, "table_versions": versions}


def _target(tables: Tables, table: str, day: dt.date) -> tuple[dict[str, Any], list[tuple[str, int, int]]]:
    """(the night commit to undo, the date's files before it); refuses when the files are gone."""
    nights: list[dict[str, Any]] = []
    for c in tables.versions_of_date(table, day):
        if c.get("operation") == "rollback":
            nights = [n for n in nights if n["commit_id"] != c.get("rolled_back")]
        else:
            nights.append(c)
    if not nights:
        raise RollbackError(f"run date {day.isoformat()} has no committed night left to roll back in {table}")
    undo = nights[-1]
    files = tables.files_of_date(table, day, undo["before"]) if undo["before"] is not None else []
    missing = [p for p, _, _ in files if not tables.fs.exists(posixpath.join(tables.folder(table), p))]
    if missing:
        raise RollbackError(f"cannot roll {table} of {day.isoformat()} back: {len(missing)} of its earlier files "
                            f"were removed by upkeep (e.g. {missing[0]}); the retention of `mmbatch maintain` "
                            "bounds how far back a rollback reaches")
    return undo, files


def _mark_rolled_back(tables: Tables, layout: OutputLayout, run_id: str | None) -> None:
    """The undone run's record says so and the records it superseded are current again; the state
    table is rebuilt from the tables on its next read (it may name the undone run)."""
    fs = tables.fs
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for path in fs.glob(posixpath.join(layout.runs, layout.run_date.isoformat() + "_*.json")) if run_id else []:
        record = read_run_record(fs, path)
        if record is None:
            continue
        if record["run_id"] == run_id:
            record["rolled_back_at"] = now
        elif record.get("superseded_by") == run_id:
            record.pop("superseded_by", None)
            record.pop("superseded_at", None)
        else:
            continue
        storage.write_bytes_atomic(fs, path, json.dumps(record, indent=2, default=str).encode())
    if fs.exists(layout.state):
        fs.rm(layout.state)
