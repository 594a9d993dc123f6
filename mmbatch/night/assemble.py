"""Assemble the night's next partitions under `_staging/<run_id>/publish/`, before the commit.

Staged part files are linked (or copied) in; a part that also holds rows that must not be
published (a video redone after a crash, a failure that keeps its earlier result) is rewritten
without them; rows carried from the date's current partition go to one file; then
`videos.parquet` and a `_SUCCESS` marker holding the commit id in each table's folder.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mmbatch import storage
from mmbatch.night.publish import Publisher
from mmbatch.night.reconcile import Reconciled, carry_ids
from mmbatch.output.layout import SUCCESS_MARKER, OutputLayout
from mmbatch.output.records import VideoOutcome, VideoRow
from mmbatch.tables.tables import Tables, conform


@dataclass(frozen=True)
class PublishTarget:
    """Where a night's files are assembled and how: the output's filesystem, the run's layout, the
    publisher that links files in, the tables that carried rows are read from, the files' schemas."""

    fs: object
    layout: OutputLayout
    publisher: Publisher
    tables: Tables
    clips_schema: pa.Schema
    videos_schema: pa.Schema


@dataclass(frozen=True)
class Assembled:
    commit_id: str
    clip_files: list[str]  # names of the clip files of the night


def published_videos(tables: Tables, layout: OutputLayout) -> dict[str, VideoRow]:
    """The `videos` rows of the date as committed now (empty for a new date)."""
    t = tables.read_date("videos", layout.run_date)
    return {} if t is None else {row["video_id"]: VideoRow.from_dict(row) for row in t.to_pylist()}


def assemble(target: PublishTarget, night: Reconciled, outcomes: dict[str, VideoOutcome],
             previous: dict[str, VideoRow]) -> Assembled:
    fs, layout, videos_schema = target.fs, target.layout, target.videos_schema
    if fs.exists(layout.publish):
        fs.rm(layout.publish, recursive=True)  # a commit attempt that never wrote its record
    clips_dir, videos_dir = posixpath.join(layout.publish, "clips"), posixpath.join(layout.publish, "videos")
    fs.makedirs(clips_dir, exist_ok=True)
    fs.makedirs(videos_dir, exist_ok=True)
    files = _stage_parts(target, outcomes, set(night.kept), clips_dir)
    carried = carry_ids(night, previous)
    if carried:
        files.append(_carry(target, carried, clips_dir))
    rows = [r.to_dict() for r in night.rows]
    rows = [{k: row.get(k) for k in videos_schema.names} for row in rows]
    storage.write_parquet(fs, posixpath.join(videos_dir, "videos.parquet"), pa.Table.from_pylist(rows, schema=videos_schema))
    commit_id = str(uuid.uuid4())
    for d in (clips_dir, videos_dir):
        storage.write_bytes_atomic(fs, posixpath.join(d, SUCCESS_MARKER), commit_id.encode())
    return Assembled(commit_id, sorted(files))


def is_uncommitted(fs, layout: OutputLayout, commit_id: str | None) -> bool:
    """True when `publish/` holds a folder that is not the committed one (an attempt that crashed
    while assembling). No folder left means publishing finished."""
    for table in ("clips", "videos"):
        folder = posixpath.join(layout.publish, table)
        if not fs.exists(folder):
            continue
        try:
            if fs.cat_file(posixpath.join(folder, SUCCESS_MARKER)).decode() == commit_id:
                continue
        except FileNotFoundError:
            pass
        return True
    return False


def _stage_parts(target: PublishTarget, outcomes: dict[str, VideoOutcome], excluded: set[str],
                 clips_dir: str) -> list[str]:
    """Link each needed staged part into the publish folder; rewrite those with extra rows."""
    fs, layout, publisher = target.fs, target.layout, target.publisher
    wanted: dict[str, set[str]] = {}
    rows_wanted: dict[str, int] = {}
    totals: dict[str, int] = {}
    for o in outcomes.values():
        if o.video_id in excluded:
            continue
        for f, n, total in zip(o.files, o.file_rows, o.file_totals):
            wanted.setdefault(f, set()).add(o.video_id)
            rows_wanted[f] = rows_wanted.get(f, 0) + n
            totals[f] = total
    for name in sorted(wanted):
        src, dst = posixpath.join(layout.parts, name), posixpath.join(clips_dir, name)
        if rows_wanted[name] == totals[name]:
            publisher.link(src, dst)
        else:  # rows of videos that are not published (redone, or kept from before) share the file
            t = storage.read_parquet(fs, src)
            t = t.filter(pc.is_in(t["video_id"], value_set=pa.array(sorted(wanted[name]))))
            storage.write_parquet(fs, dst, t)
    return sorted(wanted)


def _carry(target: PublishTarget, video_ids: list[str], clips_dir: str) -> str:
    """Rows committed earlier tonight that stay: read from the current partition, one file."""
    fs, layout, tables, clips_schema = target.fs, target.layout, target.tables, target.clips_schema
    t = tables.read_date("clips", layout.run_date)
    if t is not None:
        t = t.filter(pc.is_in(t["video_id"], value_set=pa.array(video_ids)))
    name = f"carried-{uuid.uuid5(uuid.NAMESPACE_URL, layout.run_id + '|' + '|'.join(video_ids))}.parquet"
    table = conform(t, clips_schema) if t is not None and t.num_rows else clips_schema.empty_table()
    storage.write_parquet(fs, posixpath.join(clips_dir, name), table)
    return name
