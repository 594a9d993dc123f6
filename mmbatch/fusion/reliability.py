"""How far to trust each modality in zero-shot fusion: `fusion.reliability`, learned from labels.

Zero-shot fusion weighs each present modality by its confidence (mmbatch/fusion/stage.py). A
model that is confident and wrong (a weak, mismatched or random one) then takes signal away from a
good one. `fusion.reliability: {modality: r}` multiplies each modality's confidence by r before the
weights are renormalised: 0 leaves a modality out of the fused score (its own columns are still
written), 1 (the default) trusts its confidence as it is.

`fit_reliability` learns r from labelled clips of a night that was already scored: the clips table
keeps each modality's valence and its fusion weight (its share of the clip's confidence), so the
fused valence under any r is recomputed exactly, without rescoring. It searches a small grid
(a few numbers per modality: little to overfit) for the r whose fused valence correlates best with
the labels; the best single modality alone is on the grid, so on the data it was fitted on the
result is never worse than that modality's.
"""

from __future__ import annotations

import itertools

import numpy as np

GRID = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def fused_valence(valences: dict[str, np.ndarray], weights: dict[str, np.ndarray],
                  reliability: dict[str, float]) -> np.ndarray:
    """The zero-shot fused valence under `reliability`, from each modality's valence and fusion
    weight as written (NaN where the modality was missing); NaN where no trusted modality is present."""
    num = sum(reliability.get(m, 1.0) * np.nan_to_num(weights[m]) * np.nan_to_num(valences[m]) for m in valences)
    den = sum(reliability.get(m, 1.0) * np.nan_to_num(weights[m]) for m in valences)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), np.nan)


def where_scored(valence: np.ndarray, weight: np.ndarray, missing: float = np.nan) -> np.ndarray:
    """A modality's valence on the clips it was scored on (a finite fusion weight), `missing` elsewhere."""
    return np.where(np.isfinite(weight), valence, missing)


def correlation(pred: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(pred) & np.isfinite(truth)
    if ok.sum() < 3 or np.std(pred[ok]) == 0 or np.std(truth[ok]) == 0:
        return float("-inf")
    return float(np.corrcoef(pred[ok], truth[ok])[0, 1])


def fit_reliability(valences: dict[str, np.ndarray], weights: dict[str, np.ndarray], truth: np.ndarray,
                    grid: tuple[float, ...] = GRID) -> tuple[dict[str, float], dict[str, float]]:
    """(reliability, score): the grid point whose fused valence correlates best with `truth` (label
    valence), and the correlation of each single modality and of the fit. The best single modality
    is fixed at 1 (only ratios matter); ties go to the smaller weights."""
    singles = {m: correlation(where_scored(valences[m], weights[m]), truth) for m in valences}
    best = max(singles, key=singles.get)
    others = [m for m in valences if m != best]
    chosen, chosen_score = {m: 0.0 for m in others} | {best: 1.0}, float("-inf")
    for values in itertools.product(grid, repeat=len(others)):
        reliability = dict(zip(others, values)) | {best: 1.0}
        score = correlation(fused_valence(valences, weights, reliability), truth)
        if score > chosen_score + 1e-9:
            chosen, chosen_score = reliability, score
    return chosen, {**{f"{m}_only": s for m, s in singles.items()}, "fitted": chosen_score}
