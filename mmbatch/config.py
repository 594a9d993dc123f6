"""Typed pipeline configuration: YAML in, validated object out.

Every knob has a default; unknown keys are an error that names the key. The resolved
config (defaults filled in) is saved next to the output. The model fingerprint hashes the
settings that change scores; a setting that does not (pools, timeouts, limits, output
layout) is declared so on its field (`OPERATIONAL`), so retuning a cluster rescores nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from mmbatch.errors import ConfigError
from mmbatch.modalities import REGISTRY, SCORED, TASKS, needs

SENTIMENT_CLASSES = ("negative", "neutral", "positive")


# Marks a field that does not change scores: left out of the model fingerprint.
OPERATIONAL = {"scoring": False}


def operational(default: Any = ..., **kwargs) -> Any:
    return Field(default, json_schema_extra=OPERATIONAL, **kwargs)


# Marks a scoring field added after nights were scored: hashed only when set away from its
# default, so adding a knob leaves every existing fingerprint (and what it resumes) unchanged.
ADDED_SCORING = {"scoring": "unless_default"}


def added_scoring(default: Any, **kwargs) -> Any:
    return Field(default, json_schema_extra=ADDED_SCORING, **kwargs)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def scoring_dump(model: BaseModel) -> Any:
    """The model as JSON without its operational fields (recursively)."""
    out = {}
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        value = getattr(model, name)
        if extra.get("scoring") is False or (extra.get("scoring") == "unless_default" and value == field.default):
            continue
        if isinstance(value, BaseModel):
            out[name] = scoring_dump(value)
        else:
            out[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else \
                json.loads(json.dumps(value, default=str))
    return out


class PoolConfig(_Strict):
    """How one stage maps onto Ray: resources per worker and the pool's bounds."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    concurrency: tuple[int, int] = (1, 1)
    batch_size: int = Field(16, ge=1)
    # Custom Ray resources one worker of the pool needs: where it may run. Nodes declare them
    # (infra/ray-cluster.yaml: cpu_node on decode nodes, gpu_node on GPU nodes), so e.g.
    # {cpu_node: 0.001} keeps decode off the GPU nodes. A local Ray started by the job declares
    # every resource the config names, so the same YAML runs on one machine.
    resources: dict[str, float] = Field(default_factory=dict)
    # Memory one worker reserves (Ray's logical `memory` resource): Ray places no more workers on a
    # node than its memory holds, and Ray Data warns of a pool that holds more than it asked for.
    memory_gb: float | None = Field(None, gt=0)

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"resources[{name!r}]: use num_cpus/num_gpus for Ray's own resources")
            if not amount > 0:
                raise ValueError(f"resources[{name!r}] must be > 0, got {amount}")
        return v

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
    # At least 0.1 s: a near-zero window or stride would plan billions of clips.
    window_s: float = Field(10.0, ge=0.1, le=24 * 3600)
    stride_s: float = Field(10.0, ge=0.1, le=24 * 3600)
    min_clip_s: float = Field(1.0, ge=0)
    frames_per_clip: int = Field(8, ge=1, le=256)
    # Alternative to a fixed count: sample at this rate, at most frames_per_clip frames.
    target_fps: float | None = Field(None, gt=0)
    # Fixed windows only: move each boundary between windows into a pause of the audio (the longest
    # quiet stretch) within this many seconds, so a sentence is not cut in half (needs an audio or
    # speech model; a clip then runs up to window_s + 2x this). 0: the windows stay on the grid.
    snap_to_pause_s: float = added_scoring(0.0, ge=0)
    # Take a clip's frames from the keyframes inside it (the one nearest each frame time, each
    # once): one frame decoded a frame taken, instead of every frame from the keyframe before it
    # (several times cheaper on real footage). A clip with no keyframe inside keeps its frame times.
    keyframes_only: bool = added_scoring(False)

    @model_validator(mode="after")
    def _snap_fits(self):
        if self.snap_to_pause_s and self.policy != "fixed":
            raise ValueError(f"clips.snap_to_pause_s moves fixed windows; policy {self.policy!r} has none "
                             "(set policy: fixed, or snap_to_pause_s: 0)")
        if self.snap_to_pause_s * 2 >= min(self.window_s, self.stride_s):
            raise ValueError(f"clips.snap_to_pause_s ({self.snap_to_pause_s:g}) must be under half of window_s "
                             f"and stride_s ({min(self.window_s, self.stride_s):g}): a boundary may not pass its "
                             "neighbour")
        return self


