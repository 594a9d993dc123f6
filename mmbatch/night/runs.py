"""The run records under `_runs/`: one JSON manifest a run, written as the commit record.

A run's record lists the exact files of its night, its counts and what scored them. Nothing of
a night is visible before its record exists; a later run of the same date marks earlier records
`superseded_by` itself. Readers (the report, training, the next run's roll-forward) go through
`read_run_record`, which never fails on a damaged record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
import re
from typing import Any

from mmbatch import schema, storage
from mmbatch.night.reconcile import Reconciled
from mmbatch.output.layout import OutputLayout

log = logging.getLogger(__name__)
# `<run date>_<fingerprint>`: the only names a run record has (layout.run_id_for).
RUN_ID_PATTERN = re.compile(r"(\d{4}-\d{2}-\d{2})_[0-9A-Za-z]+")
# Fields every reader of a record relies on, with their types.
_REQUIRED_FIELDS = {"run_id": str, "run_date": str, "model_fingerprint": str, "counts": dict}


def run_date_of(run_id: str) -> dt.date | None:
    """The date a run id names, or None when it is not a run id."""
    match = RUN_ID_PATTERN.fullmatch(run_id)
    if match is None:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def list_run_records(fs, runs_dir: str) -> dict[str, dt.date]:
    """run_id -> run_date of every record in `_runs/`, by name; a stray file (`latest.json`, a
    copy) is left out with a warning naming it, never parsed as a run."""
    if not fs.exists(runs_dir):
        return {}
    out = {}
    for path in sorted(fs.glob(posixpath.join(runs_dir, "*.json"))):
        run_id = posixpath.basename(path)[: -len(".json")]
        day = run_date_of(run_id)
        if day is None:
            log.warning("ignoring %s: not a run record (records are named <run date>_<fingerprint>.json)", path)
            continue
        out[run_id] = day
    return out


def read_run_record(fs, path: str) -> dict | None:
    """A run record, or None (with a warning naming the file) when it is damaged, a stray copy
    of another run's record, or lacks the fields readers rely on: never fatal."""
    try:
        data = json.loads(fs.cat_file(path))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for name, kind in _REQUIRED_FIELDS.items():
            if not isinstance(data.get(name), kind):
                raise ValueError(f"field {name!r} missing or not a {kind.__name__}")
        if run_date_of(data["run_id"]) is None or run_date_of(data["run_id"]).isoformat() != data["run_date"]:
            raise ValueError(f"run_id {data['run_id']!r} and run_date {data['run_date']!r} do not agree")
        if posixpath.basename(path) not in (f"{data['run_id']}.json", "commit.json"):
            raise ValueError(f"it holds the record of run {data['run_id']} (a stray copy)")
        return data
    except FileNotFoundError:
        return None
    except Exception as err:
        log.warning("skipping damaged run record %s: %s", path, str(err)[:200])
        return None


def write_run_record(fs, layout: OutputLayout, manifest: dict[str, Any]) -> None:
    storage.write_bytes_atomic(fs, layout.manifest, json.dumps(manifest, indent=2, default=str).encode())


def write_intent(fs, layout: OutputLayout, manifest: dict[str, Any]) -> None:
    """Delta/Iceberg: the record of a night about to be committed to the tables (not a commit yet)."""
    storage.write_bytes_atomic(fs, layout.intent, json.dumps(manifest, indent=2, default=str).encode())


def drop_intent(fs, layout: OutputLayout) -> None:
    if fs.exists(layout.intent):
        fs.rm(layout.intent)


def pending_record(fs, layout: OutputLayout, intent_first: bool) -> dict | None:
    """The record of a run whose publish may be unfinished: its commit record (plain Parquet),
    or its intent, else its commit record (tables: committed, clean-up left)."""
    if intent_first:
        intent = read_run_record(fs, layout.intent)
        if intent is not None:
            return intent
    return read_run_record(fs, layout.manifest)


