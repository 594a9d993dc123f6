"""The video sentiment graph: discover → decode → encoders → fusion → write, and the run.

    discover (driver) → split (long videos into chunks of clips, header reads only)
      → decode (CPU tasks, one video or chunk each, clips streamed out)
      → vision → speech recognition (or sidecar transcripts) → audio → text (actor pools)
      → fusion (actors) → write (a Ray Data Datasink: staged Parquet files of about
        output.target_file_mb, many videos each, plus their completion records)
      → driver: small per-video completion records → ledger → commit

The graph is one list of `StageSpec`s (`stage_specs`); the Ray Data adapter consumes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mmbatch.config import PipelineConfig, PoolConfig
from mmbatch.schema import EmbeddingDims
from mmbatch.stage import StageSpec

log = logging.getLogger(__name__)
MAX_BLOCKS = 10_000
# Bytes of a clip row besides its embeddings (ids, scores, transcript), for row groups.
ROW_OVERHEAD_BYTES = 400


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

    def degraded_modalities(self, limit: float) -> dict[str, float]:
        """Configured modalities that failed on more than `limit` of the clips they were tried on."""
        return {m: c["failed_fraction"] for m, c in self.manifest.get("modalities", {}).items()
                if c["failed_fraction"] > limit}


def row_group_rows(config: PipelineConfig, dims: EmbeddingDims) -> int:
    row_bytes = 4 * (dims.vision + dims.audio + dims.text + dims.fused) + ROW_OVERHEAD_BYTES
    return max(1, int(config.output.row_group_mb * 2**20 / row_bytes))


def stage_specs(config: PipelineConfig, dims: EmbeddingDims, writer: dict[str, Any] | None = None,
                trust=None) -> list[StageSpec]:
    """The graph as a list: which stages, in which order, on which pools. `writer` holds the
    write stage's run arguments (output, staging folder, run id, …); without it the list ends
    at fusion (for in-process loops that keep the rows). `trust`: the run's AllowedRoots,
    which decode checks playlist segments against."""
    from mmbatch.decode.stage import DecodeStage

    specs = []
    if config.decode.split_clips:  # long videos → several decode tasks
        from mmbatch.decode.split import SplitStage

        specs.append(StageSpec("split", SplitStage, (config,), {}, kind="task",  # header reads: decode's nodes
                               pool=PoolConfig(num_cpus=0.1, concurrency=(1, config.decode.pool.concurrency[1]),
                                               batch_size=1, resources=config.decode.pool.resources)))
    # An actor pool: each actor keeps its watchdog child and warm decoders for the whole night
    # (task workers idle under backpressure were killed, and the next re-imported the decoders).
    specs.append(StageSpec("decode", DecodeStage, (config, trust), {}, config.decode.pool, kind="actor"))
    specs.extend(model_specs(config, dims))
    if writer is not None:
        from mmbatch.writer import ClipWriterStage

        out = config.output
        specs.append(StageSpec("write", ClipWriterStage, (), {**writer, "num_cpus": out.write_cpus,
                                                              "row_group_rows": row_group_rows(config, dims)},
                               PoolConfig(num_cpus=out.write_cpus, concurrency=(1, out.write_concurrency),
                                          resources=out.write_resources),
                               kind="sink"))
    return specs


def model_specs(config: PipelineConfig, dims: EmbeddingDims) -> list[StageSpec]:
    """The encoders and fusion: a pool each (per_modality), or one pool whose actors run them all
    in turn (colocated; each model then runs on that pool's resources)."""
    from mmbatch.encoders import encoder_class
    from mmbatch.encoders.speech import SidecarTranscriptStage, SpeechRecognitionStage
    from mmbatch.fusion import FusionStage
    from mmbatch.stage import ColocatedStages, Resources

    colocated = config.encoders.placement == "colocated"
    shared = config.encoders.pool

    def pool_of(section):  # colocated models follow the shared pool (its GPU share picks the device)
        return section.model_copy(update={"pool": shared}) if colocated else section

    models, so = config.models, config.storage_options
    specs = []
    if models.vision is not None:
        specs.append(StageSpec("vision", encoder_class(models.vision.task), (pool_of(models.vision),),
                               {"dim": dims.vision, "storage_options": so}, models.vision.pool))
    if models.speech is not None:
        specs.append(StageSpec("speech", SpeechRecognitionStage, (pool_of(models.speech),),
                               {"storage_options": so, "limits": config.inputs}, models.speech.pool))
    elif models.text is not None:
        specs.append(StageSpec("transcripts", SidecarTranscriptStage, (), {"storage_options": so, "limits": config.inputs},
                               PoolConfig(num_cpus=0.1, batch_size=64), kind="task"))
    if models.audio is not None:
        specs.append(StageSpec("audio", encoder_class(models.audio.task), (pool_of(models.audio),),
                               {"dim": dims.audio, "storage_options": so}, models.audio.pool))
    if models.text is not None:
        specs.append(StageSpec("text", encoder_class(models.text.task), (pool_of(models.text),),
                               {"dim": dims.text, "storage_options": so}, models.text.pool))
    specs.append(StageSpec("fusion", FusionStage, (pool_of(config.fusion), dims), {"storage_options": so},
                           config.fusion.pool))
    if not colocated:
        return specs
    resources = Resources(cpus=shared.num_cpus, gpus=shared.num_gpus)
    return [StageSpec("encoders", ColocatedStages, (specs, resources), {}, shared)]


def config_key(config: PipelineConfig) -> str:
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


def build_dataset(refs: list, specs: list[StageSpec], key: str, retries: tuple[int, int] = (3, -1)):
    """The lazy Ray Data graph over `refs` (VideoRef) up to the sink; nothing runs yet.
    `key` names this run attempt's stage objects in the workers' caches."""
    import ray.data

    from pipelines.adapter import apply_stages

    # One ref per block (up to a cap that keeps scheduling overhead sane on huge nights) so
    # decode tasks spread over the cluster and one slow video does not hold up others.
    ds = ray.data.from_items([r.as_row() for r in refs], override_num_blocks=max(1, min(len(refs), MAX_BLOCKS)))
    return apply_stages(ds, specs, key, retries)


def _skips(fs, layout, refs: list, done: dict, run_date: dt.date, fingerprint: str) -> dict[str, dict]:
    """Videos scored ok on an earlier night with the same content and models."""
    from mmbatch.state import skip_candidates

    previous = skip_candidates(fs, layout, [r.video_id for r in refs if r.video_id not in done])
    skipped = {}
    for ref in refs:
        prev = previous.get(ref.video_id)
        if (prev and prev["run_date"] < run_date and prev["model_fingerprint"] == fingerprint
                and prev["etag"] == ref.etag and prev["size_bytes"] == ref.size):
            skipped[ref.video_id] = prev
    return skipped


@dataclass
class RunPlan:
    """Everything decided before any video is read: models inspected, inputs discovered and checked,
    what is resumed, skipped or refused, and (unless a dry run) the lease on the night."""

    config: PipelineConfig
    input_uri: str
    output_uri: str
    run_date: dt.date
    refs: list
    dims: EmbeddingDims
    fingerprint: str
    layout: Any
    fs: Any
    specs: list[StageSpec]
    attempt: str
    ledger: Any
    committer: Any
    done: dict
    skipped: dict
    todo: list
    refused: list
    lease: Any = None
    rolled: list = field(default_factory=list)
    identities: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> str:
        return (f"{len(self.refs)} inputs: {len(self.todo)} to score, {len(self.done)} resumed, "
                f"{len(self.skipped)} skipped, {len(self.refused)} refused or unreadable")


def plan_run(config: PipelineConfig, input_uri: str, output_uri: str, run_date: dt.date, *, force: bool = False,
             dry_run: bool = False, checked: Callable[[], None] | None = None) -> RunPlan:
    """The run up to the point where Ray is needed; no Ray here, so bad configuration, models,
    inputs or outputs fail fast. A real run takes the lease on the night (the first write to the
    output) and finishes an interrupted commit of the date; a dry run only probes that the
    output can be written.

    `checked` is called once the inputs are listed and the output is known to be writable, before
    the models' configs are read (seconds: it imports torch): the CLI starts Ray at that point,
    so the two overlap.
    """
    from mmbatch import sources, storage
    from mmbatch.commit import Committer
    from mmbatch.encoders import inspect_models, model_identities
    from mmbatch.errors import OutputError
    from mmbatch.layout import OutputLayout, run_id_for
    from mmbatch.ledger import RunLedger, VideoOutcome, new_attempt_id
    from mmbatch.lock import Lease, LockedError
    from mmbatch.trust import AllowedRoots, redact_uri

    t0 = time.perf_counter()
    identities = model_identities(config)  # hashed once: the trained-head check below reuses them
    fingerprint = config.fingerprint(identities)
    fs, root = storage.filesystem(output_uri, config.storage_options)
    layout = OutputLayout(root.rstrip("/"), run_date, run_id_for(run_date, fingerprint))
    trust = AllowedRoots.for_input(input_uri, config.inputs.allowed_roots)
    refs = sources.discover(input_uri, config.storage_options, trust=trust,
                            max_manifest_rows=config.inputs.max_manifest_rows)

    lease = Lease(fs, layout.lock, layout.run_id, ttl_s=config.run.lock_ttl_s,
                  what=f"run date {run_date.isoformat()} of {redact_uri(output_uri)}")
    try:  # the first write to the output: an unwritable output fails here, before any video work
        lease.probe() if dry_run else lease.acquire()
    except LockedError:
        raise
    except Exception as err:
        raise OutputError(f"cannot write to the output {redact_uri(output_uri)}: {_reason(err)}") from None
    try:
        if checked is not None:
            checked()
        dims = inspect_models(config, identities)
        config_json = json.dumps(config.redacted(), sort_keys=True)
        attempt = new_attempt_id()
        writer_args = {"output": output_uri, "storage_options": config.storage_options, "staging_dir": layout.parts,
                       "run_id": layout.run_id, "fingerprint": fingerprint, "dims": dims, "config_json": config_json,
                       "attempt": attempt}
        specs = stage_specs(config, dims, writer_args, trust)
        committer = Committer(fs, layout, fingerprint, config_json, dims)
        rolled = [] if dry_run else committer.roll_forward()
        ledger = RunLedger(fs, layout.staging, {r.video_id: r for r in refs}, attempt)
        done = ledger.load() if not force else {}
        refused = [r for r in refs if r.error]
        for ref in refused:  # refused or unreadable inputs: failed with the reason, never read
            ledger.done[ref.video_id] = VideoOutcome(ref.video_id, "error", n_clips=0, duration_s=None,
                                                     decode_seconds=0.0, error_stage="input", error=ref.error,
                                                     etag=ref.etag, size_bytes=ref.size)
        skipped = _skips(fs, layout, refs, done, run_date, fingerprint) if not force else {}
    except BaseException:
        if not dry_run:
            lease.release()
        raise
    todo = [r for r in refs if r.video_id not in ledger.done and r.video_id not in skipped]
    plan = RunPlan(config, input_uri, output_uri, run_date, refs, dims, fingerprint, layout, fs, specs, attempt,
                   ledger, committer, done, skipped, todo, refused, None if dry_run else lease, rolled, identities, t0)
    log.info("%s", plan.summary())
    return plan


def execute(plan: RunPlan, *, strict_resources: bool = True) -> RunResult:
    """Score what the plan says, then commit; releases the plan's lease. Ray must be up.

    `strict_resources`: fail when the pools' minimum does not fit the cluster (set False on
    autoscaling clusters, where it is only logged).
    """
    import ray

    from mmbatch.trust import redact_uri
    from pipelines.adapter import check_cluster_fits, cluster_failure, configure_execution, pool_demand, write_to_sink

    config, ledger = plan.config, plan.ledger
    attached = not strict_resources
    try:
        for problem in check_cluster_fits(plan.specs, ray.cluster_resources(), strict=strict_resources):
            log.warning("%s", problem)
        if attached:
            check_shared_folders(plan)
        configure_execution(config.run, attached=attached)
        plan.lease.start_renewing()
        stage_stats = None
        if plan.todo:
            from mmbatch.ledger import RunLedger
            from mmbatch.progress import ProgressReporter

            ledger.begin()
            progress = ProgressReporter(
                plan.fs, plan.layout.parts,
                lambda: RunLedger(plan.fs, plan.layout.staging, {r.video_id: r for r in plan.todo}, plan.attempt),
                len(plan.todo), config.run.progress_interval_s)
            progress.start()
            key = f"{config_key(config)}-{plan.attempt}"
            retries = (config.run.task_retries, config.run.actor_restarts)
            ds = build_dataset(plan.todo, plan.specs, key, retries)
            # Only small completion records reach the driver; clip rows stay on the workers.
            try:
                written = write_to_sink(ds, plan.specs[-1], key, int(config.output.target_file_mb * 2**20),
                                        config.run.task_retries)
            except Exception as err:
                named = cluster_failure(err, config.run, pool_demand(plan.specs)) or _storage_failure(err, plan)
                if named is None:
                    raise
                raise named from None
            finally:
                progress.stop()
            for records in written:
                ledger.add_records(records)
            stage_stats = _stage_stats(ds)
        for vid, pending in ledger.pending.items():  # rows lost mid-video (should not happen)
            log.error("video %s incomplete at commit: chunks %s of %d", vid, pending.received, pending.n_chunks)
        wall = time.perf_counter() - plan.started
        manifest = plan.committer.commit(plan.refs, ledger.done, plan.skipped, {
            "resumed_from_ledger": len(plan.done),
            "rolled_forward": plan.rolled,
            "config": config.redacted(),
            "embedding_dims": plan.dims.as_dict(),
            "model_identities": plan.identities,  # what the fingerprint hashes; trained heads check them
            "input": redact_uri(plan.input_uri),  # the per-input listing is the videos table of this partition
            "timings": {"wall_seconds": round(wall, 3),
                        "decode_seconds": round(sum(o.decode_seconds for o in ledger.done.values()), 3),
                        "stages": stage_stats},
            "versions": _versions(),
        })
        _write_report(plan, manifest)
    finally:
        plan.lease.release()
    c = manifest["counts"]
    return RunResult(plan.layout.run_id, plan.output_uri, c["inputs"], c["scored"], c["failed"], c["skipped"],
                     c["clips"], wall, manifest)


def run_pipeline(config: PipelineConfig, input_uri: str, output_uri: str, run_date: dt.date,
                 *, force: bool = False, strict_resources: bool = True) -> RunResult:
    """Discover, skip what is done, score the rest, commit: `plan_run` then `execute`."""
    return execute(plan_run(config, input_uri, output_uri, run_date, force=force), strict_resources=strict_resources)


def _write_report(plan: RunPlan, manifest: dict[str, Any]) -> None:
    """The night's HTML report next to its manifest; a report is never a reason to fail the night."""
    from mmbatch.report import write_report

    try:
        manifest["report"] = write_report(plan.output_uri, plan.run_date, plan.config.storage_options)
    except Exception as err:
        log.warning("run report not written: %s", _reason(err))
        manifest.setdefault("cleanup_warnings", []).append(f"run report: {_reason(err)}")


def _reason(err: BaseException) -> str:
    from mmbatch.errors import short_reason

    return short_reason(err, 300)


# A store that will not take the workers' requests as they are: botocore's exception types, and the
# S3 error codes that s3fs folds into the message of a generic OSError.
_ACCESS_ERROR_TYPES = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "PermissionError")
_ACCESS_ERROR_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AccessDenied")