class DecodeConfig(_Strict):
    # auto = pyav (FFmpeg on one thread: the least CPU a clip); or decord | pyav | package.module:Class
    backend: str = "auto"
    # Retried when the primary backend cannot open a file (decord fails on some files FFmpeg reads).
    fallback_backend: str | None = operational("pyav")
    # A video whose decoder produces nothing for this long is killed and recorded as failed
    # (decord can hang in native code holding the GIL). null: decode in-process, no watchdog.
    timeout_s: float | None = operational(600.0, gt=0)
    image_size: int = Field(224, ge=8, le=4096)
    sample_rate: int = Field(16000, ge=1000)
    # Limits, checked from the headers before any frame is decoded.
    max_duration_s: float = operational(6 * 3600.0, gt=0)
    max_pixels: int = operational(3840 * 2160, gt=0)
    max_clips: int = operational(5000, ge=1)
    # A video with more clips than this decodes as several tasks of at most this many clips
    # (a recorded stream of hours must not serialise on one core). null: never split.
    split_clips: int | None = operational(360, ge=1)
    # The lowest bitrate (kbit/s, all streams) a video file is taken to have: a file too small to
    # hold more than split_clips clips at this rate skips the split stage (no header read, no
    # task of its own). A longer video below this rate then decodes in one piece: the same clips,
    # on one core. null: read every file's header.
    split_floor_kbps: float | None = operational(64.0, gt=0)
    # Score files without a video stream (podcasts, calls) on audio and speech alone.
    allow_audio_only: bool = False
    # No deblocking on the frames decoded (FFmpeg's skip_loop_filter; PyAV backend): 17-20% less
    # decode CPU on H.264 footage, each frame within 40 dB PSNR of a full decode
    # (docs/performance.md). With clips.keyframes_only, the fast profile.
    skip_loop_filter: bool = added_scoring(False)
    # cuda: frames decoded on the GPU's video decoder (NVDEC, through PyAV's FFmpeg), in a decode
    # pool that asks for a GPU (pool.num_gpus). A file NVDEC cannot take decodes on the CPU.
    hwaccel: Literal["none", "cuda"] = operational("none")
    pool: PoolConfig = operational(PoolConfig(num_cpus=1.0, concurrency=(1, 64), batch_size=1))

    @model_validator(mode="after")
    def _backend_offers(self) -> "DecodeConfig":
        wanted = [name for name, on in (("skip_loop_filter", self.skip_loop_filter),
                                        ("hwaccel", self.hwaccel != "none")) if on]
        if wanted and self.backend not in ("auto", "pyav"):
            raise ValueError(f"decode.{wanted[0]} is a setting of the pyav backend; decode.backend is "
                             f"{self.backend!r} (set backend: auto, or remove {wanted[0]})")
        if self.hwaccel != "none" and not self.pool.num_gpus > 0:
            raise ValueError(f"decode.hwaccel: {self.hwaccel} decodes on a GPU, so the decode pool must ask for "
                             "one: set decode.pool.num_gpus (e.g. 0.1, several decode workers sharing a GPU)")
        return self