def build_run_record(layout: OutputLayout, fingerprint: str, commit_id: str, night: Reconciled, files: list[str],
                     extra: dict[str, Any]) -> dict[str, Any]:
    """The commit record of an assembled night; `extra`: what the run adds (config, timings, …)."""
    return {
        "run_id": layout.run_id, "commit_id": commit_id, "run_date": layout.run_date.isoformat(),
        "model_fingerprint": fingerprint, "schema_version": schema.SCHEMA_VERSION,
        "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "counts": night.counts,
        "modalities": {m: {"scored": c.scored, "failed": c.failed, "failed_fraction": c.failed_fraction}
                       for m, c in night.modalities.items()},
        "kept_after_failure": night.kept, "carried_over": night.carried,
        "outputs": {"clips": layout.clips, "videos": layout.videos, "clip_files": sorted(files),
                    "videos_file": layout.videos_file, "manifest": layout.manifest},
        "cleanup_warnings": [],  # filled in (the record rewritten) only if clean-up after the commit fails
        **extra,
    }


def keep_replaced(fs, layout: OutputLayout, manifest: dict[str, Any]) -> None:
    """Before this commit's record takes `_runs/<run_id>.json`: a record there of an earlier commit
    of the same run id (a rerun of the date) is kept, with its report, under `_runs/<run_id>/`, and
    this record names it (`replaced`). Done again after a crash, to the same names."""
    earlier = read_run_record(fs, layout.manifest)
    if earlier is None or earlier.get("commit_id") in (None, manifest["commit_id"]):
        return
    if not _is_commit_id(earlier["commit_id"]):  # the record is output, so untrusted: never a path of its making
        log.warning("not keeping the earlier record %s: its commit_id %r is not one mmbatch writes",
                    layout.manifest, str(earlier["commit_id"])[:80])
        return
    storage.write_bytes_atomic(fs, layout.replaced_record(earlier["commit_id"]),
                               json.dumps(earlier, indent=2, default=str).encode())
    report = layout.manifest[: -len(".json")] + ".html"
    if fs.exists(report):
        storage.write_bytes_atomic(fs, layout.replaced_record(earlier["commit_id"], ".html"), fs.cat_file(report))
    manifest["replaced"] = {"commit_id": earlier["commit_id"], "committed_at": earlier.get("committed_at"),
                            "counts": earlier.get("counts"), "record": layout.replaced_record(earlier["commit_id"])}


def _is_commit_id(value) -> bool:
    import uuid

    try:
        return str(uuid.UUID(str(value))) == value
    except ValueError:
        return False


def mark_superseded(fs, layout: OutputLayout, manifest: dict[str, Any]) -> None:
    """Earlier records of the date say which run superseded them."""
    prefix = posixpath.join(layout.runs, layout.run_date.isoformat() + "_")
    for path in fs.glob(prefix + "*.json"):
        if path == layout.manifest:
            continue
        other = read_run_record(fs, path)
        if other is None or other.get("superseded_by"):
            continue
        other["superseded_by"] = manifest["run_id"]
        other["superseded_at"] = manifest["committed_at"]
        storage.write_bytes_atomic(fs, path, json.dumps(other, indent=2, default=str).encode())


def degraded_reasons(record: dict[str, Any], max_failed_fraction: float, max_modality_failed_fraction: float) -> list[str]:
    """Why a committed night counts as degraded (exit 3), most serious first; [] when it is not. The
    command's exit code and the night's report read the same rule."""
    reasons = []
    if record.get("state_updated") is False:
        reasons.append("committed, but the state table was not updated (see cleanup_warnings in the run record); "
                       "the next run brings it up to date without rescoring")
    c = record.get("counts") or {}
    attempted = c.get("scored", 0) + c.get("failed", 0)
    failed_fraction = c.get("failed", 0) / attempted if attempted else 0.0
    if failed_fraction > max_failed_fraction:
        reasons.append(f"{c.get('failed', 0)} of {attempted} videos failed ({failed_fraction:.0%} > max-failed-fraction "
                       f"{max_failed_fraction:.0%}); see the videos table")
    modalities = {m: v["failed_fraction"] for m, v in (record.get("modalities") or {}).items()
                  if v.get("failed_fraction", 0) > max_modality_failed_fraction}
    if modalities:
        which = ", ".join(f"{m} on {share:.0%} of clips" for m, share in modalities.items())
        reasons.append(f"committed, but degraded: {which} failed (> run.max_modality_failed_fraction "
                       f"{max_modality_failed_fraction:.0%}); the reasons are in clips.<modality>_error")
    return reasons