def _storage_failure(err: BaseException, plan: RunPlan):
    """The output error behind a failed write, through Ray's task-error wrapping: credentials or
    access the workers lack (exit 2: a rerun changes nothing), or another OSError (exit 1)."""
    from mmbatch.errors import OutputError, StorageAccessError
    from mmbatch.trust import redact_uri
    from pipelines.adapter import causes

    where = redact_uri(plan.output_uri)
    for cause in causes(err):
        if type(cause).__name__ in _ACCESS_ERROR_TYPES or any(code in str(cause) for code in _ACCESS_ERROR_CODES):
            return StorageAccessError(
                f"the workers cannot write clip files under {where}: {_reason(cause)}; give every node credentials "
                "(an instance role or the provider chain, storage_options, or the variables named in run.worker_env)")
        if isinstance(cause, OSError):
            return OutputError(f"writing clip files under {where} failed: {_reason(cause)}; "
                               "the work staged so far is kept and a rerun of this date resumes it")
    return None


def check_shared_folders(plan: RunPlan) -> None:
    """On an attached cluster, every local folder the night needs (output, inputs, model folders)
    must look the same from every node, and package: models must import there; else the night
    is refused before any video is read. The output is proven by a probe file written here."""
    from mmbatch import cluster, storage
    from pipelines.adapter import check_shared_storage

    paths = [cluster.SharedPath(what, path, cluster.path_signature(path))
             for what, path in cluster.local_paths(plan.config, plan.input_uri)]
    probe = None
    if storage.is_local(plan.output_uri):
        plan.fs.makedirs(plan.layout.staging, exist_ok=True)
        probe = f"{plan.layout.staging}/probe-{plan.attempt}.txt"
        plan.fs.pipe_file(probe, plan.attempt.encode())
        paths.append(cluster.SharedPath("the output", probe, plan.attempt, probe=True))
    try:
        check_shared_storage(paths, cluster.packages(plan.config))
    finally:
        if probe is not None:
            plan.fs.rm_file(probe)


def _stage_stats(ds) -> list[dict[str, Any]] | None:
    """Per-operator busy time and rows from Ray Data's own stats, as JSON (never fatal).
    `write_datasink` keeps the executed dataset as `_write_ds`."""

    def walk(summary):
        for parent in summary.parents:
            yield from walk(parent)
        yield from summary.operators_stats

    def total(stat):
        return None if stat is None else round(float(stat.sum), 3)

    try:
        return [{"operator": op.operator_name, "tasks": getattr(op.wall_time, "count", None),
                 "wall_seconds": total(op.wall_time), "cpu_seconds": total(op.cpu_time),
                 "rows_out": None if op.output_num_rows is None else int(op.output_num_rows.sum)}
                for op in walk(getattr(ds, "_write_ds", ds)._get_stats_summary())]
    except Exception as err:
        log.warning("Ray Data stats unavailable: %s", err)
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mmbatch", "ray", "torch", "torchaudio", "transformers", "decord", "av", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
