"""Parquet output, the per-run ledger and the commit (DESIGN §5, §6).

Clip rows stream in (any order, any batching). When all rows of a video have arrived, its
clips go to one Parquet file with a deterministic name (uuid5 of video id + model
fingerprint), so a retry or rerun overwrites instead of duplicating. The video's own row is
then appended to a staged ledger; a rerun of the same night resumes from that ledger. The
commit writes the `videos` partition, removes clip files that no longer belong to it,
checks inputs = scored + failed + skipped, and writes the run manifest last.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmbatch import schema, storage
from mmbatch.schema import MODALITIES, EmbeddingDims

log = logging.getLogger(__name__)

FILE_NAMESPACE = uuid.UUID("0b5e7d0e-51f3-4c83-a0a4-3f3f5b4a9e21")
# Output flag per modality: "has_video" says the clip's frames were scored by the vision model.
HAS_COLUMN = {"vision": "has_video", "audio": "has_audio", "text": "has_text"}


def clip_file_name(video_id: str, fingerprint: str) -> str:
    return f"{uuid.uuid5(FILE_NAMESPACE, f'{video_id}|{fingerprint}')}.parquet"


@dataclass
class RunPaths:
    root: str
    run_date: dt.date
    run_id: str

    @property
    def clips(self) -> str:
        return posixpath.join(self.root, "clips", f"run_date={self.run_date.isoformat()}")

    @property
    def videos(self) -> str:
        return posixpath.join(self.root, "videos", f"run_date={self.run_date.isoformat()}")

    @property
    def staging(self) -> str:
        return posixpath.join(self.root, "_staging", self.run_id)

    @property
    def manifest(self) -> str:
        return posixpath.join(self.root, "_runs", f"{self.run_id}.json")


@dataclass
class _PendingVideo:
    """Rows of one video so far. A split video arrives in chunks from several decode tasks;
    each chunk's rows say how many rows that chunk has and how many chunks there are."""

    n_chunks: int
    expected: dict[int, int] = field(default_factory=dict)  # chunk index -> its row count
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> bool:
        self.rows.append(row)
        self.expected[int(row.get("chunk_index", 0))] = int(row["n_rows"])
        return len(self.expected) == self.n_chunks and len(self.rows) >= sum(self.expected.values())


def _to_str(value) -> str | None:
    text = str(value)
    return text if text else None