class EncoderConfig(_Strict):
    """One modality encoder: which model, how its labels map to sentiment, how it is pooled."""

    task: Literal[tuple(TASKS)]  # each modality's tasks (mmbatch.modalities)
    source: str  # hub id, local folder, s3:// folder, tiny:<name>, package:<module> or bundle:<name>
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    pool: PoolConfig = operational(PoolConfig(num_cpus=1.0, batch_size=16))
    # Code-loading policy: a model folder's own Python code runs only when this is true, and
    # pickle-based weights (.bin/.pt) load only when allow_pickle is true (safetensors otherwise).
    trust_remote_code: bool = operational(False)
    allow_pickle: bool = operational(False)
    # Label name (case-insensitive) -> negative|neutral|positive|ignore; merged over the defaults.
    label_map: dict[str, str] = Field(default_factory=dict)
    # Zero-shot prompts per class (image_zero_shot: "a photo of ..."; text_zero_shot: sentences).
    prompts: dict[str, list[str]] | None = None
    temperature: float = Field(0.05, gt=0)  # text_zero_shot: softmax(similarity / temperature)
    language: str | None = None
    max_new_tokens: int = Field(96, ge=1, le=440)
    # Speech decoding. beam_size 1 is greedy; Whisper's reference decoder searches 5 beams.
    # no_repeat_ngram_size > 0 forbids repeating any n-gram: greedy decoding of a hard clip can
    # loop on one phrase until max_new_tokens.
    beam_size: int = added_scoring(1, ge=1, le=16)
    no_repeat_ngram_size: int = added_scoring(0, ge=0, le=16)
    # Speech: how many of the beam search's best transcripts the text model reads; the clip's text
    # scores are their mean weighted by how likely the recogniser finds each (misheard words then
    # weigh what they are worth). `transcript` keeps the best. At most beam_size.
    hypotheses: int = added_scoring(1, ge=1, le=16)
    # Face models: where faces are found in the frames. decode: in the decode worker that made the
    # frames (the face actor then spends 12 ms of CPU a clip, not 81: benchmarks/face_placement.py);
    # actor: in the face actor, before its model. The same faces either way.
    find_faces_in: Literal["decode", "actor"] = operational("decode")
    # Speech only: the runtime that runs Whisper. transformers: any transformers speech-to-text model.
    # ctranslate2: faster-whisper's CTranslate2 runtime (needs `pip install faster-whisper`); the source
    # is a CTranslate2 Whisper folder, or a transformers Whisper converted once per node and cached.
    engine: Literal["transformers", "ctranslate2"] = "transformers"
    # ctranslate2 only: auto = int8 on CPU, float16 on GPU; or int8, int8_float16, float16, float32, ...
    compute_type: str = "auto"

    @field_validator("label_map")
    @classmethod
    def _label_targets(cls, v: dict[str, str]) -> dict[str, str]:
        for label, target in v.items():
            if target not in (*SENTIMENT_CLASSES, "ignore"):
                raise ValueError(f"label_map[{label!r}] must be one of negative, neutral, positive, ignore; got {target!r}")
        return {k.lower(): t for k, t in v.items()}

    @model_validator(mode="after")
    def _engine_for_speech(self) -> "EncoderConfig":
        if self.engine != "transformers" and self.task != "speech_recognition":
            raise ValueError(f"engine {self.engine!r} is for speech_recognition models only")
        if self.hypotheses > 1 and self.task != "speech_recognition":
            raise ValueError(f"hypotheses is for speech_recognition models only; {self.task} does not read it")
        if self.find_faces_in != "decode" and TASKS[self.task] != "face":
            raise ValueError(f"find_faces_in is for face models only; {self.task} does not read it")
        if self.hypotheses > self.beam_size:
            raise ValueError(f"hypotheses ({self.hypotheses}) cannot exceed beam_size ({self.beam_size}): "
                             "the beam search keeps that many transcripts; raise beam_size too")
        default = type(self).model_fields["temperature"].default  # a dumped config carries it: not a choice
        if self.temperature != default and self.task != "text_zero_shot":
            raise ValueError(f"temperature is for text_zero_shot models only; {self.task} does not read it "
                             "(image_zero_shot uses the CLIP model's own logit scale)")
        return self

    @field_validator("prompts")
    @classmethod
    def _prompt_classes(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if v is None:
            return v
        if set(v) != set(SENTIMENT_CLASSES) or any(not p for p in v.values()):
            raise ValueError("prompts needs non-empty lists for exactly: negative, neutral, positive")
        return v


# The model sections every fingerprint has hashed since schema v2; a section added later is hashed
# only when configured, so adding a modality leaves every existing fingerprint unchanged.
_FIRST_SECTIONS = ("vision", "audio", "speech", "text")


class _Models(_Strict):
    """`models:` has one optional section a modality (mmbatch.modalities), built from the registry."""

    @model_validator(mode="after")
    def _tasks_fit_modalities(self) -> "ModelsConfig":
        for modality in REGISTRY:
            enc = getattr(self, modality.name)
            if enc is not None and enc.task not in modality.tasks:
                raise ValueError(f"models.{modality.name}.task must be one of {sorted(modality.tasks)}, "
                                 f"got {enc.task!r}")
        if not any(getattr(self, m.name) is not None for m in REGISTRY if m.scored):
            raise ValueError(f"models: at least one of {', '.join(m.name for m in REGISTRY if m.scored)} "
                             "must be configured")
        return self

    def configured(self) -> dict[str, EncoderConfig]:
        """The configured model sections by name, in the registry's (graph) order."""
        return {m.name: getattr(self, m.name) for m in REGISTRY if getattr(self, m.name) is not None}


ModelsConfig = create_model(
    "ModelsConfig", __base__=_Models,
    **{m.name: (EncoderConfig | None, None if m.name in _FIRST_SECTIONS else added_scoring(None)) for m in REGISTRY})


class FusionConfig(_Strict):
    mode: Literal["zero_shot", "trained"] = "zero_shot"
    # A MultimodalFusionModel folder (save_pretrained), hub id or s3:// folder; for mode "trained".
    checkpoint: str | None = None
    revision: str | None = None
    pool: PoolConfig = operational(PoolConfig(num_cpus=0.5, batch_size=64))
    allow_pickle: bool = operational(False)
    # Zero-shot: how far to trust each modality's confidence (0 leaves it out of the fused score;
    # default 1). `mmbatch train` fits it from labels and writes it to <out>/reliability.yaml.
    reliability: dict[str, float] = added_scoring({})

    @field_validator("reliability")
    @classmethod
    def _known_modalities(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SCORED))
        if unknown:
            raise ValueError(f"fusion.reliability names {unknown}: not scored modalities ({sorted(SCORED)})")
        if any(not (r >= 0) for r in value.values()):
            raise ValueError("fusion.reliability values must be >= 0")
        return value

    @model_validator(mode="after")
    def _checkpoint_for_trained(self) -> "FusionConfig":
        if self.mode == "trained" and not self.checkpoint:
            raise ValueError("fusion.checkpoint is required when fusion.mode is 'trained'")
        return self


