"""Map a classifier's own labels onto negative / neutral / positive.

A model's `id2label` is matched, case-insensitively, against the config's `label_map` first,
then these defaults. A label mapped to "ignore" drops out and the rest are renormalised.
A label that matches nothing is a start-up error naming the label and the model.
"""

from __future__ import annotations

import re

import numpy as np

from mmbatch.config import SENTIMENT_CLASSES
from mmbatch.errors import ModelLoadError

DEFAULT_LABEL_MAP: dict[str, str] = {
    # sentiment models
    "negative": "negative", "neg": "negative", "neutral": "neutral", "neu": "neutral",
    "positive": "positive", "pos": "positive", "mixed": "ignore",
    # emotion models (speech emotion recognition, facial expression, text emotion)
    "happy": "positive", "hap": "positive", "happiness": "positive", "joy": "positive",
    "love": "positive", "excited": "positive", "amusement": "positive", "pleasant": "positive",
    "sad": "negative", "sadness": "negative", "angry": "negative", "ang": "negative",
    "anger": "negative", "disgust": "negative", "disgusted": "negative", "dis": "negative",
    "fear": "negative", "fearful": "negative", "fea": "negative", "contempt": "negative",
    "frustrated": "negative", "calm": "neutral", "surprise": "ignore", "surprised": "ignore",
    "sur": "ignore", "other": "ignore", "unknown": "ignore",
}
_STARS = re.compile(r"^([1-5])\s*stars?$")
_GENERIC = re.compile(r"^label_(\d+)$")


def _default_for(label: str, n_labels: int) -> str | None:
    low = label.strip().lower()
    if low in DEFAULT_LABEL_MAP:
        return DEFAULT_LABEL_MAP[low]
    if m := _STARS.match(low):
        return {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"}[int(m.group(1))]
    if (m := _GENERIC.match(low)) and n_labels in (2, 3):
        # LABEL_0..2 is the common negative/neutral/positive order; 2 labels: negative/positive.
        order = SENTIMENT_CLASSES if n_labels == 3 else ("negative", "positive")
        idx = int(m.group(1))
        return order[idx] if idx < n_labels else None
    return None


def label_matrix(id2label: dict[int, str], overrides: dict[str, str], model_name: str) -> np.ndarray:
    """(num_labels, 3) 0/1 matrix: row i marks the class label i counts towards."""
    n = len(id2label)
    if n == 0:
        raise ModelLoadError(f"model {model_name!r} declares no labels (id2label is empty)")
    matrix = np.zeros((n, 3), dtype=np.float32)
    unmapped = []
    for i in range(n):
        label = str(id2label[i])
        target = overrides.get(label.lower()) or _default_for(label, n)
        if target is None:
            unmapped.append(label)
        elif target != "ignore":
            matrix[i, SENTIMENT_CLASSES.index(target)] = 1.0
    if unmapped:
        raise ModelLoadError(
            f"model {model_name!r} has labels that cannot be mapped to negative/neutral/positive: "
            f"{unmapped}; add them to label_map in the config (value: negative, neutral, positive or ignore)"
        )
    if matrix.sum() == 0 or (matrix.sum(axis=0) == 0).sum() >= 2:
        raise ModelLoadError(
            f"model {model_name!r}: its labels map onto fewer than two sentiment classes; check label_map"
        )
    return matrix


def to_sentiment(probs: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Per-label probabilities (n, L) -> class probabilities (n, 3), renormalised over kept labels."""
    out = probs @ matrix
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.maximum(total, 1e-12), 1.0 / 3).astype(np.float32)
