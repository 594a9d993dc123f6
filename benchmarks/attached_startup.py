#!/usr/bin/env python
"""How long a short night takes attached to a cluster, where the pools' start-up is most of it.

A simulated cluster (tests/cluster.py: a 0-CPU head, two CPU-type nodes and a GPU-type node, 1 CPU
each), a moto S3 endpoint, and the real job attached through RAY_ADDRESS with the node-typed tiny
config: per-model pools (five actors on the GPU-type node) and the colocated encoders (one actor),
alternating, `--repeats` nights each over `--videos` 6 s videos. Prints JSON: each night's wall
seconds and the medians. Run it from two checkouts to compare them (the job runs the code of the
checkout this file is in):

    python benchmarks/attached_startup.py > benchmarks/results/attached-startup-2core.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
KEY, SECRET = "AKIABENCH", "bench-secret"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import boto3
    import s3fs
    from cluster import LocalCluster, node_typed_config, score_job
    from s3server import moto_server

    from mmbatch.synth import write_video

    work = Path(tempfile.mkdtemp(prefix="attached-startup-"))
    nights = []
    with moto_server() as endpoint:
        creds = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name="us-east-1").create_bucket(Bucket="bench")
        fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
        for i in range(args.videos):
            write_video(work / f"v{i}.mp4", seconds=6.0, seed=i, width=64, height=48)
            fs.put(str(work / f"v{i}.mp4"), f"bench/in/v{i}.mp4")
        with LocalCluster(work) as cluster:
            cluster.add_node(1, resources={"cpu_node": 1000})
            cluster.add_node(1, resources={"cpu_node": 1000})
            cluster.add_node(1, num_gpus=1, resources={"gpu_node": 1000})
            for n in range(args.repeats):
                for per_modality in (True, False):
                    folder = work / f"cfg-{per_modality}"
                    folder.mkdir(exist_ok=True)
                    config = node_typed_config(folder, per_modality=per_modality)
                    t0 = time.time()
                    r = score_job(cluster, config, input_uri="s3://bench/in/", output_uri=f"s3://bench/out-{n}-{per_modality}/",
                                  run_date="2026-11-27", env=creds)
                    nights.append({"pools": "per_modality" if per_modality else "colocated", "exit_code": r.returncode,
                                   "wall_s": round(time.time() - t0, 1),
                                   "summary": next((x for x in r.stdout.splitlines() if " committed: " in x), None)})
                    print(json.dumps(nights[-1]), file=sys.stderr, flush=True)
    medians = {p: statistics.median(x["wall_s"] for x in nights if x["pools"] == p) for p in ("per_modality", "colocated")}
    print(json.dumps({"machine": "2-core CI machine kind", "cluster": "head (0 CPU) + 2 CPU-type + 1 GPU-type node, 1 CPU each",
                      "videos": args.videos, "video_s": 6.0, "median_wall_s": medians, "nights": nights}, indent=1))


if __name__ == "__main__":
    main()
