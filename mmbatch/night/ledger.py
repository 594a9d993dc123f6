"""The driver's side of the write: completion records → per-video outcomes, and resume.

The write stage returns one small record per (video, chunk, file) and also stages it as a
`records-*.parquet` file next to the part it names. A video is complete when every chunk has
reported all its rows. Each attempt of a run stages the identity of its inputs
(`inputs-<attempt>.parquet`: video id, etag, size), so a resumed attempt keeps a video only
if that attempt scored it ok from the same content. The cost here is per video, never per clip.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import uuid
from dataclasses import dataclass, field

from mmbatch.output.layout import OutputLayout
from mmbatch.output.records import CompletionRecord, ModalityCounts, VideoOutcome

log = logging.getLogger(__name__)


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
    modalities: dict[str, ModalityCounts] = field(default_factory=dict)

    def complete(self) -> bool:
        return len(self.expected) == self.n_chunks and all(
            self.received.get(c, 0) >= n for c, n in self.expected.items())

    def add(self, r: CompletionRecord) -> None:
        self.seen.add(r.key)
        self.expected[r.chunk_index] = r.expected_rows
        self.received[r.chunk_index] = self.received.get(r.chunk_index, 0) + r.rows
        if r.file:
            self.parts.setdefault(r.file, [0, r.file_rows])[0] += r.clip_rows
        self.clip_rows += r.clip_rows
        self.ok_rows += r.ok_rows
        self.duration_s = max(self.duration_s, r.duration_s)
        self.decode_seconds += r.decode_seconds
        for m, counts in r.modalities.items():
            self.modalities.setdefault(m, ModalityCounts()).add(counts)
        if not self.error and r.error:
            self.error_stage, self.error = r.error_stage, r.error


class CompletionTally:
    """Videos whose every chunk has reported all its rows, and their clip rows: the ledger's rule.
    The ledger tallies the written rows' reports; the progress line also tallies the scored rows'
    reports before they are written (the write stage bundles ~128 MB, so a night of small clips
    may write only at its end)."""

    def __init__(self):
        self.pending: dict[str, _Pending] = {}
        self.done: set[str] = set()
        self.clips = 0

    def add(self, records: list[CompletionRecord], skip=()) -> list[tuple[str, _Pending]]:
        """Take reports; returns the videos they completed. A report counts once however often it
        arrives (a retried write or batch, or both of the ledger's feeds); videos in `skip` are done."""
        finished = []
        for r in records:
            if r.video_id in self.done or r.video_id in skip:
                continue
            p = self.pending.setdefault(r.video_id, _Pending(r.n_chunks))
            if r.key in p.seen:
                continue
            p.add(r)
            if p.complete():
                self.done.add(r.video_id)
                self.clips += p.clip_rows
                finished.append((r.video_id, self.pending.pop(r.video_id)))
        return finished

    def counts(self) -> tuple[int, int]:
        """(videos complete, their clip rows)."""
        return len(self.done), self.clips


def new_attempt_id() -> str:
    """Sortable by start time, unique per attempt."""
    import time

    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class RunLedger:
    """The driver's record of one attempt: completion records in, per-video outcomes out.

    One feed of records: the staged records files (`poll` while the night runs, for the progress
    line; `load` for earlier attempts) and what the writes return at the end (`add_records`).
    A report counts once however often it arrives (a retried write, or both feeds)."""

    def __init__(self, fs, layout: OutputLayout, refs_by_id: dict, attempt: str | None = None):
        self.fs, self.layout = fs, layout
        self.refs = refs_by_id
        self.attempt = attempt or new_attempt_id()
        self.done: dict[str, VideoOutcome] = {}  # every video this run has an outcome for
        self._tally = CompletionTally()  # what this attempt completed
        self._polled: set[str] = set()
        self._lock = threading.Lock()

    @property
    def pending(self) -> dict[str, _Pending]:
        return self._tally.pending

    @property
    def finished(self) -> int:
        """Videos this attempt completed."""
        return len(self._tally.done)

    @property
    def clips_done(self) -> int:
        """Their clip rows."""
        return self._tally.clips

    def begin(self) -> None:
        """Stage this attempt's input identities (before any of its records can exist)."""
        import pyarrow as pa

        refs = list(self.refs.values())
        table = pa.table({"video_id": [r.video_id for r in refs], "etag": [r.etag for r in refs],
                          "size_bytes": pa.array([r.size_bytes for r in refs], pa.int64())})
        _write(self.fs, self.layout.inputs_file(self.attempt), table)

    # -- resume -------------------------------------------------------------------------------
    def load(self) -> dict[str, VideoOutcome]:
        """Outcomes finished by earlier attempts of this run that still count: scored ok from
        the input as it is now (etag and size). Failures and changed inputs are done again."""
        from mmbatch.inputs.sources import VideoRef

        if not self.fs.exists(self.layout.staging):
            return {}
        earlier: dict[str, RunLedger] = {}
        for path in self.fs.glob(self.layout.inputs_file("*")):
            attempt = posixpath.basename(path)[len("inputs-"): -len(".parquet")]
            t = _read(self.fs, path)
            if t is not None:
                refs = {r["video_id"]: VideoRef(r["video_id"], "", r["size_bytes"], r["etag"]) for r in t.to_pylist()}
                earlier[attempt] = RunLedger(self.fs, self.layout, refs, attempt)
        for path in staged_records(self.fs, self.layout.parts):
            records = read_records(self.fs, path)
            if records and records[0].attempt in earlier:
                earlier[records[0].attempt].add(records)
        for attempt in sorted(earlier):  # later attempts win
            for vid, outcome in earlier[attempt].done.items():
                ref = self.refs.get(vid)
                if ref is not None and outcome.status == "ok" and ref.same_content(outcome.etag, outcome.size_bytes):
                    self.done[vid] = outcome
        self._drop_unreadable_parts()
        return dict(self.done)

    def _drop_unreadable_parts(self) -> None:
        """A resumed video whose staged part cannot be read (a crash mid-write, a damaged disk) is
        done again: its rows would otherwise be published unread."""
        from mmbatch import storage

        parts = sorted({posixpath.join(self.layout.parts, f) for o in self.done.values() for f in o.files})
        bad = {posixpath.basename(p) for p in storage.unreadable_parquet(self.fs, parts)}
        for vid in [v for v, o in self.done.items() if bad & set(o.files)]:
            log.warning("staged file %s of video %s cannot be read; the video is scored again",
                        posixpath.join(self.layout.parts, sorted(bad & set(self.done[vid].files))[0]), vid)
            del self.done[vid]

    # -- streaming ----------------------------------------------------------------------------
    def poll(self) -> int:
        """Take this attempt's records staged since the last poll; returns how many files."""
        new = 0
        for path in staged_records(self.fs, self.layout.parts):
            if path in self._polled:
                continue
            records = read_records(self.fs, path)
            if records is None:  # unreadable just now (being written): the next poll tries again
                continue
            self._polled.add(path)
            if records[0].attempt == self.attempt:
                self.add(records)
                new += 1
        return new

    def add_records(self, columns: dict) -> list[VideoOutcome]:
        """The records one write returned (numpy columns)."""
        return self.add(CompletionRecord.from_columns(columns))

    def add(self, records: list[CompletionRecord]) -> list[VideoOutcome]:
        with self._lock:
            return [self._finish(vid, p) for vid, p in self._tally.add(records, skip=self.done)]

    def _finish(self, vid: str, p: _Pending) -> VideoOutcome:
        ref = self.refs.get(vid)
        ok = p.ok_rows > 0
        files = sorted(p.parts)
        outcome = VideoOutcome(
            video_id=vid, status="ok" if ok else "error", n_clips=p.clip_rows,
            duration_s=p.duration_s or None, decode_seconds=p.decode_seconds,
            error_stage=None if ok else (p.error_stage or None), error=None if ok else (p.error or "no clip scored"),
            etag=ref.etag if ref else "", size_bytes=ref.size_bytes if ref else 0, files=files,
            file_rows=[p.parts[f][0] for f in files], file_totals=[p.parts[f][1] for f in files],
            modalities=p.modalities)
        self.done[vid] = outcome
        return outcome


def _read(fs, path: str):
    from mmbatch import storage

    try:
        return storage.read_parquet(fs, path)
    except Exception as err:  # half-written by a crash: what it names is done again
        log.warning("ignoring unreadable staged file %s: %s", path, err)
        return None


def staged_records(fs, parts_dir: str) -> list[str]:
    """The records files the write stage has staged so far, in name order."""
    return sorted(fs.glob(posixpath.join(parts_dir, "records-*.parquet"))) if fs.exists(parts_dir) else []


def read_records(fs, path: str) -> list[CompletionRecord] | None:
    """One staged records file; None if unreadable or empty."""
    t = _read(fs, path)
    if t is None or t.num_rows == 0:
        return None
    return CompletionRecord.from_columns({c: t[c].to_numpy(zero_copy_only=False) for c in t.column_names})


def _write(fs, path: str, table) -> None:
    from mmbatch import storage

    storage.write_parquet(fs, path, table)
