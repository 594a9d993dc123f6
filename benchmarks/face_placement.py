#!/usr/bin/env python
"""Where faces are found: in the face actor (`models.face.find_faces_in: actor`) or in the decode
workers (`decode`). The real job, a pool per model, the quality preset's face model only, on videos
of a real face (scikit-image's astronaut photo moving over a 640x360 frame; a third of the videos
show photos without a face), each placement run `--repeats` times, alternating. Prints JSON: per
placement the job's wall seconds and clips a second, the face actor's CPU ms a clip (Ray Data's
stats: what bounds one face actor on a GPU node, where it holds one core), the decode children's
ms a clip (each row's decode_seconds), the pools' busy shares, and whether both placements wrote
the same face columns.

    python benchmarks/face_placement.py [--videos 12] [--seconds 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FACE_COLUMNS = ["clip_id", "face_count", "face_expression", "face_valence", "has_face"]


def write_corpus(folder: Path, videos: int, seconds: float, fps: int = 15) -> None:
    """`videos` clips of a photo gliding over a grey 640x360 frame: the astronaut (a face) in two of
    three, a photo without one in the rest."""
    import av
    import cv2
    import skimage.data

    folder.mkdir(parents=True)
    photos = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(),
              "chelsea": skimage.data.chelsea()}
    for v in range(videos):
        name = "astronaut" if v % 3 else ("coffee", "chelsea")[v // 3 % 2]
        photo = cv2.resize(photos[name], (300, 300), interpolation=cv2.INTER_AREA)
        rng = np.random.default_rng(v)
        with av.open(str(folder / f"{name}{v:03d}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
            for k in range(int(seconds * fps)):
                frame = np.full((360, 640, 3), 96, np.uint8) + rng.integers(0, 12, (360, 640, 3), dtype=np.uint8)
                x = int(170 + 120 * np.sin(2 * np.pi * k / (fps * 8)))  # glides left and right inside the centre square
                frame[30:330, x:x + 300] = photo
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


def face_config(where: str):
    from mmbatch.config import load_config, parse_config

    raw = load_config(REPO / "pipelines" / "quality.yaml").model_dump(mode="json")
    raw["models"] = {"face": {**raw["models"]["face"], "find_faces_in": where,
                              "pool": {"num_cpus": 0.5, "concurrency": [1, 1], "batch_size": 16}}}
    raw["encoders"]["placement"] = "per_modality"
    raw["fusion"]["pool"] = {"num_cpus": 0.1, "concurrency": [1, 1], "batch_size": 64}
    raw["decode"]["pool"] = {"num_cpus": 0.5, "concurrency": [2, 2], "batch_size": 1}
    return parse_config(raw, f"face placement {where}")


def one_run(where: str, src: Path, out: Path) -> tuple[dict, object]:
    import pyarrow.parquet as pq
    import ray

    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.schema import partitioning

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        t0 = time.perf_counter()
        result = run_pipeline(face_config(where), str(src), str(out), dt.date(2026, 1, 1))
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    timings = result.manifest["timings"]
    face = next(s for s in timings["stages"] if "MapBatches(face)" in s["operator"])
    clips = pq.read_table(out / "clips", partitioning=partitioning(), columns=FACE_COLUMNS).to_pandas()
    report = {"clips": result.clips, "wall_s": round(wall, 1), "clips_per_s": round(result.clips / wall, 2),
              "face_actor_cpu_ms_per_clip": round(1000 * face["cpu_seconds"] / result.clips, 1),
              "decode_ms_per_clip": round(1000 * timings["decode_seconds"] / result.clips, 1),
              "pool_busy_share": timings["pool_busy_share"]}
    return report, clips.sort_values("clip_id").reset_index(drop=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"actor": [], "decode": []}
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "videos"
        write_corpus(src, args.videos, args.seconds)
        for r in range(args.repeats):
            for where in ("actor", "decode"):
                report, faces = one_run(where, src, Path(tmp) / f"out-{where}-{r}")
                runs[where].append(report)
                written.setdefault(where, faces)
    a, d = written["actor"], written["decode"]
    exact = ["clip_id", "face_count", "face_expression", "has_face"]
    same = a[exact].equals(d[exact]) and np.array_equal(a["face_valence"].astype(float), d["face_valence"].astype(float),
                                                        equal_nan=True)
    summary = {where: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "clips_per_s",
                                                                         "face_actor_cpu_ms_per_clip", "decode_ms_per_clip")}
               for where, rs in runs.items()}
    print(json.dumps({"measure": "face detection in the face actor vs in decode (a pool per model, 2 CPUs)",
                      "videos": args.videos, "seconds": args.seconds, "clips": runs["actor"][0]["clips"],
                      "clips_with_a_face": int(a["has_face"].sum()), "same_faces_and_scores": bool(same),
                      "median": summary, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
