#!/usr/bin/env python
"""End-to-end clips/s against two references on the same data in the same run (DESIGN §7).

  decode_only  – the decode stage alone over all videos, in this process (the CPU floor)
  sequential   – a naive loop: decode one video, then run every model on its clips, next video
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
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


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
    from mmbatch.encoders import encoder_class, inspect_models
    from mmbatch.encoders.speech import SpeechRecognitionStage
    from mmbatch.fusion import FusionStage
    from mmbatch.sources import discover
    from mmbatch.synth import write_video

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
            for row in decode({k: np.array([v]) for k, v in ref.as_row().items()}):
                n_clips += 1
        t = time.perf_counter() - t0
        report["decode_only"] = {"clips": n_clips, "seconds": round(t, 2), "clips_per_s": round(n_clips / t, 2)}

        m = config.models
        stages = []
        if m.vision:
            stages.append(encoder_class(m.vision.task)(m.vision, dim=dims.vision, drop_inputs=True))
        if m.speech:
            stages.append(SpeechRecognitionStage(m.speech))
        if m.audio:
            stages.append(encoder_class(m.audio.task)(m.audio, dim=dims.audio, drop_inputs=True))
        if m.text:
            stages.append(encoder_class(m.text.task)(m.text, dim=dims.text))
        stages.append(FusionStage(config.fusion, dims))
        for s in stages:
            s.setup()
        t0 = time.perf_counter()
        for ref in refs:
            batch = concat(list(decode({k: np.array([v]) for k, v in ref.as_row().items()})))
            for s in stages:
                batch = s(batch)
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
