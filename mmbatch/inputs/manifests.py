"""Manifest inputs: a CSV, JSONL or Parquet file listing videos.

Columns: `uri` (required; absolute, or relative to the manifest's folder) and optionally
`video_id`, and `start_s`/`end_s` for the `segments` clip policy (one row per segment; rows
with the same uri form one video). Any other columns are ignored. A manifest that cannot be read, or has no `uri`
column, stops the run before any work starts, naming the manifest and the cause.
"""

from __future__ import annotations

import io
import posixpath
from typing import Any

from mmbatch.errors import InputError, first_line

MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson", ".parquet")


def is_manifest(path: str) -> bool:
    return path.lower().endswith(MANIFEST_EXTENSIONS)


def read_manifest(fs, path: str, uri: str, *, max_rows: int = 1_000_000,
                  max_bytes: int = 256 << 20) -> list[dict[str, Any]]:
    """The videos a manifest lists, one entry per uri with its segments. At most `max_bytes` are
    read, and parsing is linear in them (pyarrow's readers, then one pass over the rows); any
    malformed content is an InputError naming the manifest."""
    columns, rows = _read_rows(fs, path, uri, max_bytes)
    if "uri" not in columns:
        raise InputError(f"manifest {uri} has no 'uri' column (columns: {columns[:20]})")
    if len(rows) > max_rows:
        raise InputError(f"manifest {uri} has {len(rows)} rows, more than inputs.max_manifest_rows {max_rows}")
    base = posixpath.dirname(path)
    merged: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        r = _row(row, i, uri, base)
        entry = merged.setdefault(r["uri"], {"uri": r["uri"], "video_id": r["video_id"], "segments": []})
        if r["segment"]:  # one entry per video, its segments in order
            entry["segments"].append(r["segment"])
    if not merged:
        raise InputError(f"manifest {uri} lists no videos")
    return list(merged.values())


def _row(row: dict[str, Any], i: int, uri: str, base: str) -> dict[str, Any]:
    target = row.get("uri")
    if not target:
        raise InputError(f"manifest {uri}: row {i + 1} has an empty uri")
    target = str(target)
    if "://" not in target and not target.startswith("/"):
        target = posixpath.join(base, target)
    segment = None
    if row.get("start_s") is not None and row.get("end_s") is not None:
        try:
            segment = (float(row["start_s"]), float(row["end_s"]))
        except (TypeError, ValueError):
            raise InputError(f"manifest {uri}: row {i + 1} has a segment that is not numbers") from None
        if not segment[1] > segment[0] >= 0:
            raise InputError(f"manifest {uri}: row {i + 1} has an invalid segment {segment}")
    return {"uri": target, "video_id": row.get("video_id"), "segment": segment}


WANTED = ("uri", "video_id", "start_s", "end_s")


def _read_rows(fs, path: str, uri: str, max_bytes: int) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows of the wanted columns). CSV and Parquet through pyarrow; JSON lines
    through Python's json (pyarrow 26's JSON reader crashes the process on a line that is
    `null`), each line an object."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    low = path.lower()
    try:
        with fs.open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise InputError(f"manifest {uri} is larger than inputs.max_manifest_bytes ({max_bytes})")
        if low.endswith((".jsonl", ".ndjson")):
            return _json_lines(raw, uri)
        table = pacsv.read_csv(io.BytesIO(raw)) if low.endswith(".csv") else pq.read_table(io.BytesIO(raw))
        columns = table.column_names  # decodes the header: a non-UTF-8 column name raises here
        wanted = [c for c in WANTED if c in columns]
        twice = [c for c in wanted if columns.count(c) > 1]
        if twice:
            raise InputError(f"manifest {uri} has the column {twice[0]!r} more than once")
        return columns, table.select(wanted).to_pylist()
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"manifest not found: {uri}") from None
    except PermissionError as err:
        raise InputError(f"access denied reading manifest {uri}: {first_line(err, 200)}") from None
    except Exception as err:  # pyarrow parse errors, truncated Parquet, …
        raise InputError(f"unreadable manifest {uri}: {first_line(err)}") from None


def _json_lines(raw: bytes, uri: str) -> tuple[list[str], list[dict[str, Any]]]:
    import json

    columns: dict[str, None] = {}
    rows = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise InputError(f"unreadable manifest {uri}: line {number} is not JSON ({first_line(err, 100)})") from None
        if not isinstance(row, dict):
            raise InputError(f"unreadable manifest {uri}: line {number} is not a JSON object")
        columns.update(dict.fromkeys(row))
        rows.append({c: row[c] for c in WANTED if c in row})
    return list(columns), rows
