"""The driver's side of the write: completion records → per-video outcomes, and the staged ledger.

The write stage returns one small record per (video, chunk, file). A video is complete when
every chunk has reported all its rows; its `VideoOutcome` then goes to a staged ledger file
under `_staging/<run_id>/`, so a run killed half-way resumes without redoing it. The cost
here is per video, never per clip.
"""

from __future__ import annotations

import io
import logging
import posixpath
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from mmbatch.writer import FILE_NAMESPACE

log = logging.getLogger(__name__)


@dataclass
class VideoOutcome:
    """How one video of this run ended, and where its clip rows were staged."""

    video_id: str
    status: str  # ok (at least one clip scored) | error
    n_clips: int  # clip rows staged (ok and error clips)
    ok_clips: int
    duration_s: float | None
    decode_seconds: float
    error_stage: str | None
    error: str | None
    etag: str = ""
    size_bytes: int = 0
    files: list[str] = field(default_factory=list)  # staged part files holding its rows
    file_rows: list[int] = field(default_factory=list)  # its rows in each of them
    file_totals: list[int] = field(default_factory=list)  # all rows of each of them


LEDGER_COLUMNS = tuple(VideoOutcome.__dataclass_fields__)


@dataclass
class _Pending:
    n_chunks: int
    expected: dict[int, int] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)
    parts: dict[str, list[int]] = field(default_factory=dict)  # file -> [rows of this video, file total]
    seen: set = field(default_factory=set)
    clip_rows: int = 0
    ok_rows: int = 0
    duration_s: float = 0.0
    decode_seconds: float = 0.0
    error_stage: str = ""
    error: str = ""

    def complete(self) -> bool:
        return len(self.expected) == self.n_chunks and all(
            self.received.get(c, 0) >= n for c, n in self.expected.items())


class RunLedger:
    def __init__(self, fs, staging_dir: str, refs_by_id: dict, flush_every: int = 64):
        self.fs, self.staging_dir, self.flush_every = fs, staging_dir, flush_every
        self.refs = refs_by_id
        self.pending: dict[str, _Pending] = {}
        self.done: dict[str, VideoOutcome] = {}
        self._buffer: list[VideoOutcome] = []
        self.clips_done = 0

    # -- resume -------------------------------------------------------------------------------
    def load(self) -> dict[str, VideoOutcome]:
        """Outcomes finished by an earlier attempt of this run that still count: scored ok and
        the input unchanged (etag and size). Failures and changed inputs are done again."""
        import pyarrow.parquet as pq

        found: dict[str, VideoOutcome] = {}
        if not self.fs.exists(self.staging_dir):
            return {}
        for path in sorted(self.fs.glob(posixpath.join(self.staging_dir, "ledger-*.parquet"))):
            try:
                rows = pq.read_table(io.BytesIO(self.fs.cat_file(path))).to_pylist()
            except Exception as err:  # half-written by a crash: its videos are done again
                log.warning("ignoring unreadable ledger file %s: %s", path, err)
                continue
            for row in rows:
                found[row["video_id"]] = VideoOutcome(**{k: row[k] for k in LEDGER_COLUMNS})
        for vid, outcome in found.items():
            ref = self.refs.get(vid)
            if ref is not None and outcome.status == "ok" and (outcome.etag, outcome.size_bytes) == (ref.etag, ref.size):
                self.done[vid] = outcome
        return dict(self.done)

    # -- streaming ----------------------------------------------------------------------------
    def add_records(self, records: dict[str, np.ndarray]) -> list[VideoOutcome]:
        finished = []
        for i in range(len(records["video_id"])):
            vid = str(records["video_id"][i])
            p = self.pending.setdefault(vid, _Pending(int(records["n_chunks"][i])))
            key = (int(records["chunk_index"][i]), str(records["file"][i]), int(records["rows"][i]))
            if key in p.seen:  # a retried write reported the same file again
                continue
            p.seen.add(key)
            chunk = key[0]
            p.expected[chunk] = int(records["expected_rows"][i])
            p.received[chunk] = p.received.get(chunk, 0) + int(records["rows"][i])
            if key[1]:
                part = p.parts.setdefault(key[1], [0, int(records["file_rows"][i])])
                part[0] += int(records["clip_rows"][i])
            p.clip_rows += int(records["clip_rows"][i])
            p.ok_rows += int(records["ok_rows"][i])
            p.duration_s = max(p.duration_s, float(records["duration_s"][i]))
            p.decode_seconds += float(records["decode_seconds"][i])
            if not p.error and str(records["error"][i]):
                p.error_stage, p.error = str(records["error_stage"][i]), str(records["error"][i])
            if p.complete():
                finished.append(self._finish(vid, self.pending.pop(vid)))
        return finished

    def _finish(self, vid: str, p: _Pending) -> VideoOutcome:
        ref = self.refs.get(vid)
        ok = p.ok_rows > 0
        files = sorted(p.parts)
        outcome = VideoOutcome(
            video_id=vid, status="ok" if ok else "error", n_clips=p.clip_rows, ok_clips=p.ok_rows,
            duration_s=p.duration_s or None, decode_seconds=p.decode_seconds,
            error_stage=None if ok else (p.error_stage or None), error=None if ok else (p.error or "no clip scored"),
            etag=ref.etag if ref else "", size_bytes=ref.size if ref else 0, files=files,
            file_rows=[p.parts[f][0] for f in files], file_totals=[p.parts[f][1] for f in files])
        self.done[vid] = outcome
        self.clips_done += p.clip_rows
        self._buffer.append(outcome)
        if len(self._buffer) >= self.flush_every:
            self.flush()
        return outcome

    def flush(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        from mmbatch import storage

        ids = sorted(o.video_id for o in self._buffer)
        name = f"ledger-{uuid.uuid5(FILE_NAMESPACE, '|'.join(ids))}.parquet"
        table = pa.Table.from_pylist([asdict(o) for o in self._buffer], schema=LEDGER_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes_atomic(self.fs, posixpath.join(self.staging_dir, name), buf.getvalue())
        self._buffer = []


def _ledger_schema():
    import pyarrow as pa

    return pa.schema([
        ("video_id", pa.string()), ("status", pa.string()), ("n_clips", pa.int32()), ("ok_clips", pa.int32()),
        ("duration_s", pa.float64()), ("decode_seconds", pa.float64()), ("error_stage", pa.string()),
        ("error", pa.string()), ("etag", pa.string()), ("size_bytes", pa.int64()),
        ("files", pa.list_(pa.string())), ("file_rows", pa.list_(pa.int32())), ("file_totals", pa.list_(pa.int32())),
    ])


LEDGER_SCHEMA = _ledger_schema()
