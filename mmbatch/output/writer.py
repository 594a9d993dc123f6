"""The write stage: clip rows → staged Parquet files, written by workers, not the driver.

The last stage of the graph. Each call gets one bundle of clip rows of about
`output.target_file_mb` (Ray Data assembles it from many videos), converts it to Arrow column
by column (no per-row Python) and writes one staged Parquet file. Beside it goes a small
records file: one completion record per (video, chunk) in the bundle — rows seen, clip rows
written, ok rows, the file, the first error. The same records are returned to the driver;
the staged records files are the ledger a killed run resumes from.

File names are deterministic and collision-free: uuid5 of the run id, the attempt and the
bundle's clip ids. A retried write overwrites its own file; two bundles never share a name.
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from dataclasses import dataclass

import numpy as np

from mmbatch.schema import (
    BOOKKEEPING_COLUMNS,
    CLIPS_SCHEMA,
    COLUMNS,
    FUSED_COLUMNS,
    HAS_COLUMN,
    MODALITIES,
    MODALITY_COLUMNS,
    NOTHING,
    RECORD_COLUMNS,
    EmbeddingDims,
    file_schema,
    with_metadata,
)
from mmbatch.stage import Batch
from mmbatch.trust import redact_text

FILE_NAMESPACE = uuid.UUID("0b5e7d0e-51f3-4c83-a0a4-3f3f5b4a9e21")
_FLOAT_COLUMNS = ("p_negative", "p_neutral", "p_positive", "valence",
                  *(COLUMNS[m].valence for m in MODALITIES), *(COLUMNS[m].weight for m in MODALITIES))
_TEXT_COLUMNS = ("error_stage", "error", "transcript", "sentiment", *(COLUMNS[m].error for m in MODALITIES))  # "" → null
_MESSAGE_COLUMNS = ("error", *(COLUMNS[m].error for m in MODALITIES))
# The clip-table columns every row has (from decode); the rest are read when present.
_CORE_COLUMNS = ("video_id", "clip_id", "clip_index", "start_s", "end_s", "status", "error_stage", "error")
_OPTIONAL_COLUMNS = tuple(dict.fromkeys(
    c for c in (*_TEXT_COLUMNS, *_FLOAT_COLUMNS, *FUSED_COLUMNS, *(COLUMNS[m].has for m in MODALITIES),
                *(COLUMNS[m].embedding for m in MODALITIES), *(name for name, _ in MODALITY_COLUMNS))
    if c not in _CORE_COLUMNS))


@dataclass(frozen=True)
class WriterArgs:
    """What the write stage of one run attempt needs: where it stages files and what it stamps on them."""

    output: str  # the output root URI (for the filesystem)
    storage_options: dict | None
    parts_dir: str  # _staging/<run_id>/parts inside the output filesystem
    run_id: str
    fingerprint: str
    dims: EmbeddingDims
    config_json: str
    attempt: str = "0"
    row_group_rows: int = 2048


def part_file_name(run_id: str, attempt: str, keys: np.ndarray, prefix: str = "part") -> str:
    digest = hashlib.sha256("\n".join(sorted(map(str, keys))).encode()).hexdigest()
    return f"{prefix}-{uuid.uuid5(FILE_NAMESPACE, f'{run_id}|{attempt}|{digest}')}.parquet"


def embedding_array(values: np.ndarray, present: np.ndarray):
    """(n, d) float32 → list<float32>, null where not present (nulls take no value space)."""
    import pyarrow as pa

    values = np.asarray(values, dtype=np.float32)
    n = len(present)
    if values.ndim != 2 or n == 0:
        return pa.nulls(n, type=pa.list_(pa.float32()))
    d = values.shape[1]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.where(present, d, 0), out=offsets[1:])
    flat = pa.array(values[present].reshape(-1))
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(~present))


def clips_table(batch: Batch, fingerprint: str, run_id: str, schema=None):
    """The clips table (partition key left out) of every row in `batch`, column by column."""
    import pyarrow as pa

    schema = schema or file_schema(CLIPS_SCHEMA)
    n = len(batch["video_id"])
    ok = np.asarray(batch["status"]).astype(str) == "ok"
    cols: dict[str, pa.Array] = {
        "video_id": pa.array(np.asarray(batch["video_id"]).astype(str)),
        "clip_id": pa.array(np.asarray(batch["clip_id"]).astype(str)),
        "clip_index": pa.array(np.asarray(batch["clip_index"], dtype=np.int32)),
        "start_s": pa.array(np.asarray(batch["start_s"], dtype=np.float64)),
        "end_s": pa.array(np.asarray(batch["end_s"], dtype=np.float64)),
        "status": pa.array(np.asarray(batch["status"]).astype(str)),
        "model_fingerprint": pa.array(np.full(n, fingerprint)),
        "run_id": pa.array(np.full(n, run_id)),
    }
    for col in _TEXT_COLUMNS:
        text = np.asarray(batch.get(col, np.full(n, ""))).astype(str)
        if col in _MESSAGE_COLUMNS and (text != "").any():  # reasons may quote a URI: no secrets at rest
            rows = np.flatnonzero(text != "")
            text = text.astype(object)
            text[rows] = [redact_text(t) for t in text[rows]]
            text = text.astype(str)
        cols[col] = pa.array(text, mask=text == "")
    for col in _FLOAT_COLUMNS:
        values = np.asarray(batch.get(col, np.full(n, np.nan)), dtype=np.float32)
        cols[col] = pa.array(values, mask=np.isnan(values))
    for m in MODALITIES:
        c = COLUMNS[m]
        has = np.asarray(batch.get(c.has, np.zeros(n, bool)), dtype=bool)
        cols[HAS_COLUMN[m]] = pa.array(has)
        cols[c.embedding] = embedding_array(batch.get(c.embedding, np.zeros((n, 0))), has & ok)
    cols["fused_embedding"] = embedding_array(batch.get("fused_embedding", np.zeros((n, 0))), ok)
    for name, kind in MODALITY_COLUMNS:
        values = np.asarray(batch.get(name, np.full(n, NOTHING[kind])))
        values = values.astype(str) if kind == "string" else values.astype(kind)
        cols[name] = pa.array(values, mask=(values == "") if kind == "string" else
                              np.isnan(values) if kind == "float32" else values < 0)
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


class ClipWriterStage:
    """Writes each bundle of clip rows to one staged Parquet file; returns completion records."""

    name = "write"
    reads = (*_CORE_COLUMNS, *BOOKKEEPING_COLUMNS)
    may_read = _OPTIONAL_COLUMNS
    writes = (*RECORD_COLUMNS, *(c for m in MODALITIES for c in (COLUMNS[m].scored, COLUMNS[m].failed)))

    def __init__(self, args: WriterArgs):
        self.args = args
        self.fs = None

    def setup(self) -> None:
        from mmbatch import storage

        a = self.args
        self.fs, _ = storage.filesystem(a.output, a.storage_options)
        self.schema = with_metadata(file_schema(CLIPS_SCHEMA), a.config_json, a.dims)

    def __call__(self, batch: Batch) -> Batch:
        if self.fs is None:
            self.setup()
        index = np.asarray(batch["clip_index"])
        clip_rows = index >= 0  # clip_index -1: a video that could not be opened (no clip row)
        # Each row's identity: its clip id, or its video's for a video that could not be opened.
        keys = np.where(clip_rows, np.asarray(batch["clip_id"]).astype(str),
                        np.char.add(np.asarray(batch["video_id"]).astype(str), "|unopened"))
        a, name, written = self.args, "", 0
        if clip_rows.any():
            used = set(self.reads) | set(self.may_read)
            rows = {k: np.asarray(v)[clip_rows] for k, v in batch.items() if k in used}
            table = clips_table(rows, a.fingerprint, a.run_id, self.schema)
            name = part_file_name(a.run_id, a.attempt, keys)
            self._write(posixpath.join(a.parts_dir, name), table, a.row_group_rows)
            written = table.num_rows
        records = completion_records(batch, clip_rows, name, written)
        records["attempt"] = np.full(len(records["video_id"]), a.attempt)
        # Written after the part it names: a records file always points to a complete part.
        self._write(posixpath.join(a.parts_dir, part_file_name(a.run_id, a.attempt, keys, "records")),
                    records_table(records))
        return records

    def _write(self, path: str, table, row_group_rows: int | None = None) -> None:
        from mmbatch import storage

        storage.write_parquet(self.fs, path, table, row_group_size=row_group_rows)


def records_table(records: Batch):
    import pyarrow as pa

    return pa.table({k: pa.array(np.asarray(v)) for k, v in records.items()})


def _modality_flags(batch: Batch, m: str, ok: np.ndarray) -> dict[str, np.ndarray]:
    """Per row: the modality was scored; or it failed (a reason and no score) on an ok clip."""
    n, c = len(ok), COLUMNS[m]
    has = np.asarray(batch.get(c.has, np.zeros(n, bool)), dtype=bool) & ok
    reason = np.asarray(batch.get(c.error, np.full(n, ""))).astype(str) != ""
    return {c.scored: has, c.failed: reason & ~has & ok}


def completion_records(batch: Batch, clip_rows: np.ndarray, file: str, file_rows: int) -> Batch:
    """One record per (video, chunk) of the batch: a loop over videos, never over clips."""
    vids = np.asarray(batch["video_id"]).astype(str)
    chunks = np.asarray(batch.get("chunk_index", np.zeros(len(vids))), dtype=np.int64)
    keys = np.char.add(np.char.add(vids, "\x00"), chunks.astype(str))
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    g = len(uniq)
    ok = np.asarray(batch["status"]).astype(str) == "ok"
    err_rows = np.flatnonzero(~ok)
    err_first = np.full(g, len(vids))
    np.minimum.at(err_first, inverse[err_rows], err_rows)  # each group's first error row
    has_error = err_first < len(vids)
    duration = np.zeros(g)
    np.maximum.at(duration, inverse, np.asarray(batch["duration_s"], dtype=np.float64))
    error_stage = np.asarray(batch["error_stage"]).astype(str)
    error = np.asarray(batch["error"]).astype(str)
    return {
        "video_id": vids[first],
        "chunk_index": chunks[first].astype(np.int32),
        "n_chunks": np.asarray(batch.get("n_chunks", np.ones(len(vids))), dtype=np.int32)[first],
        "expected_rows": np.asarray(batch["n_rows"], dtype=np.int32)[first],
        "rows": np.bincount(inverse, minlength=g).astype(np.int32),
        "clip_rows": np.bincount(inverse, weights=clip_rows, minlength=g).astype(np.int32),
        "ok_rows": np.bincount(inverse, weights=ok & clip_rows, minlength=g).astype(np.int32),
        "file": np.full(g, file),
        "file_rows": np.full(g, file_rows, dtype=np.int32),
        "duration_s": duration,
        "decode_seconds": np.bincount(inverse, weights=np.asarray(batch["decode_seconds"], dtype=np.float64), minlength=g),
        **{column: np.bincount(inverse, weights=flags, minlength=g).astype(np.int32)
           for m in MODALITIES for column, flags in _modality_flags(batch, m, ok).items()},
        "error_stage": np.where(has_error, error_stage[np.minimum(err_first, len(vids) - 1)], ""),
        "error": np.where(has_error, error[np.minimum(err_first, len(vids) - 1)], ""),
    }