class EncodersConfig(_Strict):
    """Where the models run. per_modality: vision, speech, audio, text and fusion each get an actor
    pool of their own (models.<m>.pool, fusion.pool), sized and placed apart. colocated: one pool
    (encoders.pool) whose actors hold every model and run them in turn on each batch; no process,
    start-up or object-store hop between models, so it is the faster choice when one machine or one
    GPU does all the encoding (benchmarks/throughput.py compares both)."""

    placement: Literal["per_modality", "colocated"] = "per_modality"
    # For colocated: resources of one actor and its batch size (every model sees this batch).
    pool: PoolConfig = PoolConfig(num_cpus=1.0, concurrency=(1, 1), batch_size=32)


class MetricsConfig(_Strict):
    """The night's figures pushed to a Prometheus Pushgateway (docs/operations.md, "Monitoring")."""

    # host:port or URL of the Pushgateway; unset: nothing is pushed.
    pushgateway: str | None = None
    job: str = Field("mmbatch", min_length=1)  # the `job` grouping label
    # Extra grouping labels (e.g. {pipeline: nightly-eu}); the output URI is always one (`output`).
    grouping: dict[str, str] = Field(default_factory=dict)
    # Also push the progress figures with each progress line (every run.progress_interval_s).
    push_progress: bool = False
    timeout_s: float = Field(10.0, gt=0)


class LineageConfig(_Strict):
    """OpenLineage run events (START, COMPLETE, FAIL) with the night's input and output datasets."""

    # The OpenLineage HTTP endpoint's base URL (e.g. http://marquez:5000); unset: no events.
    url: str | None = None
    endpoint: str = "api/v1/lineage"
    namespace: str = Field("mmbatch", min_length=1)  # the job's namespace
    job_name: str = Field("score_videos", min_length=1)
    # The name of an environment variable holding the endpoint's API key (never the key itself).
    api_key_env: str | None = None
    timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _client_installed(self) -> "LineageConfig":
        import importlib.util

        if self.url and importlib.util.find_spec("openlineage") is None:
            raise ValueError("run.lineage.url needs openlineage-python: pip install 'mmbatch[lineage]'")
        return self


