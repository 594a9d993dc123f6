#!/usr/bin/env python
"""End-to-end clips/s against two references on the same data in the same run (DESIGN §7).

  decode_only  – the decode stage alone over all videos, in this process (the CPU floor)
  sequential   – a naive loop: decode one video, then run every model on its clips, next video;
                 built from the same stage list (`stage_specs`) the Ray Data pipeline runs
  pipeline     – the Ray Data pipeline (run_pipeline) on a local Ray

Prints one JSON object. Default data: 12 videos x 30 s at 640x360 with audio, tiny models.

    python benchmarks/throughput.py --videos 12 --seconds 30 --config pipelines/tiny.yaml
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def concat(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One batch from many; a column whose rows differ in shape becomes an object array, as
    Ray Data hands ragged columns to the stages."""
    out = {}
    for k in rows[0]:
        parts = [r[k] for r in rows]
        try:
            out[k] = np.concatenate(parts)
        except ValueError:
            out[k] = np.empty(sum(len(p) for p in parts), dtype=object)
            out[k][:] = [row for p in parts for row in p]
    return out


def run_in_process(stages, ref_batch: dict) -> dict:
    """One video through the stage list in this process (fan-out stages yield clip batches)."""
    import inspect

    batch = ref_batch
    for stage in stages:
        out = stage(batch)
        batch = concat(list(out)) if inspect.isgenerator(out) else out
    return batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--config", default=str(REPO / "pipelines" / "tiny.yaml"))
    ap.add_argument("--num-cpus", type=int, default=None)
    args = ap.parse_args()

    from mmbatch.config import load_config
    from mmbatch.decode.stage import DecodeStage
    from mmbatch.encoders import inspect_models
    from mmbatch.sources import discover
    from mmbatch.synth import write_video
    from pipelines.video_sentiment import stage_specs

    config = load_config(args.config)
    report: dict = {"videos": args.videos, "seconds_per_video": args.seconds,
                    "resolution": f"{args.width}x{args.height}", "config": Path(args.config).name,
                    "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        for i in range(args.videos):
            write_video(src / f"v{i:03d}.mp4", seconds=args.seconds, width=args.width, height=args.height, seed=i)
        refs = discover(str(src))
        dims = inspect_models(config)

        decode = DecodeStage(config)
        decode.setup()
        t0 = time.perf_counter()
        n_clips = 0
        for ref in refs:
            for _row in decode({k: np.array([v]) for k, v in ref.as_row().items()}):
                n_clips += 1
        t = time.perf_counter() - t0
        report["decode_only"] = {"clips": n_clips, "seconds": round(t, 2), "clips_per_s": round(n_clips / t, 2)}

        stages = [spec.build() for spec in stage_specs(config, dims)]  # the pipeline's list, up to fusion
        for s in stages:
            s.setup()
        t0 = time.perf_counter()
        for ref in refs:
            run_in_process(stages, {k: np.array([v]) for k, v in ref.as_row().items()})
        t = time.perf_counter() - t0
        report["sequential"] = {"clips": n_clips, "seconds": round(t, 2), "clips_per_s": round(n_clips / t, 2)}

        import ray

        from pipelines.video_sentiment import run_pipeline

        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        t0 = time.perf_counter()
        result = run_pipeline(config, str(src), str(Path(tmp) / "out"), dt.date(2026, 1, 1))
        t = time.perf_counter() - t0
        ray.shutdown()
        report["pipeline"] = {"clips": result.clips, "seconds": round(t, 2), "clips_per_s": round(result.clips / t, 2),
                              "includes": "discovery, model inspection, actor start-up, Parquet writes, commit"}
    report["pipeline_vs_sequential"] = round(report["pipeline"]["clips_per_s"] / report["sequential"]["clips_per_s"], 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
