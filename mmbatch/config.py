"""Typed pipeline configuration: YAML in, validated object out.

Every knob has a default; unknown keys are an error that names the key. The resolved
config (defaults filled in) is saved next to the output and hashed into the model
fingerprint, so changing a model or a knob that changes scores rescores everything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmbatch.errors import ConfigError

SENTIMENT_CLASSES = ("negative", "neutral", "positive")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolConfig(_Strict):
    """How one stage maps onto Ray: resources per worker and the pool's bounds."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    concurrency: tuple[int, int] = (1, 1)
    batch_size: int = Field(16, ge=1)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _int_means_fixed(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) else v

    @model_validator(mode="after")
    def _bounds(self) -> "PoolConfig":
        lo, hi = self.concurrency
        if lo < 1 or hi < lo:
            raise ValueError(f"concurrency must be [min, max] with 1 <= min <= max, got {list(self.concurrency)}")
        return self


class ClipConfig(_Strict):
    # fixed: windows of window_s every stride_s; whole: the whole video is one clip;
    # segments: start/end per clip from a same-stem .json sidecar or manifest start_s/end_s
    # columns (a video without segments falls back to fixed windows). window_s also caps the
    # audio kept per clip.
    policy: Literal["fixed", "whole", "segments"] = "fixed"
    window_s: float = Field(10.0, gt=0)
    stride_s: float = Field(10.0, gt=0)
    min_clip_s: float = Field(1.0, ge=0)
    frames_per_clip: int = Field(8, ge=1, le=256)
    # Alternative to a fixed count: sample at this rate, at most frames_per_clip frames.
    target_fps: float | None = Field(None, gt=0)


class DecodeConfig(_Strict):
    # auto = decord where it is installed, else pyav; or decord | pyav | package.module:Class
    backend: str = "auto"
    # Retried when the primary backend cannot open a file (decord fails on some files FFmpeg reads).
    fallback_backend: str | None = "pyav"
    # A video whose decoder produces nothing for this long is killed and recorded as failed
    # (decord can hang in native code holding the GIL). null: decode in-process, no watchdog.
    timeout_s: float | None = Field(600.0, gt=0)
    image_size: int = Field(224, ge=8, le=4096)
    sample_rate: int = Field(16000, ge=1000)
    max_duration_s: float = Field(6 * 3600.0, gt=0)
    max_pixels: int = Field(3840 * 2160, gt=0)
    max_clips: int = Field(5000, ge=1)
    # A video with more clips than this decodes as several tasks of at most this many clips
    # (a recorded stream of hours must not serialise on one core). null: never split.
    split_clips: int | None = Field(360, ge=1)
    # Score files without a video stream (podcasts, calls) on audio and speech alone.
    allow_audio_only: bool = False
    pool: PoolConfig = PoolConfig(num_cpus=1.0, concurrency=(1, 64), batch_size=1)