class RunConfig(_Strict):
    max_failed_fraction: float = Field(0.2, ge=0, le=1)
    # A configured modality that failed (has an error) on more than this share of the
    # attempted clips makes the night "committed, but degraded" (exit code 3).
    max_modality_failed_fraction: float = Field(0.05, ge=0, le=1)
    # The lease on a night: renewed every third of this; a crashed run's lease lapses after it.
    lock_ttl_s: float = Field(300.0, ge=5)
    # Ray retries, set explicitly rather than left to defaults: a task whose worker died is
    # run again this many times; an actor that died is restarted, and its batch retried, this
    # many times. Exceptions inside a stage are data (error rows), never retried.
    task_retries: int = Field(3, ge=0)
    # Seconds between the job's progress lines (videos done/total, clips, clips/s, ETA).
    progress_interval_s: float = Field(30.0, gt=0)
    # -1: restart without limit (Ray Data's own default), so an actor whose node was lost waits
    # for room on another node; the wait is bounded by no_progress_timeout_s, not by a count (a
    # count runs out in seconds while the cluster still reports the lost node alive).
    actor_restarts: int = Field(-1, ge=-1)
    # Actors that die or are cancelled before they ever ran (a busy or shrinking cluster) are
    # replaced this many times in a row before the night fails; -1: without limit.
    actor_init_deaths: int = Field(5, ge=-1)
    # A night that makes no progress (no operator finishes a task) for this long fails (exit 1),
    # e.g. while a lost node's actors wait for a replacement that never comes.
    no_progress_timeout_s: float = Field(1800.0, gt=0)
    # Attached clusters: how long the pools' minimum actors may take to be placed (autoscaling
    # included) before the night fails with exit 1. A local Ray is checked up front instead.
    placement_timeout_s: float = Field(600.0, gt=0)
    # Everything before the first video is read (listing inputs, scanning shards and manifests,
    # the lease, the models' configs, the state table) must finish within this, or the night
    # fails with exit 1 naming what was being read; the lease is released.
    plan_timeout_s: float = Field(1800.0, gt=0)
    # Names of driver environment variables that workers get on an attached cluster, e.g.
    # credentials for storage: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]. Only these, and the
    # non-secret settings in mmbatch.cluster.TRAVELLING_ENV, travel; never the whole environment.
    worker_env: list[str] = Field(default_factory=list)
    # Ray Data reserves a share of the cluster for each operator (op_resource_reservation). On a
    # node with a few cores that share is a fraction of a CPU per stage and held back from the
    # rest: on 2 cores, a 4x corpus wrote its first clip after 29 s with it and 19 s without.
    ray_data_reservation: bool = True
    # glibc in the job's processes keeps freed memory for reuse (mmbatch.allocator) instead of
    # returning it to the kernel and faulting it in again for the next clip: on 2 cores a fifth
    # of the night's CPU was the kernel doing that. Values set in the environment win.
    malloc_tuning: bool = True
    metrics: MetricsConfig = MetricsConfig()
    lineage: LineageConfig = LineageConfig()


class IcebergConfig(_Strict):
    """Where `output.format: iceberg` keeps its tables' catalog, and their names."""

    # pyiceberg catalog properties (`type: glue | rest | sql | ...` and that catalog's keys, e.g.
    # `uri`, `warehouse`, `s3.endpoint`). Empty: an embedded SQLite catalog at
    # `<output>/_catalog/iceberg.db` (local outputs only: SQLite cannot live on an object store).
    catalog: dict[str, Any] = Field(default_factory=dict)
    catalog_name: str = Field("mmbatch", min_length=1)
    namespace: str = Field("mmbatch", min_length=1)
    # The tables are `<namespace>.<table_prefix>clips` and `<namespace>.<table_prefix>videos`.
    table_prefix: str = ""


class OutputConfig(_Strict):
    """Clip files: written by workers, many videos a file, sized for analytics engines."""

    # parquet: plain hive folders. delta / iceberg: the same files, committed as one table
    # transaction a table a night (readers must read through the format; see docs/output.md).
    format: Literal["parquet", "delta", "iceberg"] = "parquet"
    iceberg: IcebergConfig = IcebergConfig()

    # Target size of one clip file: Ray Data bundles this many bytes of rows into each write.
    # It is also the resume granularity: a video counts as done once its last rows are written.
    target_file_mb: float = Field(128.0, gt=0)
    row_group_mb: float = Field(32.0, gt=0)
    write_cpus: float = Field(0.25, ge=0)
    write_concurrency: int = Field(4, ge=1)
    # Custom Ray resources of a write task (where it may run), as pool.resources.
    write_resources: dict[str, float] = Field(default_factory=dict)


class InputsConfig(_Strict):
    """What a night may read, and how much."""

    # URIs (prefixes) besides the input's own folder that manifests, playlists and sidecars
    # may point into, e.g. ["s3://media-bucket/videos/"]. http(s) only when listed here.
    allowed_roots: list[str] = operational(default_factory=list)
    # A transcript sidecar larger than this is refused (its clips lose their text, with the reason).
    max_sidecar_bytes: int = operational(1 << 20, ge=1)
    # Characters of transcript kept per clip; longer text is cut, and the cut is recorded.
    max_transcript_chars: int = Field(2000, ge=1)
    # Rows of one manifest; more is an input error.
    max_manifest_rows: int = operational(1_000_000, ge=1)
    # Bytes of one manifest file, checked before it is parsed; more is an input error.
    max_manifest_bytes: int = operational(256 << 20, ge=1)