class RunWriter:
    def __init__(self, output: str, storage_options: dict | None, run_date: dt.date, fingerprint: str,
                 dims: EmbeddingDims, config_json: str, ledger_flush_videos: int = 64):
        self.fs, root = storage.filesystem(output, storage_options)
        self.paths = RunPaths(root.rstrip("/"), run_date, f"{run_date.isoformat()}_{fingerprint[:8]}")
        self.run_date, self.fingerprint, self.dims = run_date, fingerprint, dims
        self.clips_schema = schema.with_metadata(schema.file_schema(schema.clips_schema(dims)), config_json)
        self.videos_schema = schema.with_metadata(schema.file_schema(schema.VIDEOS_SCHEMA), config_json)
        self.ledger_schema = schema.VIDEOS_SCHEMA  # staged rows keep run_date (no partition path)
        self.flush_every = ledger_flush_videos
        self._pending: dict[str, _PendingVideo] = {}
        self._ledger_buffer: list[dict[str, Any]] = []
        self.done: dict[str, dict[str, Any]] = {}
        self.clips_written = 0

    @property
    def run_id(self) -> str:
        return self.paths.run_id

    # -- resume -----------------------------------------------------------------------------
    def load_ledger(self) -> dict[str, dict[str, Any]]:
        """Video rows finished by an earlier attempt of this run (same date and fingerprint)."""
        staging = self.paths.staging
        if not self.fs.exists(staging):
            return {}
        for path in sorted(self.fs.glob(posixpath.join(staging, "ledger-*.parquet"))):
            try:
                table = pq.read_table(self.fs.open(path, "rb"))
            except Exception as err:  # a half-written ledger from a crash: its videos rerun
                log.warning("ignoring unreadable ledger file %s: %s", path, err)
                continue
            for row in table.to_pylist():
                self.done[row["video_id"]] = row
        return dict(self.done)

    # -- streaming --------------------------------------------------------------------------
    def add_batch(self, batch: dict[str, np.ndarray]) -> None:
        n = len(batch["video_id"])
        for i in range(n):
            row = {k: batch[k][i] for k in batch}
            vid = str(row["video_id"])
            pending = self._pending.setdefault(vid, _PendingVideo(int(row.get("n_chunks", 1))))
            if pending.add(row):
                self._finish_video(vid, self._pending.pop(vid).rows)

    def _finish_video(self, video_id: str, rows: list[dict[str, Any]]) -> None:
        rows.sort(key=lambda r: int(r["clip_index"]))
        first = rows[0]
        clip_rows = [r for r in rows if int(r["clip_index"]) >= 0]
        ok_rows = [r for r in clip_rows if r["status"] == "ok"]
        if ok_rows:
            status, stage, error = "ok", None, None
        else:
            failed = next((r for r in rows if r["status"] != "ok"), first)
            status, stage, error = "error", _to_str(failed["error_stage"]), _to_str(failed["error"]) or "no clip scored"
        written = clip_rows if ok_rows else []
        if written:
            table = pa.Table.from_pylist([self._clip_record(r) for r in written], schema=self.clips_schema)
            self._write_parquet(posixpath.join(self.paths.clips, clip_file_name(video_id, self.fingerprint)), table)
            self.clips_written += len(written)
        video_row = {
            "video_id": video_id, "uri": str(first["uri"]), "etag": str(first["etag"]),
            "size_bytes": int(first["size_bytes"]), "duration_s": float(first["duration_s"]),
            "n_clips": len(written), "status": status, "error_stage": stage, "error": error,
            "decode_seconds": float(sum(float(r["decode_seconds"]) for r in rows)),
            "model_fingerprint": self.fingerprint, "run_id": self.run_id, "run_date": self.run_date,
        }
        self.done[video_id] = video_row
        self._ledger_buffer.append(video_row)
        if len(self._ledger_buffer) >= self.flush_every:
            self.flush_ledger()

    def _clip_record(self, r: dict[str, Any]) -> dict[str, Any]:
        ok = r["status"] == "ok"
        rec = {
            "video_id": str(r["video_id"]), "clip_id": str(r["clip_id"]), "clip_index": int(r["clip_index"]),
            "start_s": float(r["start_s"]), "end_s": float(r["end_s"]), "status": str(r["status"]),
            "error_stage": _to_str(r["error_stage"]), "error": _to_str(r["error"]),
            "transcript": _to_str(r.get("transcript", "")),
            "sentiment": _to_str(r["sentiment"]),
            "model_fingerprint": self.fingerprint, "run_id": self.run_id, "run_date": self.run_date,
        }
        for col in ("p_negative", "p_neutral", "p_positive", "valence"):
            rec[col] = float(r[col]) if ok else None
        for m in MODALITIES:
            has = bool(r[f"has_{m}"]) and ok
            rec[HAS_COLUMN[m]] = bool(r[f"has_{m}"])
            rec[f"{m}_valence"] = float(r[f"{m}_valence"]) if has else None
            w = float(r[f"fusion_weight_{m}"])
            rec[f"fusion_weight_{m}"] = None if np.isnan(w) else w
            rec[f"{m}_embedding"] = np.asarray(r[f"{m}_embedding"], dtype=np.float32).tolist() if has else None
        rec["fused_embedding"] = np.asarray(r["fused_embedding"], dtype=np.float32).tolist() if ok else None
        return rec

    def flush_ledger(self) -> None:
        if not self._ledger_buffer:
            return
        ids = sorted(r["video_id"] for r in self._ledger_buffer)
        name = f"ledger-{uuid.uuid5(FILE_NAMESPACE, '|'.join(ids))}.parquet"
        table = pa.Table.from_pylist(self._ledger_buffer, schema=self.ledger_schema)
        self._write_parquet(posixpath.join(self.paths.staging, name), table)
        self._ledger_buffer = []

    def _write_parquet(self, path: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        storage.write_bytes_atomic(self.fs, path, buf.getvalue())

    # -- commit -----------------------------------------------------------------------------
    def commit(self, refs: list, skipped: dict[str, dict[str, Any]], manifest_extra: dict[str, Any]) -> dict[str, Any]:
        """Reconcile, write the videos partition, prune stale clip files, write the manifest."""
        self.flush_ledger()
        for vid, pending in self._pending.items():  # rows lost mid-video (should not happen)
            log.error("video %s incomplete at commit: %d rows of %d chunks", vid, len(pending.rows), pending.n_chunks)
        rows = []
        for ref in refs:
            row = skipped.get(ref.video_id) or self.done.get(ref.video_id)
            if row is None or (ref.video_id in self._pending):
                row = {
                    "video_id": ref.video_id, "uri": ref.uri, "etag": ref.etag, "size_bytes": ref.size,
                    "duration_s": None, "n_clips": 0, "status": "error", "error_stage": "reconcile",
                    "error": "video was never completed by the pipeline (worker lost or decode crashed)",
                    "decode_seconds": None, "model_fingerprint": self.fingerprint, "run_id": self.run_id,
                    "run_date": self.run_date,
                }
            rows.append(row)
        rows.sort(key=lambda r: r["video_id"])
        counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("ok", "error", "skipped")}
        if sum(counts.values()) != len(refs) or len({r["video_id"] for r in rows}) != len(refs):
            raise RuntimeError(f"reconciliation failed: {len(refs)} inputs vs {counts}")

        videos_table = pa.Table.from_pylist(rows, schema=self.videos_schema)
        self._write_parquet(posixpath.join(self.paths.videos, "videos.parquet"), videos_table)
        # Clip files this partition should hold: scored videos of this run. Anything else
        # there (a video now failing, an older model fingerprint) is stale.
        keep = {clip_file_name(r["video_id"], self.fingerprint) for r in rows if r["status"] == "ok" and r["n_clips"] > 0}
        removed = 0
        if self.fs.exists(self.paths.clips):
            for path in self.fs.ls(self.paths.clips, detail=False):
                if posixpath.basename(path) not in keep:
                    self.fs.rm(path)
                    removed += 1
        n_clips = sum(int(r["n_clips"] or 0) for r in rows if r["status"] == "ok")
        manifest = {
            "run_id": self.run_id, "run_date": self.run_date.isoformat(), "model_fingerprint": self.fingerprint,
            "schema_version": schema.SCHEMA_VERSION,
            "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "counts": {"inputs": len(refs), "scored": counts["ok"], "failed": counts["error"],
                       "skipped": counts["skipped"], "clips": n_clips, "stale_clip_files_removed": removed},
            "outputs": {"clips": self.paths.clips, "clip_files": len(keep), "videos": self.paths.videos,
                        "videos_file": posixpath.join(self.paths.videos, "videos.parquet")},
            **manifest_extra,
        }
        storage.write_bytes_atomic(self.fs, self.paths.manifest, json.dumps(manifest, indent=2, default=str).encode())
        if self.fs.exists(self.paths.staging):
            self.fs.rm(self.paths.staging, recursive=True)
        return manifest


def committed_ledger(output: str, storage_options: dict | None) -> dict[str, dict[str, Any]]:
    """Latest committed videos row per video_id across earlier runs (the incremental ledger)."""
    fs, root = storage.filesystem(output, storage_options)
    runs_dir = posixpath.join(root.rstrip("/"), "_runs")
    if not fs.exists(runs_dir):
        return {}
    committed = set()
    for path in fs.glob(posixpath.join(runs_dir, "*.json")):
        with fs.open(path, "rb") as fh:
            committed.add(json.load(fh)["run_id"])
    ledger: dict[str, dict[str, Any]] = {}
    for path in sorted(fs.glob(posixpath.join(root.rstrip("/"), "videos", "run_date=*", "*.parquet"))):
        run_date = dt.date.fromisoformat(posixpath.basename(posixpath.dirname(path)).split("=", 1)[1])
        for row in pq.read_table(fs.open(path, "rb")).to_pylist():
            row["run_date"] = run_date
            if row["run_id"] in committed and row["status"] == "ok":
                prev = ledger.get(row["video_id"])
                if prev is None or prev["run_date"] <= row["run_date"]:
                    ledger[row["video_id"]] = row
    return ledger

