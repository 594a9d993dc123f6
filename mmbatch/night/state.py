"""Incremental state: one row per video ever scored ok — its last committed run, etag, size
and model fingerprint. The skip check reads this table (with column projection), so its
cost grows with the number of videos, not with the number of nights.

The commit rewrites it from the previous state plus the night's `videos` partition. The
run ids merged are kept in the file's metadata; a committed run that is missing there (its
state update failed) is merged the next time the state is read, and a missing state table is
built once from every `videos` partition.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmbatch import storage
from mmbatch.errors import DamagedOutputError
from mmbatch.night.runs import list_run_records
from mmbatch.output.layout import OutputLayout
from mmbatch.schema import STATE_SCHEMA
from mmbatch.tables.tables import TABLE_LOG, Tables, damaged

log = logging.getLogger(__name__)
METADATA_RUNS = b"mmbatch.state_runs"
_COLUMNS = [f.name for f in STATE_SCHEMA if f.name != "run_date"]


def _partition_rows(tables: Tables, run_date: dt.date) -> pa.Table:
    """Scored-ok rows of the committed `videos` of one date, as state rows. A date whose `videos`
    file is unreadable adds none (its videos are scored again, not skipped), with a warning naming it."""
    try:
        t = tables.read_date("videos", run_date, [*_COLUMNS, "status", "n_clips"])
    except DamagedOutputError as err:
        log.warning("the state table leaves out the night of %s: %s", run_date, err)
        return STATE_SCHEMA.empty_table()
    if t is None:
        return STATE_SCHEMA.empty_table()
    t = t.filter(pc.and_(pc.equal(t["status"], "ok"), pc.greater(t["n_clips"], 0))).select(_COLUMNS)
    return t.append_column("run_date", pa.array([run_date] * t.num_rows, pa.date32())).cast(STATE_SCHEMA)


def merge(state: pa.Table, night: pa.Table) -> pa.Table:
    """Latest run_date per video; on a tie the night being merged wins."""
    both = pa.concat_tables([state.select(STATE_SCHEMA.names), night.select(STATE_SCHEMA.names)])
    both = both.append_column("_order", pa.array(range(both.num_rows), pa.int64()))
    both = both.sort_by([("video_id", "ascending"), ("run_date", "ascending"), ("_order", "ascending")])
    vids = both["video_id"]
    if both.num_rows == 0:
        return STATE_SCHEMA.empty_table()
    last = pc.not_equal(vids.slice(0, both.num_rows - 1), vids.slice(1))  # row i is the last of its video
    keep = pa.concat_arrays([pa.array(last.to_numpy(zero_copy_only=False), pa.bool_()), pa.array([True])])
    return both.filter(keep).drop_columns(["_order"])


def read_state(fs, layout: OutputLayout, tables: Tables) -> tuple[pa.Table, set[str]]:
    """The state table and the run ids merged into it, caught up with `_runs/`."""
    merged: set[str] = set()
    try:
        data = fs.cat_file(layout.state)
        pf = pq.ParquetFile(io.BytesIO(data))
        table = pf.read(columns=STATE_SCHEMA.names).cast(STATE_SCHEMA)
        merged = set(json.loads((pf.schema_arrow.metadata or {}).get(METADATA_RUNS, b"[]")))
    except FileNotFoundError:
        table = None
    except Exception as err:  # damaged: rebuilt from the partitions, which are the truth
        log.warning("state table %s unreadable (%s); rebuilding it from the videos partitions", layout.state, err)
        table = None
    runs = list_run_records(fs, layout.runs)
    if table is None:  # built once from every published partition (all of them committed)
        table = STATE_SCHEMA.empty_table()
        days = tables.dates("videos")
        if days:
            table = merge(table, pa.concat_tables([_partition_rows(tables, d) for d in days]))
        return table, set(runs)
    missing = sorted({runs[r] for r in set(runs) - merged})
    for date in missing:  # committed, but its state update never landed
        table = merge(table, _partition_rows(tables, date))
    return table, merged | set(runs)


def write_state(fs, layout: OutputLayout, table: pa.Table, merged: set[str]) -> None:
    meta = {METADATA_RUNS: json.dumps(sorted(merged)).encode()}
    storage.write_parquet(fs, layout.state, table.cast(STATE_SCHEMA).replace_schema_metadata(meta))


def update_state(fs, layout: OutputLayout, tables: Tables) -> int:
    """Merge the night's published `videos` partition into the state table; returns its rows."""
    table, merged = read_state(fs, layout, tables)
    table = merge(table, _partition_rows(tables, layout.run_date))
    write_state(fs, layout, table, merged | {layout.run_id})
    return table.num_rows


