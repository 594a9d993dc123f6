"""Quality metrics of the benchmarks (and of the speech tests): pure functions on arrays and strings."""

from __future__ import annotations

import re

import numpy as np


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    scores = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # tied scores share their average rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def macro_f1(true: np.ndarray, pred: np.ndarray, classes: int = 3) -> float:
    scores = []
    for c in range(classes):
        tp, fp, fn = np.sum((pred == c) & (true == c)), np.sum((pred == c) & (true != c)), np.sum((pred != c) & (true == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (apostrophes kept): what a word error rate compares.
    Hyphens and slashes split words, as a recogniser writes them apart."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("’", "'")).split()


def word_errors(said: str, heard: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, words said): Levenshtein distance over words."""
    ref, hyp = words(said), words(heard)
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1]), len(ref)


def word_error_rate(said: str, heard: str) -> float:
    errors, n = word_errors(said, heard)
    return errors / max(1, n)
