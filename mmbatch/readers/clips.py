"""Reading an output's committed clips back, whatever its format (plain Parquet, Delta, Iceberg):
`mmbatch.read_clips(root)` for notebooks and scripts. Only committed nights are read, in today's
schema (columns a night's files lack read as null)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def read_clips(root: str, run_date: dt.date | str | Iterable | None = None, *, columns: list[str] | None = None,
               storage_options: dict | None = None):
    """The `clips` rows of `run_date` (a date, several, or None: every committed night) as one
    pyarrow Table with its `run_date` column. `.to_pandas()` for a DataFrame."""
    import pyarrow as pa

    from mmbatch.schema import CLIPS_SCHEMA, PARTITION_COLUMN, file_schema
    from mmbatch.tables.formats import open_tables

    tables = open_tables(str(root), storage_options)
    if run_date is None:
        days = tables.dates("clips")
    else:
        days = [run_date] if isinstance(run_date, (dt.date, str)) else list(run_date)
        days = [dt.date.fromisoformat(d) if isinstance(d, str) else d for d in days]
    target = file_schema(CLIPS_SCHEMA)
    target = pa.schema([target.field(c) for c in columns]) if columns else target
    parts = []
    for day in days:
        t = tables.read_date("clips", day, columns)
        if t is not None and t.num_rows:
            parts.append(t.append_column(PARTITION_COLUMN, pa.array([day] * t.num_rows, pa.date32())))
    if not parts:
        return target.append(pa.field(PARTITION_COLUMN, pa.date32())).empty_table()
    return pa.concat_tables(parts)
