#!/usr/bin/env python
"""Write, commit and skip paths at nightly scale, without decoding or models.

Synthetic clip rows at real embedding sizes (vision 512, audio 768, text 384, fused 1664)
flow through a local Ray Data graph into the real write stage (a Datasink writing staged
Parquet files), the driver's ledger and the real commit. Each size runs in its own process,
so the driver's peak RSS is its own. The skip check runs against a simulated archive (a
state table of N videos and the `_runs/` manifests of D nights).

    python benchmarks/scale.py                       # 10k, 50k, 200k clips; 100k videos x 365 nights
    python benchmarks/scale.py --clips 2000 --archive-videos 1000 --archive-nights 10   # a quick look
    python benchmarks/scale.py --clips 200000 --format parquet delta iceberg --archive-videos 0
                                                     # the commit of each output format, side by side

Prints one JSON object per measurement and the whole report as the last line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DIMS = {"vision": 512, "audio": 768, "text": 384}
CLIPS_PER_VIDEO = 10
DAY = dt.date(2026, 11, 27)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def synthetic_clips(batch):
    """Fusion-shaped clip rows for the videos in `batch["id"]` (10 clips each)."""
    import numpy as np

    ids = np.repeat(batch["id"], CLIPS_PER_VIDEO)
    idx = np.tile(np.arange(CLIPS_PER_VIDEO, dtype=np.int32), len(batch["id"]))
    n = len(ids)
    rng = np.random.default_rng(int(batch["id"][0]))
    vids = np.char.add("video-", ids.astype(str))
    out = {
        "video_id": vids, "clip_id": np.char.add(np.char.add(vids, "-"), idx.astype(str)), "clip_index": idx,
        "start_s": idx * 10.0, "end_s": idx * 10.0 + 10.0, "status": np.full(n, "ok"),
        "error_stage": np.full(n, ""), "error": np.full(n, ""), "transcript": np.full(n, "a short sentence"),
        "sentiment": np.full(n, "neutral"), "n_rows": np.full(n, CLIPS_PER_VIDEO, np.int32),
        "chunk_index": np.zeros(n, np.int32), "n_chunks": np.ones(n, np.int32),
        "duration_s": np.full(n, 100.0), "decode_seconds": np.full(n, 0.1),
    }
    for col in ("p_negative", "p_neutral", "p_positive", "valence"):
        out[col] = rng.random(n, dtype=np.float32)
    embeddings = []
    for m, d in DIMS.items():
        out[f"has_{m}"] = np.ones(n, bool)
        out[f"{m}_valence"] = rng.random(n, dtype=np.float32)
        out[f"fusion_weight_{m}"] = np.full(n, 1 / 3, np.float32)
        out[f"{m}_embedding"] = rng.standard_normal((n, d), dtype=np.float32)
        embeddings.append(out[f"{m}_embedding"])
    out["fused_embedding"] = np.concatenate(embeddings, axis=1)
    return out


def run_write(n_clips: int, workdir: str, target_mb: float, fmt: str = "parquet") -> dict:
    import ray

    from mmbatch.config import OutputConfig, PoolConfig
    from mmbatch.inputs.sources import VideoRef
    from mmbatch.night.night import Night
    from mmbatch.output.writer import ClipWriterStage
    from mmbatch.pipeline.adapter import write_to_sink
    from mmbatch.schema import EmbeddingDims
    from mmbatch.stage import StageSpec

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    n_videos = n_clips // CLIPS_PER_VIDEO
    dims = EmbeddingDims(**DIMS)
    out = Path(workdir) / "out"
    refs = [VideoRef(f"video-{i}", f"/in/video-{i}.mp4", 1000, "e") for i in range(n_videos)]
    night = Night(str(out), DAY, "bench000", output=OutputConfig(format=fmt)).open(refs, dims)
    ledger, tables = night.ledger, night.tables
    writer = StageSpec(ClipWriterStage, (night.writer,), pool=PoolConfig(num_cpus=0.25, concurrency=(1, 4)),
                       compute="sink")
    ds = ray.data.range(n_videos, override_num_blocks=max(1, n_videos // 50)).map_batches(
        synthetic_clips, batch_size=50, batch_format="numpy")

    rss0, cpu0, t0 = _peak_rss_mb(), _cpu_s(), time.perf_counter()
    ledger.begin()
    for records in write_to_sink(ds, [writer], "bench", int(target_mb * 2**20)):
        ledger.add_records(records)
    t_write, cpu_write = time.perf_counter(), _cpu_s()
    manifest = night.commit()
    t_end, cpu_end = time.perf_counter(), _cpu_s()
    ray.shutdown()
    if tables.commit_point == "table log":  # mmbatch.tables.tables.TABLE_LOG
        sizes = [size for _, size, _ in tables.files_of_date("clips", DAY)]
    else:
        sizes = [(out / "clips" / f"run_date={DAY}" / f).stat().st_size for f in manifest["outputs"]["clip_files"]]
    return {
        "measure": "write_commit", "format": fmt, "clips": n_clips, "videos": n_videos, "target_file_mb": target_mb,
        "scored": manifest["counts"]["scored"], "clips_committed": manifest["counts"]["clips"],
        "wall_seconds": round(t_end - t0, 2), "commit_seconds": round(t_end - t_write, 3),
        "driver_cpu_ms_per_1k_clips": round(1000 * (cpu_end - cpu0) / n_clips * 1000, 2),
        "driver_cpu_ms_per_1k_clips_write_phase": round(1000 * (cpu_write - cpu0) / n_clips * 1000, 2),
        "driver_peak_rss_mb": round(_peak_rss_mb(), 1), "driver_rss_before_mb": round(rss0, 1),
        "files": len(sizes), "mean_file_mb": round(sum(sizes) / max(1, len(sizes)) / 2**20, 1),
        "min_file_mb": round(min(sizes) / 2**20, 1) if sizes else 0,
    }


def run_skip(n_videos: int, n_nights: int, workdir: str) -> dict:
    """The skip check of a new night over an archive of `n_videos` scored on `n_nights` nights."""
    import pyarrow as pa

    from mmbatch import storage
    from mmbatch.inputs.sources import VideoRef
    from mmbatch.night.state import skipped_videos, write_state
    from mmbatch.output.layout import OutputLayout, run_id_for
    from mmbatch.schema import STATE_SCHEMA
    from mmbatch.tables.tables import ParquetTables

    out = Path(workdir) / "archive"
    fs, root = storage.filesystem(str(out))
    (out / "_runs").mkdir(parents=True, exist_ok=True)
    run_ids = []
    for k in range(n_nights):
        day = DAY - dt.timedelta(days=n_nights - k)
        run_ids.append(run_id_for(day, "bench000"))
        (out / "_runs" / f"{run_ids[-1]}.json").write_text(json.dumps({"run_id": run_ids[-1]}))
    ids = [f"video-{i}" for i in range(n_videos)]
    days = [DAY - dt.timedelta(days=1 + i % n_nights) for i in range(n_videos)]
    state = pa.table({"video_id": ids, "etag": ["e"] * n_videos, "size_bytes": pa.array([1000] * n_videos, pa.int64()),
                      "model_fingerprint": ["bench000"] * n_videos,
                      "run_id": [run_id_for(d, "bench000") for d in days], "run_date": pa.array(days, pa.date32())},
                     schema=STATE_SCHEMA)
    layout = OutputLayout(root, DAY, run_id_for(DAY, "bench000"))
    write_state(fs, layout, state, set(run_ids))
    del state
    refs = [VideoRef(i, f"/in/{i}.mp4", 1000, "e") for i in ids]
    rss0, t0 = _peak_rss_mb(), time.perf_counter()
    skipped = skipped_videos(fs, layout, ParquetTables(fs, root, str(out)), refs, {}, "bench000")
    seconds = time.perf_counter() - t0
    return {"measure": "skip_check", "archive_videos": n_videos, "archive_nights": n_nights,
            "skipped": len(skipped), "skip_check_seconds": round(seconds, 3),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_before_mb": round(rss0, 1),
            "state_file_mb": round((out / "state" / "state.parquet").stat().st_size / 2**20, 2)}


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=str(REPO))
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step {args} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    p.add_argument("--target-file-mb", type=float, default=128.0)
    p.add_argument("--format", nargs="+", default=["parquet"], choices=["parquet", "delta", "iceberg"],
                   help="output formats to write and commit (each size runs once per format)")
    p.add_argument("--archive-videos", type=int, default=100_000)
    p.add_argument("--archive-nights", type=int, default=365)
    p.add_argument("--one", choices=["write", "skip"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one == "write":
        print(json.dumps(run_write(args.clips[0], args.workdir, args.target_file_mb, args.format[0])))
        return
    if args.one == "skip":
        print(json.dumps(run_skip(args.archive_videos, args.archive_nights, args.workdir)))
        return
    report = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "write_commit": [], "skip_check": None}
    for n in args.clips:
        for fmt in args.format:
            with tempfile.TemporaryDirectory(prefix="mmbatch-scale-") as work:
                report["write_commit"].append(_child(["--one", "write", "--clips", str(n), "--workdir", work,
                                                       "--target-file-mb", str(args.target_file_mb), "--format", fmt]))
    if args.archive_videos:
        with tempfile.TemporaryDirectory(prefix="mmbatch-scale-") as work:
            report["skip_check"] = _child(["--one", "skip", "--archive-videos", str(args.archive_videos),
                                           "--archive-nights", str(args.archive_nights), "--workdir", work])
    rows = [r for r in report["write_commit"] if r["format"] == args.format[0]]
    report["driver_rss_growth_mb_largest_vs_smallest"] = round(rows[-1]["driver_peak_rss_mb"] - rows[0]["driver_peak_rss_mb"], 1)
    report["formats_vs_parquet"] = format_ratios(report["write_commit"])
    print(json.dumps(report))


def format_ratios(rows: list[dict]) -> list[dict]:
    """Commit seconds and driver peak RSS of each table format over plain Parquet's, per size."""
    base = {r["clips"]: r for r in rows if r["format"] == "parquet"}
    out = []
    for r in rows:
        b = base.get(r["clips"])
        if r["format"] != "parquet" and b:
            out.append({"format": r["format"], "clips": r["clips"],
                        "commit_seconds_ratio": round(r["commit_seconds"] / max(b["commit_seconds"], 1e-3), 2),
                        "driver_peak_rss_ratio": round(r["driver_peak_rss_mb"] / b["driver_peak_rss_mb"], 2)})
    return out


if __name__ == "__main__":
    main()
