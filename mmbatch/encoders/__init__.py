"""Encoder adapters, one per model task type, and the start-up check of configured models."""

from __future__ import annotations

from mmbatch.config import EncoderConfig, PipelineConfig
from mmbatch.errors import ModelLoadError
from mmbatch.schema import EmbeddingDims


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


def _model_config(enc: EncoderConfig, storage_options: dict):
    from transformers import AutoConfig

    from mmbatch.models import load_pretrained, resolve_source

    return load_pretrained(AutoConfig, resolve_source(enc.source, storage_options), enc.revision)


def _dim(enc: EncoderConfig, cfg) -> int:
    if enc.task in ("image_zero_shot", "image_classification"):
        from mmbatch.encoders.vision import image_embedding_dim

        return image_embedding_dim(cfg)
    if enc.task == "audio_zero_shot":
        return int(cfg.projection_dim)
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
        if enc.task in ("audio_classification", "text_classification", "image_classification"):
            label_matrix(cfg.id2label, enc.label_map, enc.source)
        dims[modality] = _dim(enc, cfg)
    if models.speech is not None:
        cfg = _model_config(models.speech, config.storage_options)
        if not getattr(cfg, "is_encoder_decoder", False):
            raise ModelLoadError(f"models.speech: {models.speech.source!r} is not a speech-to-text (encoder-decoder) model")
    if config.fusion.mode == "trained":
        dims["joint"] = _check_fusion_checkpoint(config, dims)
    return EmbeddingDims(**dims)


def _check_fusion_checkpoint(config: PipelineConfig, dims: dict[str, int]) -> int:
    from mmbatch.fusion_model import MultimodalFusionConfig
    from mmbatch.models import load_pretrained, resolve_source

    f = config.fusion
    cfg = load_pretrained(MultimodalFusionConfig, resolve_source(f.checkpoint, config.storage_options), f.revision)
    for m, dim in dims.items():
        want = getattr(cfg, f"{m}_dim")
        if want and want != dim:
            raise ModelLoadError(
                f"fusion checkpoint {f.checkpoint!r} expects {m} embeddings of size {want}, "
                f"but models.{m} produces {dim or 'none'}"
            )
    return int(cfg.joint_dim)
