"""Encoder adapters, one per model task type (start-up inspection of configured models: inspect.py).
Which class serves which task is declared with its modality (mmbatch.modalities)."""

from __future__ import annotations

from mmbatch.modalities import encoder_class

__all__ = ["encoder_class"]
