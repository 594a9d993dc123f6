"""Start-up inspection of the configured models, on the driver before any Ray work: each model's
config (no weights) under the code-loading policy, label tables, embedding sizes and identities."""

from __future__ import annotations

from mmbatch.config import EncoderConfig, PipelineConfig
from mmbatch.errors import ModelLoadError
from mmbatch.modalities import BY_NAME, encoder_class
from mmbatch.schema import MODALITIES, EmbeddingDims


def _model_config(enc: EncoderConfig, storage_options: dict, what: str):
    """The model's config, read on the driver under the code-loading policy: custom code and
    pickle-only weights are refused here, at start-up, not in an actor an hour later."""
    from transformers import AutoConfig

    from mmbatch.models.loading import check_weights_format, load_pretrained, resolve_source

    resolved = resolve_source(enc.source, storage_options)
    try:
        cfg = load_pretrained(AutoConfig, resolved, enc.revision, trust_remote_code=enc.trust_remote_code)
    except ModelLoadError as err:
        if "trust_remote_code" in str(err) or "custom code" in str(err):
            raise ModelLoadError(f"{what}: {enc.source!r} ships its own Python code; it runs only with "
                                 f"{what}.trust_remote_code: true") from None
        raise
    if getattr(cfg, "auto_map", None) and not enc.trust_remote_code:
        raise ModelLoadError(f"{what}: {enc.source!r} ships its own Python code (auto_map); it runs only with "
                             f"{what}.trust_remote_code: true")
    check_weights_format(enc.source, enc.revision, enc.allow_pickle, resolved, what)
    return cfg


def model_identities(config: PipelineConfig) -> dict[str, str]:
    """Each configured model's identity for the fingerprint (see mmbatch.models.model_identity);
    hub models that cannot be fetched are refused first, at once."""
    from mmbatch.models.loading import check_hub_reachable, is_hub_id, model_identity

    encoders = config.models.configured()
    check_hub_reachable({f"models.{name}.source": (enc.source, enc.revision) for name, enc in encoders.items()
                         if is_hub_id(enc.source)})
    out = {name: model_identity(enc.source, enc.revision, config.storage_options) for name, enc in encoders.items()}
    if config.fusion.mode == "trained":
        out["fusion"] = model_identity(config.fusion.checkpoint, config.fusion.revision, config.storage_options)
    return out


def inspect_models(config: PipelineConfig, identities: dict[str, str] | None = None) -> EmbeddingDims:
    """Read each model's config (no weights) before any Ray work: label tables, dims, sources.

    A model that cannot be found or whose labels do not map is a ModelLoadError now, not an
    actor crash an hour into the run.
    """
    from mmbatch.encoders.labels import label_matrix

    dims = {}
    models = config.models
    for name, enc in models.configured().items():
        if not BY_NAME[name].scored:
            continue
        cls = encoder_class(enc.task)
        _check_installed(cls, name)
        if hasattr(cls, "check_source"):  # not a transformers model: the class checks its folder itself
            from mmbatch.models.loading import resolve_source

            cls.check_source(resolve_source(enc.source, config.storage_options))
            dims[name] = cls.embedding_size(None)
            continue
        cfg = _model_config(enc, config.storage_options, f"models.{name}")
        if enc.task in BY_NAME[name].label_tasks:
            label_matrix(cfg.id2label, enc.label_map, enc.source)
        dims[name] = cls.embedding_size(cfg)
    if models.speech is not None and not _is_checked_ct2_folder(models.speech, config):
        # A transformers model (for the ctranslate2 engine: converted by the actor on first use).
        cfg = _model_config(models.speech, config.storage_options, "models.speech")
        if not getattr(cfg, "is_encoder_decoder", False):
            raise ModelLoadError(f"models.speech: {models.speech.source!r} is not a speech-to-text (encoder-decoder) model")
    if config.fusion.mode == "trained":
        dims["joint"] = _check_fusion_checkpoint(config, dims, identities)
    return EmbeddingDims(**dims)  # "joint": a trained fusion head's size


def _check_installed(cls, name: str) -> None:
    """What the encoder needs installed, or an error naming the install (not an actor crash later)."""
    import importlib.util

    for module, extra in getattr(cls, "requires", ()):
        if importlib.util.find_spec(module) is None:
            raise ModelLoadError(f"models.{name} ({cls.__name__}) needs the {module} package: "
                                 f"pip install 'mmbatch[{extra}]'")


def _is_checked_ct2_folder(enc: EncoderConfig, config: PipelineConfig) -> bool:
    """For the ctranslate2 engine: True when the source is a CTranslate2 folder (checked here);
    False for a transformers model, which the usual checks cover. The engine must be installed."""
    if enc.engine != "ctranslate2":
        return False
    from mmbatch.encoders.ct2_whisper import check_ct2_folder, check_installed, ct2_source_folder

    check_installed()
    folder = ct2_source_folder(enc.source, enc.revision, config.storage_options)
    if folder is None:
        return False
    check_ct2_folder(folder, enc.source)
    return True


def _check_fusion_checkpoint(config: PipelineConfig, dims: dict[str, int], identities: dict[str, str] | None) -> int:
    from mmbatch.fusion.model import MultimodalFusionConfig
    from mmbatch.models.loading import load_pretrained, resolve_source

    f = config.fusion
    cfg = load_pretrained(MultimodalFusionConfig, resolve_source(f.checkpoint, config.storage_options), f.revision)
    for m in MODALITIES:
        want, dim = getattr(cfg, f"{m}_dim", 0), dims.get(m, 0)
        if want and want != dim:
            raise ModelLoadError(
                f"fusion checkpoint {f.checkpoint!r} expects {m} embeddings of size {want}, "
                f"but models.{m} produces {dim or 'none'}"
            )
    trained_on = getattr(cfg, "encoders", None) or {}
    if trained_on:  # a head trained by `mmbatch train` knows which encoders made its inputs
        current = identities if identities is not None else model_identities(config)
        changed = {m: (trained_on[m], current.get(m)) for m in trained_on if trained_on[m] != current.get(m)}
        if changed:
            detail = "; ".join(f"{m}: trained on {old}, configured {new}" for m, (old, new) in changed.items())
            raise ModelLoadError(f"fusion checkpoint {f.checkpoint!r} was trained on other encoders ({detail}); "
                                 "train it again on clips of these models (mmbatch train)")
    return int(cfg.joint_dim)
