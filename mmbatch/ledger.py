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
import uuid
from dataclasses import dataclass, field

import numpy as np

from mmbatch.schema import MODALITIES

log = logging.getLogger(__name__)


@dataclass
class VideoOutcome:
    """How one video of this run ended, and where its clip rows were staged."""

    video_id: str
    status: str  # ok (at least one clip scored) | error
    n_clips: int  # clip rows staged (ok and error clips)
    duration_s: float | None
    decode_seconds: float
    error_stage: str | None
    error: str | None
    etag: str = ""
    size_bytes: int = 0
    files: list[str] = field(default_factory=list)  # staged part files holding its rows
    file_rows: list[int] = field(default_factory=list)  # its rows in each of them
    file_totals: list[int] = field(default_factory=list)  # all rows of each of them
    # modality -> [clips scored, clips where it failed (a reason and no score)]
    modalities: dict[str, list[int]] = field(default_factory=dict)

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
    modalities: dict[str, list[int]] = field(default_factory=dict)

    def complete(self) -> bool:
        return len(self.expected) == self.n_chunks and all(
            self.received.get(c, 0) >= n for c, n in self.expected.items())


def new_attempt_id() -> str:
    """Sortable by start time, unique per attempt."""
    import time

    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class RunLedger:
    def __init__(self, fs, staging_dir: str, refs_by_id: dict, attempt: str | None = None):
        self.fs, self.staging_dir = fs, staging_dir
        self.refs = refs_by_id
        self.attempt = attempt or new_attempt_id()
        self.pending: dict[str, _Pending] = {}
        self.done: dict[str, VideoOutcome] = {}
        self.clips_done = 0
        self._inputs = {vid: (r.etag, r.size) for vid, r in refs_by_id.items()}

    @property
    def parts_dir(self) -> str:
        return posixpath.join(self.staging_dir, "parts")

    def begin(self) -> None:
        """Stage this attempt's input identities (before any of its records can exist)."""
        import pyarrow as pa

        table = pa.table({"video_id": list(self._inputs), "etag": [e for e, _ in self._inputs.values()],
                          "size_bytes": pa.array([s for _, s in self._inputs.values()], pa.int64())})
        _write(self.fs, posixpath.join(self.staging_dir, f"inputs-{self.attempt}.parquet"), table)

    # -- resume -------------------------------------------------------------------------------
    def load(self) -> dict[str, VideoOutcome]:
        """Outcomes finished by earlier attempts of this run that still count: scored ok from
        the input as it is now (etag and size). Failures and changed inputs are done again."""
        if not self.fs.exists(self.staging_dir):
            return {}
        inputs: dict[str, dict[str, tuple[str, int]]] = {}
        for path in self.fs.glob(posixpath.join(self.staging_dir, "inputs-*.parquet")):
            attempt = posixpath.basename(path)[len("inputs-"): -len(".parquet")]
            t = _read(self.fs, path)
            if t is not None:
                inputs[attempt] = {r["video_id"]: (r["etag"], r["size_bytes"]) for r in t.to_pylist()}
        earlier: dict[str, RunLedger] = {}
        for path in staged_records(self.fs, self.parts_dir):
            records = read_records(self.fs, path)
            attempt = None if records is None else str(records["attempt"][0])
            if attempt not in inputs:
                continue
            if attempt not in earlier:
                refs = {v: _Ref(*ident) for v, ident in inputs[attempt].items()}
                earlier[attempt] = RunLedger(self.fs, self.staging_dir, refs, attempt)
            earlier[attempt].add_records(records)
        for attempt in sorted(earlier):  # later attempts win
            for vid, outcome in earlier[attempt].done.items():
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
            for m in MODALITIES:
                if f"{m}_scored" in records:
                    counts = p.modalities.setdefault(m, [0, 0])
                    counts[0] += int(records[f"{m}_scored"][i])
                    counts[1] += int(records[f"{m}_failed"][i])
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
            video_id=vid, status="ok" if ok else "error", n_clips=p.clip_rows,
            duration_s=p.duration_s or None, decode_seconds=p.decode_seconds,
            error_stage=None if ok else (p.error_stage or None), error=None if ok else (p.error or "no clip scored"),
            etag=ref.etag if ref else "", size_bytes=ref.size if ref else 0, files=files,
            file_rows=[p.parts[f][0] for f in files], file_totals=[p.parts[f][1] for f in files],
            modalities=p.modalities)
        self.done[vid] = outcome
        self.clips_done += p.clip_rows
        return outcome



@dataclass(frozen=True)
class _Ref:
    etag: str
    size: int


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


def read_records(fs, path: str) -> dict[str, np.ndarray] | None:
    """One staged records file as the columns `add_records` takes; None if unreadable or empty."""
    t = _read(fs, path)
    if t is None or t.num_rows == 0:
        return None
    return {c: t[c].to_numpy(zero_copy_only=False) for c in t.column_names}


def _write(fs, path: str, table) -> None:
    from mmbatch import storage

    storage.write_parquet(fs, path, table)
