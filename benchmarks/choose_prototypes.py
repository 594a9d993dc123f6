#!/usr/bin/env python
"""Choose the `text_zero_shot` prototype sentences for a text model on the Rotten Tomatoes *dev*
pool only (the one `benchmarks/quality.py --split dev` scores; no reported sample holds it), and
print them as the `prompts:` block of a pipeline config.

Starts from the default prototypes (mmbatch/encoders/text_prototypes.py) and drops, one at a time,
the sentence whose removal most improves dev macro-F1 + fresh/rotten AUC, until no removal helps
(or a class would keep fewer than `--min-per-class`). The model embeds every sentence once; the
search is NumPy over those embeddings.

    python benchmarks/choose_prototypes.py --config pipelines/quality.yaml > /tmp/prompts.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
CLASSES = ("negative", "neutral", "positive")


def score(emb: np.ndarray, truth: np.ndarray, cat: np.ndarray, protos: dict[str, np.ndarray],
          keep: dict[str, np.ndarray], temperature: float) -> tuple[float, float, float]:
    from metrics import auc, macro_f1

    centres = []
    for c in CLASSES:
        m = protos[c][keep[c]].mean(0)
        centres.append(m / np.linalg.norm(m))
    logits = emb @ np.stack(centres).T / temperature
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    valence = p[:, 2] - p[:, 0]
    a = auc(valence[cat == "fresh"], valence[cat == "rotten"])
    f1 = macro_f1(truth, p.argmax(1))
    return f1 + a, f1, a


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "pipelines" / "quality.yaml"))
    ap.add_argument("--min-per-class", type=int, default=12)
    args = ap.parse_args()
    import torch
    from quality import dev_pool, load_corpus

    from mmbatch.config import load_config
    from mmbatch.encoders import encoder_class
    from mmbatch.encoders.text_prototypes import DEFAULT_TEXT_PROTOTYPES

    dev = dev_pool(load_corpus())
    cfg = load_config(args.config).models.text
    stage = encoder_class(cfg.task)(cfg.model_copy(update={"prompts": None}), dim=1)
    stage.setup()
    with torch.inference_mode():
        embed = lambda texts: np.concatenate([stage.embed(texts[i:i + 64]).numpy() for i in range(0, len(texts), 64)])  # noqa: E731
        emb = embed(dev["text"].tolist())
        protos = {c: embed(DEFAULT_TEXT_PROTOTYPES[c]) for c in CLASSES}
    cat = dev["category"].to_numpy()
    truth = np.select([cat == "rotten", cat == "plot"], [0, 1], 2)
    keep = {c: np.ones(len(protos[c]), bool) for c in CLASSES}
    best, f1, a = score(emb, truth, cat, protos, keep, cfg.temperature)
    start = {"macro_f1": round(f1, 4), "auc": round(a, 4)}
    while True:
        trials = []
        for c in CLASSES:
            if keep[c].sum() <= args.min_per_class:
                continue
            for i in np.flatnonzero(keep[c]):
                keep[c][i] = False
                trials.append((score(emb, truth, cat, protos, keep, cfg.temperature)[0], c, i))
                keep[c][i] = True
        if not trials or max(trials)[0] <= best + 1e-4:
            break
        best, c, i = max(trials)
        keep[c][i] = False
    _, f1, a = score(emb, truth, cat, protos, keep, cfg.temperature)
    chosen = {c: [s for s, k in zip(DEFAULT_TEXT_PROTOTYPES[c], keep[c]) if k] for c in CLASSES}
    print(json.dumps({"model": cfg.source, "dev_before": start, "dev_after": {"macro_f1": round(f1, 4),
                      "auc": round(a, 4)}, "kept": {c: len(v) for c, v in chosen.items()}}), file=sys.stderr)
    print("    prompts:  # chosen by benchmarks/choose_prototypes.py on the dev sample")
    for c in CLASSES:
        print(f"      {c}:")
        for s in chosen[c]:
            print(f"        - {json.dumps(s)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
