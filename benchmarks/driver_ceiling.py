#!/usr/bin/env python
"""The driver's ceiling: the most clips a second one driver process sustains, and its CPU a clip.

A night's driver plans, runs Ray Data's scheduler, tallies progress and commits; on a big
cluster it must not be what sets the rate. This runs the production graph (a pool per model:
vision, speech, audio, text, fusion, then the writer) with pass-through work: decode hands out
blank frames at the files' own clip plan (no pixel decoded) and each model stage repeats its
first real output for every later batch. What is left is what the driver and Ray do a clip.

The job runs at 1x and 16x the corpus (`throughput.scale`, each run the real job in its own
process); the driver's CPU a clip is the slope between them (start-up cancels out), and its
ceiling is 1,000 / that: the clips a second one driver core could take. The last line of output
is the report as JSON.

    python benchmarks/driver_ceiling.py                          # 24 videos of 5 min, 1x and 16x
    python benchmarks/driver_ceiling.py --videos 8 --scale-factors 1,4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from mmbatch.decode.video import PyAVVideo  # noqa: E402


class BlankVideo(PyAVVideo):
    """A file's frame times from its packets, and black frames: the decode stage's rows, sizes and
    clip plan without decoding a pixel."""

    def frames(self, indices: np.ndarray) -> np.ndarray:
        return np.zeros((len(indices), self.size, self.size, 3), dtype=np.uint8)


class Templated:
    """A stage whose first call is real and whose later calls repeat that call's first row of what
    the stage writes for every row of the batch. Subclassed per stage by `templated`."""

    inner: type

    def __init__(self, *args, **kwargs):
        self._stage, self._template = self.inner(*args, **kwargs), None

    def setup(self) -> None:
        self._stage.setup()

    def __call__(self, batch):
        if self._template is None:
            out = self._stage(batch)
            self._template = {k: out[k][:1] for k in self.writes if k in out}
            return out
        n = len(next(iter(batch.values())))
        return {**batch, **{k: np.repeat(v, n, axis=0) for k, v in self._template.items()}}

    def close(self) -> None:
        getattr(self._stage, "close", lambda: None)()


def templated(stage_cls: type) -> type:
    attrs = {k: getattr(stage_cls, k, ()) for k in ("reads", "may_read", "writes")}
    return type(f"Templated{stage_cls.__name__}", (Templated,), {"inner": stage_cls, "name": stage_cls.name, **attrs})


def run_job(argv: list[str]) -> int:
    """The job (`jobs/score_videos.py`) with every model stage templated."""
    import dataclasses

    from mmbatch.cli import exit_now
    from mmbatch.cli.score import main
    from mmbatch.pipeline import graph

    real = graph.model_specs

    def model_specs(config, dims):
        return [dataclasses.replace(spec, stage_cls=templated(spec.stage_cls)) for spec in real(config, dims)]

    graph.model_specs = model_specs
    exit_now(main(argv))
    return 0


def blank_corpus(folder: Path, videos: int, seconds: float) -> list[Path]:
    """Small real files (64x36 at 2 fps, no audio) that plan as many clips as `seconds` of footage."""
    from mmbatch.synth import write_video

    folder.mkdir(parents=True, exist_ok=True)
    return [p if p.exists() else write_video(p, seconds=seconds, fps=2, width=64, height=36, audio=False)
            for p in (folder / f"b{i:04d}.mp4" for i in range(videos))]


def ceiling_config() -> dict:
    """The tiny preset's models, a pool per model with production's batch sizes (and placement),
    production's clips and frame size, and the blank decoder; each pool small enough for 2 cores."""
    raw = yaml.safe_load((REPO / "pipelines" / "tiny.yaml").read_text())
    production = yaml.safe_load((REPO / "pipelines" / "video_sentiment.yaml").read_text())
    raw["encoders"]["placement"] = "per_modality"
    raw["decode"] = {**raw["decode"], "backend": "driver_ceiling:BlankVideo", "fallback_backend": None,
                     "pool": {"num_cpus": 0.25, "concurrency": [2, 2],
                              "batch_size": production["decode"]["pool"]["batch_size"]}}
    for name, section in [*raw["models"].items(), ("fusion", raw["fusion"])]:
        batch = (production["models"].get(name) or production["fusion"])["pool"]["batch_size"]
        section["pool"] = {**section["pool"], "num_cpus": 0.05, "batch_size": batch}
    raw.setdefault("output", {})["write_cpus"] = 0.15
    return raw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=300.0, help="length each video plans clips for")
    ap.add_argument("--scale-factors", default="1,16")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work-dir", default=None, help="keep the corpus here between runs")
    ap.add_argument("--job", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # the job itself, in its process
    args = ap.parse_args()
    if args.job is not None:
        return run_job(args.job)
    import throughput
    from cpu_account import machine_info

    throughput.JOB = [sys.executable, str(Path(__file__).resolve()), "--job"]
    # Ray's workers inherit the job's environment: the decode child imports BlankVideo from here.
    throughput.JOB_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    raw = throughput.bench_config(ceiling_config())
    factors = sorted({int(f) for f in args.scale_factors.split(",")})
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        root = Path(args.work_dir or tmp)
        paths = blank_corpus(root / f"blank-{args.videos}x{args.seconds:g}s", args.videos, args.seconds)
        scaled = throughput.scale(raw, paths, root / "scale", None, args.seconds, args.repeats, factors)
    driver_ms = [r["cpu_budget"]["by_kind"]["driver"]["ms_per_clip"] for r in scaled["runs"]]
    median_ms = float(np.median(driver_ms))
    report = {"benchmark": "driver_ceiling", "machine": machine_info(), "videos": args.videos,
              "seconds_per_video": args.seconds, "clips": raw["clips"], "image_size": raw["decode"]["image_size"],
              "placement": "per_modality", "pools": ["decode", *raw["models"], "fusion", "write"],
              "driver_ms_per_clip": round(median_ms, 3),
              "driver_ceiling_clips_per_s": round(1000 / median_ms, 1) if median_ms > 0 else None,
              "sustained_clips_per_s": scaled["median_sustained_clips_per_s"], "scale": scaled}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