# The state table's own lease: one night merges at a time; a merge takes seconds, so a lease this
# long outlives one, and a night that waits this long for another's merge gives up (not fatal).
STATE_LEASE_TTL_S, STATE_LEASE_WAIT_S = 120.0, 300.0


def update_state_held(fs, layout: OutputLayout, tables: Tables) -> int:
    """`update_state` under the state table's lease (other nights of the output merge too)."""
    from mmbatch.night.lock import Lease

    lease = Lease(fs, layout.state_lock, layout.run_id, ttl_s=STATE_LEASE_TTL_S, what="the state table")
    lease.acquire_waiting(timeout_s=STATE_LEASE_WAIT_S)
    try:
        return update_state(fs, layout, tables)
    finally:
        lease.release()


def skip_candidates(fs, layout: OutputLayout, tables: Tables, video_ids: list[str]) -> dict[str, dict]:
    """State rows of the given videos (the only part of the state the driver turns into dicts)."""
    table, _ = read_state(fs, layout, tables)
    if table.num_rows == 0 or not video_ids:
        return {}
    table = table.filter(pc.is_in(table["video_id"], value_set=pa.array(video_ids, pa.string())))
    return {r["video_id"]: r for r in table.to_pylist()}


def skipped_videos(fs, layout: OutputLayout, tables: Tables, refs: list, done: dict,
                   fingerprint: str) -> dict[str, dict]:
    """Videos (refs: VideoRef) scored ok on an earlier night than the layout's from the same
    content and models: their state rows. Videos in `done` (finished tonight) are not looked up."""
    previous = skip_candidates(fs, layout, tables, [r.video_id for r in refs if r.video_id not in done])
    later = sorted({p["run_date"] for p in previous.values() if p["run_date"] > layout.run_date})
    if later:
        n = sum(1 for p in previous.values() if p["run_date"] > layout.run_date)
        log.warning("%d of these videos were last scored on a later night than %s (%s): they are scored again, not "
                    "skipped; if that night's date was a mistake, remove its partitions and run record "
                    "(docs/operations.md, 'A night with a wrong date')", n, layout.run_date,
                    ", ".join(d.isoformat() for d in later[:5]) + (" …" if len(later) > 5 else ""))
    skipped = {}
    for ref in refs:
        prev = previous.get(ref.video_id)
        if (prev and prev["run_date"] < layout.run_date and prev["model_fingerprint"] == fingerprint
                and ref.same_content(prev["etag"], prev["size_bytes"])):
            skipped[ref.video_id] = prev
    return _with_readable_clips(tables, skipped)


def _with_readable_clips(tables: Tables, skipped: dict[str, dict]) -> dict[str, dict]:
    """A video is skipped only while the night that scored it can still be read: a date with an
    unreadable clips file gives its videos back to be scored again, with a warning naming the file
    (the file itself is for a person to restore or remove: docs/operations.md)."""
    from concurrent.futures import ThreadPoolExecutor

    days = sorted({prev["run_date"] for prev in skipped.values()})
    # A night's listing and footers a thread (many nights cost seconds, not minutes); a table format's
    # catalog or log reader is not shared across threads.
    with ThreadPoolExecutor(max_workers=1 if tables.commit_point == TABLE_LOG else 8) as pool:
        unreadable = list(pool.map(lambda d: tables.unreadable_files("clips", d) + tables.unreadable_files("videos", d),
                                   days))
    for day, bad in zip(days, unreadable):
        if bad:
            back = [vid for vid, prev in skipped.items() if prev["run_date"] == day]
            log.warning("%s; the %d videos last scored on %s are scored again tonight instead of skipped",
                        damaged(bad), len(back), day)
            for vid in back:
                del skipped[vid]
    return skipped
