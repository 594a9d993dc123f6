"""Encoder adapters, one per model task type, and the start-up check of configured models."""

from __future__ import annotations

from mmbatch.config import EncoderConfig, PipelineConfig
from mmbatch.errors import ModelLoadError
from mmbatch.schema import EmbeddingDims


def encoder_class(task: str):
    from mmbatch.encoders.audio import AudioClassificationEncoder
    from mmbatch.encoders.text import TextClassificationEncoder, TextZeroShotEncoder
    from mmbatch.encoders.vision import ImageZeroShotEncoder

    return {
        "image_zero_shot": ImageZeroShotEncoder,
        "audio_classification": AudioClassificationEncoder,
        "text_classification": TextClassificationEncoder,
        "text_zero_shot": TextZeroShotEncoder,
    }[task]


def _model_config(enc: EncoderConfig, storage_options: dict):
    from transformers import AutoConfig

    from mmbatch.models import load_pretrained, resolve_source

    return load_pretrained(AutoConfig, resolve_source(enc.source, storage_options), enc.revision)


def _dim(enc: EncoderConfig, cfg) -> int:
    if enc.task == "image_zero_shot":
        from mmbatch.encoders.vision import image_embedding_dim

        return image_embedding_dim(cfg)
    return int(cfg.hidden_size)


def inspect_models(config: PipelineConfig) -> EmbeddingDims:
    """Read each model's config (no weights) before any Ray work: label tables, dims, sources.

    A model that cannot be found or whose labels do not map is a ModelLoadError now, not an
    actor crash an hour into the run.
    """
    from mmbatch.encoders.labels import label_matrix

    dims = {"vision": 0, "audio": 0, "text": 0}
    models = config.models
    for modality in ("vision", "audio", "text"):
        enc = getattr(models, modality)
        if enc is None:
            continue
        cfg = _model_config(enc, config.storage_options)
        if enc.task in ("audio_classification", "text_classification"):
            label_matrix(cfg.id2label, enc.label_map, enc.source)
        dims[modality] = _dim(enc, cfg)
    if models.speech is not None:
        cfg = _model_config(models.speech, config.storage_options)
        if not getattr(cfg, "is_encoder_decoder", False):
            raise ModelLoadError(f"models.speech: {models.speech.source!r} is not a speech-to-text (encoder-decoder) model")
    return EmbeddingDims(**dims)
