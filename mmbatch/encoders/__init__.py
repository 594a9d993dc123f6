"""Encoder adapters, one per model task type (start-up inspection of configured models: inspect.py)."""

from __future__ import annotations


def encoder_class(task: str):
    from mmbatch.encoders.audio import AudioClassificationEncoder, AudioZeroShotEncoder
    from mmbatch.encoders.text import TextClassificationEncoder, TextZeroShotEncoder
    from mmbatch.encoders.vision import ImageClassificationEncoder, ImageZeroShotEncoder

    return {
        "image_zero_shot": ImageZeroShotEncoder,
        "image_classification": ImageClassificationEncoder,
        "audio_classification": AudioClassificationEncoder,
        "audio_zero_shot": AudioZeroShotEncoder,
        "text_classification": TextClassificationEncoder,
        "text_zero_shot": TextZeroShotEncoder,
    }[task]
