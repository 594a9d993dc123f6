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


def read_manifest(fs, path: str, uri: str, *, max_rows: int = 1_000_000) -> list[dict[str, Any]]:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    low = path.lower()
    try:
        with fs.open(path, "rb") as fh:
            data = io.BytesIO(fh.read())
        if low.endswith(".csv"):
            table = pacsv.read_csv(data)
        elif low.endswith((".jsonl", ".ndjson")):
            table = pajson.read_json(data)
        else:
            table = pq.read_table(data)
    except FileNotFoundError:
        raise InputError(f"manifest not found: {uri}") from None
    except PermissionError as err:
        raise InputError(f"access denied reading manifest {uri}: {first_line(err, 200)}") from None
    except Exception as err:  # pyarrow parse errors, truncated Parquet, …
        raise InputError(f"unreadable manifest {uri}: {first_line(err)}") from None
    if "uri" not in table.column_names:
        raise InputError(f"manifest {uri} has no 'uri' column (columns: {table.column_names})")
    if table.num_rows > max_rows:
        raise InputError(f"manifest {uri} has {table.num_rows} rows, more than inputs.max_manifest_rows {max_rows}")
    rows = []
    base = posixpath.dirname(path)
    wanted = [c for c in ("uri", "video_id", "start_s", "end_s") if c in table.column_names]
    for i, row in enumerate(table.select(wanted).to_pylist()):
        target = row.get("uri")
        if not target:
            raise InputError(f"manifest {uri}: row {i + 1} has an empty uri")
        target = str(target)
        if "://" not in target and not target.startswith("/"):
            target = posixpath.join(base, target)
        segment = None
        if row.get("start_s") is not None and row.get("end_s") is not None:
            segment = (float(row["start_s"]), float(row["end_s"]))
            if not segment[1] > segment[0] >= 0:
                raise InputError(f"manifest {uri}: row {i + 1} has an invalid segment {segment}")
        rows.append({"uri": target, "video_id": row.get("video_id"), "segment": segment})
    if not rows:
        raise InputError(f"manifest {uri} lists no videos")
    merged: dict[str, dict[str, Any]] = {}
    for r in rows:  # one entry per video, its segments in order
        entry = merged.setdefault(r["uri"], {"uri": r["uri"], "video_id": r["video_id"], "segments": []})
        if r["segment"]:
            entry["segments"].append(r["segment"])
    return list(merged.values())
