"""Fake nights without Ray or models: clip batches as fusion would emit them, written by the
real write stage, aggregated by the real ledger and committed by the real committer."""

from __future__ import annotations

import datetime as dt

import numpy as np

from mmbatch.config import OutputConfig
from mmbatch.inputs.sources import VideoRef
from mmbatch.night import night as production
from mmbatch.output.writer import ClipWriterStage
from mmbatch.schema import EmbeddingDims

DIMS = EmbeddingDims(4, 3, 2)
DAY = dt.date(2026, 11, 27)


def clip_rows(video_id: str, n: int, status: str = "ok", *, first: int = 0, n_rows: int | None = None,
              dims: EmbeddingDims = DIMS, chunk: int = 0, n_chunks: int = 1, value: float = 1.0) -> dict:
    """`n` clip rows of one video (clip_index first.. first+n-1); n_rows: rows the video has."""
    idx = np.arange(first, first + n, dtype=np.int32)
    ok = status == "ok"
    b = {
        "video_id": np.array([video_id] * n), "clip_index": idx,
        "clip_id": np.array([f"{video_id}-{i}" if i >= 0 else "" for i in idx]),
        "start_s": idx * 5.0, "end_s": idx * 5.0 + 5, "n_rows": np.full(n, n if n_rows is None else n_rows, np.int32),
        "chunk_index": np.full(n, chunk, np.int32), "n_chunks": np.full(n, n_chunks, np.int32),
        "duration_s": np.full(n, 5.0 * n), "decode_seconds": np.full(n, 0.5),
        "status": np.array([status] * n), "error_stage": np.array(["" if ok else "decode"] * n),
        "error": np.array(["" if ok else "boom"] * n), "transcript": np.array(["hi"] * n),
        "sentiment": np.array(["positive" if ok else ""] * n),
        "p_negative": np.full(n, 0.1 if ok else np.nan, np.float32),
        "p_neutral": np.full(n, 0.2 if ok else np.nan, np.float32),
        "p_positive": np.full(n, 0.7 if ok else np.nan, np.float32),
        "valence": np.full(n, 0.6 if ok else np.nan, np.float32),
        "fused_embedding": np.full((n, dims.fused), value, np.float32),
    }
    for m in ("vision", "audio", "text"):
        d = getattr(dims, m)
        has = ok and m != "audio" and d > 0
        b[f"has_{m}"] = np.full(n, has)
        b[f"{m}_valence"] = np.full(n, 0.5 if has else np.nan, np.float32)
        b[f"fusion_weight_{m}"] = np.full(n, 0.5 if has else np.nan, np.float32)
        b[f"{m}_embedding"] = np.full((n, max(d, 1)), value, np.float32)
    return b


def concat(*batches: dict) -> dict:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def refs(*ids: str, etag: str = "e") -> list[VideoRef]:
    return [VideoRef(i, f"/in/{i}.mp4", 10, etag) for i in ids]


class Night:
    """One attempt of a run on the job's own `Night` (no lease, no skip check unless a test takes
    them): write batches, then commit (or stop, as a crash would)."""

    def __init__(self, out, inputs: list[VideoRef], day: dt.date = DAY, fp: str = "fp1",
                 dims: EmbeddingDims = DIMS, storage_options: dict | None = None, output: OutputConfig | None = None):
        self.night = production.Night(str(out), day, fp, storage_options=storage_options, output=output)
        self.night.open(inputs, dims)
        self.fs, self.layout, self.tables = self.night.fs, self.night.layout, self.night.tables
        self.inputs, self.fp, self.dims = inputs, fp, dims
        self.ledger, self.committer = self.night.ledger, self.night.committer
        self.writer = ClipWriterStage(self.night.writer)
        self.rolled = self.night.roll_forward()
        self.resumed = self.ledger.load()
        self.ledger.begin()

    def write(self, *batches: dict) -> "Night":
        """Write and report to the driver's ledger (as a finished write's return)."""
        for b in batches:
            self.ledger.add_records(self.writer(b))
        return self

    def stage(self, *batches: dict) -> list[dict]:
        """Write only (the records are staged; the ledger has not been told): returns the records."""
        return [self.writer(b) for b in batches]

    def commit(self) -> dict:
        return self.committer.commit(self.inputs, self.ledger.done, {}, {})
