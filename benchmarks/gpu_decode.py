#!/usr/bin/env python
"""Decode on the GPU (NVDEC) against the CPU, on the same clips: does it free the cores that feed the GPU?

On a GPU node the models leave the CPUs and decode is most of what is left (docs/performance.md:
83 ms of CPU a clip on real footage). PyAV's wheels carry FFmpeg's CUDA hwaccel (NVDEC, loaded at
run time from the driver), so the pipeline's own frame reader (`PyAVVideo`: seek to the keyframe,
decode forward skipping unreferenced frames, one scaler a file) can decode on the GPU with frames
downloaded to memory. Per clip (8 frames at 224 px from 10 s, as the production config asks), for
each way: CPU ms of this process, wall ms, and the largest pixel difference from the CPU's frames.

    python benchmarks/gpu_decode.py                          # real footage (footage.py), 8 videos
    python benchmarks/gpu_decode.py --videos-dir DIR         # your own videos
    python benchmarks/gpu_decode.py --ways cpu               # anywhere: the CPU figure alone

Where no CUDA device can be opened the `cuda` way reports why instead of figures.
The last line of output is the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from cpu_account import machine_info  # noqa: E402
from footage import describe, make_footage_corpus  # noqa: E402

SIZE = 224  # the production config's decode.image_size


def clip_times(duration_s: float) -> list[np.ndarray]:
    """Each clip's frame times, planned and sampled as the decode stage does with the production
    clip settings (pipelines/video_sentiment.yaml: 10 s windows, 8 frames)."""
    import yaml

    from mmbatch.config import ClipConfig
    from mmbatch.decode.planner import frames_for, plan_clips, sample_times

    clips = ClipConfig(**yaml.safe_load((REPO / "pipelines" / "video_sentiment.yaml").read_text())["clips"])
    return [sample_times(span, frames_for(span, clips)) for span in plan_clips(duration_s, clips)]


def decode_all(paths: list[Path], way: str) -> tuple[dict, list[np.ndarray]]:
    """Every clip of `paths` decoded one way: timings, and the frames for comparison."""
    from mmbatch.decode.backend import probe
    from mmbatch.decode.planner import frame_indices
    from mmbatch.decode.video import PyAVCudaVideo, PyAVVideo, check_cuda_decoder

    if way == "cuda":
        check_cuda_decoder()  # as the decode stage does with decode.hwaccel: cuda
    reader = PyAVCudaVideo if way == "cuda" else PyAVVideo  # the job's own readers
    frames, clips = [], 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for path in paths:
        info = probe(str(path))
        video = reader(str(path), info, SIZE)
        try:
            for times in clip_times(video.duration_s):
                frames.append(video.frames(frame_indices(video.timestamps[:, 0], times)))
                clips += 1
        finally:
            video.close()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"clips": clips, "cpu_ms_per_clip": round(1000 * cpu / clips, 2),
            "wall_ms_per_clip": round(1000 * wall / clips, 2), "clips_per_s": round(clips / wall, 2)}, frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--videos-dir", default=None, help="your own videos instead of the footage corpus")
    ap.add_argument("--work-dir", default="/tmp/mmbatch-gpu-decode", help="the footage corpus is kept here")
    ap.add_argument("--ways", default="cpu,cuda")
    ap.add_argument("--repeats", type=int, default=2, help="passes of each way; the last is reported (warm caches)")
    args = ap.parse_args()
    if args.videos_dir:
        from throughput import own_corpus

        paths, _ = own_corpus(Path(args.videos_dir))
    else:
        paths = make_footage_corpus(Path(args.work_dir) / f"corpus-footage-{args.videos}x{args.seconds:g}s",
                                    args.videos, args.seconds)
    report: dict = {"benchmark": "gpu_decode", "machine": machine_info(), "videos": len(paths),
                    "footage": describe(paths[0]), "image_size": SIZE, "ways": {}}
    reference = None
    for way in args.ways.split(","):
        try:
            for _ in range(args.repeats):
                result, frames = decode_all(paths, way)
        except Exception as err:  # no device, no driver, a stream NVDEC cannot take
            report["ways"][way] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            print(json.dumps({way: report["ways"][way]}), flush=True)
            continue
        if reference is None:
            reference = frames
        else:
            result["max_abs_diff_from_" + args.ways.split(",")[0]] = int(max(
                np.abs(a.astype(np.int16) - b.astype(np.int16)).max() for a, b in zip(reference, frames, strict=True)))
        report["ways"][way] = result
        print(json.dumps({way: result}), flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
