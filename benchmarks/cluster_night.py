#!/usr/bin/env python
"""What a lost node costs a night, on a simulated multi-node cluster (tests/cluster.py).

A 0-CPU head, `--cpu-nodes` CPU-type nodes and one GPU-type node (1 CPU each; the "GPU" is a
declared resource, the models run on CPU), a moto S3 endpoint every node reaches, and the real
job attached through RAY_ADDRESS with the node-typed tiny config (decode on CPU-type nodes, the
models and fusion on the GPU-type node). Each scenario is one night on a fresh output:

  none        nothing lost: the baseline
  gpu         the GPU-type node is killed once the first clips are staged; a replacement joins
  decode+gpu  per-model pools and a fusion pool, one decode actor: its CPU-type node is killed a
              few seconds after the actor comes up (while it decodes), then the GPU-type node once
              the first clips are staged or decode is back up on the other CPU node, whichever
              comes first, so every kind of actor is lost with work still to come; the other CPU
              node and a GPU-type replacement carry on (tests/test_cluster.py's lost-node night)

Reports per scenario: exit code, wall seconds, seconds to the first staged clip file (null when
the GPU-type node went first), seconds from the (first) loss to the job's end, rows and distinct
clip ids (exactly once), and where each pool's actors ended. Lost nodes are replaced between
scenarios, so each starts on the same cluster. The last line of output is the report as JSON.

    python benchmarks/cluster_night.py                           # 24 videos x 6 s, every scenario
    python benchmarks/cluster_night.py --videos 48 --scenarios none,gpu --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the harness: tests/cluster.py, tests/s3server.py
from cluster import LocalCluster, lose_nodes_mid_night, node_typed_config, score_job, stage_of  # noqa: E402
from s3server import moto_server  # noqa: E402

KEY, SECRET = "AKIABENCHCLUSTER", "bench-secret"
SCENARIOS = ("none", "gpu", "decode+gpu")


def start_s3(endpoint: str):
    import boto3
    import s3fs

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket="bench")
    return s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})


def upload_corpus(fs, folder: Path, videos: int, seconds: float) -> None:
    from mmbatch.synth import write_video

    for i in range(videos):
        path = folder / f"v{i:03d}.mp4"
        write_video(path, seconds=seconds, seed=i, width=64, height=48)
        fs.put(str(path), f"bench/in/{path.name}")


def night(cluster: LocalCluster, fs, endpoint: str, work: Path, scenario: str, output: str) -> dict:
    """One night; `scenario` says which nodes die, and when."""
    cfg = node_typed_config(work, per_modality=scenario == "decode+gpu", file_mb=0.001)
    if scenario == "decode+gpu":  # one decode actor, so its node is the one lost
        raw = yaml.safe_load(cfg.read_text())
        raw["decode"]["pool"]["concurrency"] = [1, 1]
        cfg.write_text(yaml.safe_dump(raw))
    creds = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    before = cluster.actors()
    t0 = time.time()
    proc = score_job(cluster, cfg, input_uri="s3://bench/in/", output_uri=f"s3://{output}", run_date="2026-12-01",
                     env=creds, wait=False)
    try:
        nodes, lost_at, staged = lose_nodes_mid_night(cluster, before, fs, output, proc, timeout_s=600,
                                                      decode_node=scenario == "decode+gpu", gpu_node=scenario != "none")
        log = proc.communicate(timeout=1800)[0]
    finally:
        proc.kill()
    lost = [n.name for n in nodes]
    end = time.time()
    # Lost CPU nodes come back before the next scenario, so each starts on the same cluster.
    for i, node in enumerate(cluster.cpu):
        if node.name in lost:
            cluster.cpu[i] = cluster.add_node(1, resources={"cpu_node": 1000})
    rows = distinct = 0
    if proc.returncode == 0:
        import pyarrow.parquet as pq

        from mmbatch.schema import partitioning

        fs.invalidate_cache()
        ids = pq.read_table(f"{output}/clips", filesystem=fs, partitioning=partitioning(), columns=["clip_id"])
        rows, distinct = ids.num_rows, len(set(ids.column("clip_id").to_pylist()))
    actors = {stage_of(cls): sorted(names) for cls, names in cluster.actor_nodes(before).items() if stage_of(cls)}
    return {"scenario": scenario, "exit_code": proc.returncode, "wall_s": round(end - t0, 1),
            "first_staged_s": None if staged is None else round(staged - t0, 1), "lost_nodes": lost,
            "loss_to_end_s": None if lost_at is None else round(end - lost_at, 1), "rows": rows, "distinct_clips": distinct,
            "actors_ended_on": actors, "log_tail": log.strip().splitlines()[-3:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-nodes", type=int, default=2)
    ap.add_argument("--videos", type=int, default=24, help="enough that a loss at the first staged file lands mid-night")
    ap.add_argument("--seconds", type=float, default=6.0, help="video length (the tiny preset cuts 5 s clips)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    ap.add_argument("--repeats", type=int, default=1, help="nights per scenario (median wall reported)")
    args = ap.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if bad := [s for s in scenarios if s not in SCENARIOS]:
        ap.error(f"unknown scenario(s) {bad}: choose from {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="cluster-night-") as tmp, moto_server() as endpoint:
        work = Path(tmp)
        fs = start_s3(endpoint)
        upload_corpus(fs, work / "videos", args.videos, args.seconds)
        t0 = time.time()
        with LocalCluster(work) as cluster:
            cluster.cpu = [cluster.add_node(1, resources={"cpu_node": 1000}) for _ in range(args.cpu_nodes)]
            cluster.gpu = cluster.add_node(1, num_gpus=1, resources={"gpu_node": 1000})
            start_s = time.time() - t0
            runs = []
            for scenario in scenarios:
                for r in range(args.repeats):
                    runs.append(night(cluster, fs, endpoint, work, scenario, f"bench/out-{scenario}-{r}"))
                    print(json.dumps({k: v for k, v in runs[-1].items() if k != "log_tail"}), file=sys.stderr)
    summary = {}
    for scenario in scenarios:
        mine = [r for r in runs if r["scenario"] == scenario]
        summary[scenario] = {"nights": len(mine), "all_committed": all(r["exit_code"] == 0 for r in mine),
                             "exactly_once": all(r["rows"] == r["distinct_clips"] > 0 for r in mine),
                             "median_wall_s": statistics.median(r["wall_s"] for r in mine)}
    report = {"machine": {"cpus": os.cpu_count()}, "cluster": {"cpu_nodes": args.cpu_nodes, "gpu_nodes": 1,
                                                              "cpus_per_node": 1, "start_s": round(start_s, 1)},
              "corpus": {"videos": args.videos, "seconds": args.seconds}, "summary": summary, "runs": runs}
    print(json.dumps(report))
    ok = all(s["all_committed"] and s["exactly_once"] for s in summary.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