class EncoderConfig(_Strict):
    """One modality encoder: which model, how its labels map to sentiment, how it is pooled."""

    task: Literal[
        "image_zero_shot",
        "image_classification",
        "audio_classification",
        "audio_zero_shot",
        "speech_recognition",
        "text_classification",
        "text_zero_shot",
    ]
    source: str  # hub id, local folder, s3:// folder, tiny:<name> or package:<module>
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    pool: PoolConfig = PoolConfig(num_cpus=1.0, batch_size=16)
    # Label name (case-insensitive) -> negative|neutral|positive|ignore; merged over the defaults.
    label_map: dict[str, str] = Field(default_factory=dict)
    # Zero-shot prompts per class (image_zero_shot: "a photo of ..."; text_zero_shot: sentences).
    prompts: dict[str, list[str]] | None = None
    temperature: float = Field(0.05, gt=0)
    language: str | None = None
    max_new_tokens: int = Field(96, ge=1, le=440)

    @field_validator("label_map")
    @classmethod
    def _label_targets(cls, v: dict[str, str]) -> dict[str, str]:
        for label, target in v.items():
            if target not in (*SENTIMENT_CLASSES, "ignore"):
                raise ValueError(f"label_map[{label!r}] must be one of negative, neutral, positive, ignore; got {target!r}")
        return {k.lower(): t for k, t in v.items()}

    @field_validator("prompts")
    @classmethod
    def _prompt_classes(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if v is None:
            return v
        if set(v) != set(SENTIMENT_CLASSES) or any(not p for p in v.values()):
            raise ValueError("prompts needs non-empty lists for exactly: negative, neutral, positive")
        return v


_MODALITY_TASKS = {
    "vision": {"image_zero_shot", "image_classification"},
    "audio": {"audio_classification", "audio_zero_shot"},
    "speech": {"speech_recognition"},
    "text": {"text_classification", "text_zero_shot"},
}


class ModelsConfig(_Strict):
    vision: EncoderConfig | None = None
    audio: EncoderConfig | None = None
    speech: EncoderConfig | None = None
    text: EncoderConfig | None = None

    @model_validator(mode="after")
    def _tasks_fit_modalities(self) -> "ModelsConfig":
        for name, allowed in _MODALITY_TASKS.items():
            enc = getattr(self, name)
            if enc is not None and enc.task not in allowed:
                raise ValueError(f"models.{name}.task must be one of {sorted(allowed)}, got {enc.task!r}")
        if self.vision is None and self.audio is None and self.text is None:
            raise ValueError("models: at least one of vision, audio, text must be configured")
        return self


class FusionConfig(_Strict):
    mode: Literal["zero_shot", "trained"] = "zero_shot"
    # A MultimodalFusionModel folder (save_pretrained), hub id or s3:// folder; for mode "trained".
    checkpoint: str | None = None
    revision: str | None = None
    pool: PoolConfig = PoolConfig(num_cpus=0.5, batch_size=64)

    @model_validator(mode="after")
    def _checkpoint_for_trained(self) -> "FusionConfig":
        if self.mode == "trained" and not self.checkpoint:
            raise ValueError("fusion.checkpoint is required when fusion.mode is 'trained'")
        return self


class RunConfig(_Strict):
    max_failed_fraction: float = Field(0.2, ge=0, le=1)
    # The lease on a night: renewed every third of this; a crashed run's lease lapses after it.
    lock_ttl_s: float = Field(300.0, ge=5)


class OutputConfig(_Strict):
    """Clip files: written by workers, many videos a file, sized for analytics engines."""

    # Target size of one clip file: Ray Data bundles this many bytes of rows into each write.
    # It is also the resume granularity: a video counts as done once its last rows are written.
    target_file_mb: float = Field(128.0, gt=0)
    row_group_mb: float = Field(32.0, gt=0)
    write_cpus: float = Field(0.25, ge=0)
    write_concurrency: int = Field(4, ge=1)


class PipelineConfig(_Strict):
    storage_options: dict[str, Any] = Field(default_factory=dict)
    clips: ClipConfig = ClipConfig()
    decode: DecodeConfig = DecodeConfig()
    models: ModelsConfig
    fusion: FusionConfig = FusionConfig()
    output: OutputConfig = OutputConfig()
    run: RunConfig = RunConfig()

    def fingerprint(self) -> str:
        """Hash of everything that changes a score: models, clip policy, decode sizes, fusion.

        Pool sizes, storage options and run policy do not change scores, so they are left out:
        retuning a cluster must not rescore the archive.
        """
        scoring = self.model_dump(mode="json", exclude={"storage_options": True, "run": True, "output": True})
        scoring["decode"].pop("pool", None)
        scoring["fusion"].pop("pool", None)
        for enc in scoring["models"].values():
            if enc:
                enc.pop("pool", None)
        from mmbatch.schema import SCHEMA_VERSION

        blob = json.dumps({"schema": SCHEMA_VERSION, "scoring": scoring}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def redacted(self) -> dict[str, Any]:
        """The config as JSON, with storage options that may carry secrets masked."""
        data = self.model_dump(mode="json")
        data["storage_options"] = redact(data["storage_options"])
        return data


_SECRET_HINTS = ("secret", "token", "password", "key", "credential", "session")


def redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value is not None and any(h in key.lower() for h in _SECRET_HINTS) and key.lower() != "anon":
        return "***"
    return value


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config {origin}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], origin: str = "(dict)") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {origin}: top level must be a mapping")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read a YAML config file (the only place YAML is parsed)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    return parse_config(data or {}, origin=str(path))
