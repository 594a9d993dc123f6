#!/usr/bin/env python
"""The "clips like this one" index at scale: IVF_PQ build seconds, query p50/p99 and recall@10
against exact search, beside DuckDB's brute-force query over the same clips.

Synthetic clips at the real fused size (1664 dims), drawn around 2,000 cluster centres (real
embeddings cluster by speaker, scene and topic; uniform noise would be the worst case for any
ANN index and says little about real data). The index is the project's own (`mmbatch.readers.similar`:
the same dataset layout, index parameters and query as `mmbatch similar`).

    python benchmarks/similar.py                    # 200,000 clips
    python benchmarks/similar.py --clips 20000      # a quick look

Prints one JSON object (written to --out when given).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DIM = 1664


def synthetic(n: int, noise: float, seed: int = 0):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=noise, size=(n, DIM)).astype(np.float32)
    ids = [f"video-{i // 10}-{i % 10}" for i in range(n)]
    table = pa.table({
        "clip_id": ids, "video_id": [i.rsplit("-", 1)[0] for i in ids],
        "start_s": pa.array(np.arange(n) % 10 * 10.0), "end_s": pa.array(np.arange(n) % 10 * 10.0 + 10),
        "sentiment": ["neutral"] * n, "valence": pa.array(rng.random(n, dtype=np.float32)),
        "model_fingerprint": ["bench000"] * n, "run_id": ["2026-11-27_bench000"] * n,
        "fused_embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        "run_date": ["2026-11-27"] * n})
    return table, vectors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--duckdb-queries", type=int, default=5)
    p.add_argument("--noise", type=float, default=0.6,
                   help="spread of clips around their centre, per dimension (centres: unit normal)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import duckdb
    import lance
    import numpy as np
    import pyarrow as pa

    from mmbatch.readers.similar import ClipIndex, _refresh_ann, similar_clips
    from mmbatch.tables.formats import open_tables

    t0 = time.perf_counter()
    table, vectors = synthetic(args.clips, args.noise)
    with tempfile.TemporaryDirectory(prefix="mmbatch-similar-") as work:
        out = os.path.join(work, "out")
        os.makedirs(os.path.join(out, "_index"))
        index = ClipIndex(open_tables(out))
        lance.write_dataset(table, index.uri(DIM), mode="create", max_rows_per_file=1 << 20)
        t_write = time.perf_counter()
        how = _refresh_ann(index, DIM, min_rows=1)
        t_index = time.perf_counter()
        rng = np.random.default_rng(1)
        picks = rng.choice(args.clips, args.queries, replace=False)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = table["clip_id"].to_pylist()
        latencies, recalls = [], []
        for i in picks:
            q0 = time.perf_counter()
            found = similar_clips(out, ids[i], k=10)
            latencies.append(time.perf_counter() - q0)
            sims = unit @ unit[i]
            sims[i] = -np.inf  # the clip itself is not its own neighbour
            truth = {ids[j] for j in np.argpartition(-sims, 10)[:10]}
            recalls.append(len(truth & {r["clip_id"] for r in found}) / 10)
        con = duckdb.connect()
        con.register("clips", table.set_column(table.schema.get_field_index("fused_embedding"), "fused_embedding",
                                               table["fused_embedding"].cast(pa.list_(pa.float32()))))
        duck = []
        for i in picks[: args.duckdb_queries]:
            q0 = time.perf_counter()
            con.execute("WITH target AS (SELECT fused_embedding FROM clips WHERE clip_id = ?) "
                        "SELECT c.clip_id, list_cosine_similarity(c.fused_embedding, t.fused_embedding) AS s "
                        "FROM clips c, target t WHERE c.clip_id <> ? ORDER BY s DESC LIMIT 10",
                        [ids[i]] * 2).fetchall()
            duck.append(time.perf_counter() - q0)
    ms = sorted(1000 * x for x in latencies)
    result = {
        "measure": "clip_index", "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "clips": args.clips, "dims": DIM, "noise": args.noise, "data_gb": round(vectors.nbytes / 2**30, 2), "index": how,
        "write_seconds": round(t_write - t0, 1), "index_build_seconds": round(t_index - t_write, 1),
        "queries": args.queries, "query_ms_p50": round(ms[len(ms) // 2], 1),
        "query_ms_p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "recall_at_10": round(float(np.mean(recalls)), 4), "recall_at_10_min": round(float(np.min(recalls)), 2),
        "duckdb_brute_force_ms_median": round(1000 * sorted(duck)[len(duck) // 2], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