class PipelineConfig(_Strict):
    storage_options: dict[str, Any] = operational(default_factory=dict)
    inputs: InputsConfig = InputsConfig()
    clips: ClipConfig = ClipConfig()
    decode: DecodeConfig = DecodeConfig()
    models: ModelsConfig
    fusion: FusionConfig = FusionConfig()
    encoders: EncodersConfig = operational(EncodersConfig())
    output: OutputConfig = operational(OutputConfig())
    run: RunConfig = operational(RunConfig())

    @model_validator(mode="after")
    def _pauses_need_audio(self) -> "PipelineConfig":
        if self.clips.snap_to_pause_s and not needs(self.models.configured(), "audio"):
            raise ValueError("clips.snap_to_pause_s finds pauses in the audio, which only an audio or speech model "
                             "decodes: add one, or set snap_to_pause_s: 0")
        return self

    def fingerprint(self, model_identities: dict[str, str] | None = None) -> str:
        """Hash of everything that changes a score: the scoring settings (fields not declared
        operational) and each model's identity (resolved hub commit, folder content hash or
        object ETags; see mmbatch.models.model_identity)."""
        from mmbatch.schema import SCHEMA_VERSION

        blob = json.dumps({"schema": SCHEMA_VERSION, "scoring": scoring_dump(self),
                           "models": model_identities or {}}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def redacted(self) -> dict[str, Any]:
        """The config as JSON, with storage options that may carry secrets masked."""
        data = self.model_dump(mode="json")
        data["storage_options"] = redact(data["storage_options"])
        from mmbatch.trust import redact_uri  # a catalog `uri` may carry a database password

        catalog = redact(data["output"]["iceberg"]["catalog"])
        data["output"]["iceberg"]["catalog"] = {k: redact_uri(v) if isinstance(v, str) else v for k, v in catalog.items()}
        for section, key in (("metrics", "pushgateway"), ("lineage", "url")):  # user:password@host
            if data["run"][section][key]:
                data["run"][section][key] = redact_uri(data["run"][section][key])
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


def _keys_beside(loc: tuple) -> list[str]:
    """The keys the config allows where `loc` (a key path) ends: its parent section's fields."""
    import typing

    model: Any = PipelineConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        kinds = [field.annotation, *typing.get_args(field.annotation)]  # X, or X | None
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    import difflib

    lines = [f"invalid config {origin}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(e["loc"][-1]), _keys_beside(e["loc"]), n=1)
            msg = "unknown key" + (f" (did you mean {near[0]!r}?)" if near else "")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def config_json_schema() -> dict[str, Any]:
    """The pipeline YAML's JSON schema (docs/pipeline.schema.json), for editors that complete keys;
    `python -c "from mmbatch.config import config_json_schema as s; import json; print(json.dumps(s(), indent=1))"`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **PipelineConfig.model_json_schema(),
            "title": "mmbatch pipeline"}


def parse_config(data: dict[str, Any], origin: str = "(dict)") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {origin}: top level must be a mapping")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def reader_settings(path: str | Path | None) -> tuple[dict[str, Any], OutputConfig | None]:
    """A config file's storage_options (credentials, endpoint) and output settings (format, catalog)
    for tools that only read or tend the output; without a file, none (the format is detected)."""
    if not path:
        return {}, None
    config = load_config(path)
    return dict(config.storage_options), config.output


MAX_CONFIG_BYTES = 1 << 20


class _DuplicateKey(Exception):
    pass


@functools.cache
def _unique_key_loader():
    """A SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last, so a
    second `clips:` block would silently reset the first one's settings to their defaults)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise _DuplicateKey(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first on "
                                        f"line {seen[key] + 1}); merge the two into one")
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config(path: str | Path) -> PipelineConfig:
    """Read a YAML config file (the only place YAML is parsed). Bounded: at most MAX_CONFIG_BYTES,
    and no aliases (`*name`), so no document can expand into more than its own bytes."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open("rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"config {path}, line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) "
                                  "are not supported; write the value out")
        data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader that refuses repeated keys
    except _DuplicateKey as err:
        raise ConfigError(f"config {path}, {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config {path} nests too deeply") from None
    return parse_config({} if data is None else data, origin=str(path))
