"""The video sentiment graph: discover → decode → encoders → fusion → Parquet, and the run.

    discover (driver) → split (long videos into chunks of clips, header reads only)
      → decode (CPU tasks, one video or chunk each, clips streamed out)
      → vision (actors) → speech recognition (actors) → audio (actors) → text (actors)
      → fusion (actors) → RunWriter on the driver (per-video Parquet, ledger, commit)

Heavy columns are dropped by the last stage that reads them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from mmbatch.config import PipelineConfig, PoolConfig
from mmbatch.schema import EmbeddingDims
from pipelines.adapter import apply_actor_stage, apply_task_stage, check_cluster_fits

log = logging.getLogger(__name__)
MAX_BLOCKS = 10_000


@dataclass
class RunResult:
    run_id: str
    output: str
    inputs: int
    scored: int
    failed: int
    skipped: int
    clips: int
    wall_seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_fraction(self) -> float:
        attempted = self.scored + self.failed
        return self.failed / attempted if attempted else 0.0


def build_dataset(refs: list, config: PipelineConfig, dims: EmbeddingDims):
    """The lazy Ray Data graph over `refs` (VideoRef); nothing runs until it is consumed."""
    import ray.data

    from mmbatch.decode.stage import DecodeStage
    from mmbatch.encoders import encoder_class
    from mmbatch.encoders.speech import SpeechRecognitionStage
    from mmbatch.fusion import FusionStage

    models, so = config.models, config.storage_options
    # One ref per block (up to a cap that keeps scheduling overhead sane on huge nights) so
    # decode tasks spread over the cluster and one slow video does not hold up others.
    ds = ray.data.from_items([r.as_row() for r in refs], override_num_blocks=max(1, min(len(refs), MAX_BLOCKS)))
    key = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]
    if config.decode.split_clips:  # long videos → several decode tasks
        from mmbatch.decode.split import SplitStage

        ds = apply_task_stage(ds, SplitStage, PoolConfig(num_cpus=0.25, concurrency=(1, config.decode.pool.concurrency[1]),
                                                         batch_size=1), f"split-{key}", config)
    ds = apply_task_stage(ds, DecodeStage, config.decode.pool, f"decode-{key}", config)

    waveform_users = [m for m in ("speech", "audio") if getattr(models, m) is not None]
    if models.vision is not None:
        ds = apply_actor_stage(ds, encoder_class(models.vision.task), models.vision.pool, models.vision,
                               dim=dims.vision, storage_options=so, drop_inputs=True)
    if models.speech is not None:
        ds = apply_actor_stage(ds, SpeechRecognitionStage, models.speech.pool, models.speech,
                               storage_options=so, drop_inputs=waveform_users[-1] == "speech")
    if models.audio is not None:
        ds = apply_actor_stage(ds, encoder_class(models.audio.task), models.audio.pool, models.audio,
                               dim=dims.audio, storage_options=so, drop_inputs=True)
    if models.text is not None:
        ds = apply_actor_stage(ds, encoder_class(models.text.task), models.text.pool, models.text,
                               dim=dims.text, storage_options=so)
    return apply_actor_stage(ds, FusionStage, config.fusion.pool, config.fusion, dims, storage_options=so)


def run_pipeline(config: PipelineConfig, input_uri: str, output_uri: str, run_date: dt.date,
                 *, force: bool = False, strict_resources: bool = True) -> RunResult:
    """Discover, skip what is done, score the rest, commit. Ray must already be initialised.

    `strict_resources`: fail when the pools' minimum does not fit the cluster (set False on
    autoscaling clusters, where it is only logged).
    """
    import ray
    from mmbatch import sources
    from mmbatch.encoders import inspect_models
    from mmbatch.sink import RunWriter, committed_ledger

    t0 = time.perf_counter()
    for problem in check_cluster_fits(config, ray.cluster_resources(), strict=strict_resources):
        log.warning("%s", problem)
    refs = sources.discover(input_uri, config.storage_options)
    dims = inspect_models(config)
    fingerprint = config.fingerprint()
    config_json = json.dumps(config.redacted(), sort_keys=True)
    writer = RunWriter(output_uri, config.storage_options, run_date, fingerprint, dims, config_json,
                       config.run.ledger_flush_videos)

    done = writer.load_ledger() if not force else {}
    skipped: dict[str, dict[str, Any]] = {}
    previous = committed_ledger(output_uri, config.storage_options) if not force else {}
    for ref in refs:
        prev = previous.get(ref.video_id)
        if (prev and ref.video_id not in done and prev["run_date"] < run_date
                and prev["model_fingerprint"] == fingerprint and prev["etag"] == ref.etag
                and prev["size_bytes"] == ref.size):
            # Scored on an earlier night with the same content and models: record, don't redo.
            skipped[ref.video_id] = {
                **prev, "n_clips": 0, "status": "skipped", "error_stage": None,
                "error": None, "decode_seconds": 0.0, "run_id": writer.run_id, "run_date": run_date,
            }
    todo = [r for r in refs if r.video_id not in done and r.video_id not in skipped]
    log.info("%d inputs: %d to score, %d resumed, %d skipped", len(refs), len(todo), len(done), len(skipped))

    stage_stats = ""
    if todo:
        ds = build_dataset(todo, config, dims)
        # Blocks as they arrive (no re-batching): the sink finishes videos as early as possible.
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            writer.add_batch(batch)
        try:
            stage_stats = ds.stats()  # Ray Data's per-operator wall/CPU times and row counts
        except Exception as err:  # stats are a report, never a reason to lose the commit
            stage_stats = f"unavailable: {err}"
    wall = time.perf_counter() - t0
    manifest = writer.commit(refs, skipped, {
        "resumed_from_ledger": len(done),
        "config": config.redacted(),
        "embedding_dims": dims.as_dict(),
        "input": input_uri,  # the per-input listing is the videos table of this partition
        "timings": {"wall_seconds": round(wall, 3),
                    "decode_seconds": round(sum(float(r.get("decode_seconds") or 0) for r in writer.done.values()), 3),
                    "ray_data_stats": stage_stats},
        "versions": _versions(),
    })
    c = manifest["counts"]
    return RunResult(writer.run_id, output_uri, c["inputs"], c["scored"], c["failed"], c["skipped"],
                     c["clips"], wall, manifest)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mmbatch", "ray", "torch", "torchaudio", "transformers", "decord", "av", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
