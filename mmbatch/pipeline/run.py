"""A night's run: plan it (everything before any video is read, no Ray), then execute it.

    plan_run:  models' identities → inputs discovered → the lease on the night → models inspected
               (Ray starts meanwhile) → an interrupted commit of the date finished → what is
               resumed, skipped or refused
    execute:   the graph (mmbatch/pipeline/graph.py) on Ray Data (mmbatch/pipeline/adapter.py) → the driver's
               ledger → the commit → the report → RunResult (the run record as written)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mmbatch.config import PipelineConfig
from mmbatch.errors import short_reason
from mmbatch.night.night import NightOutput
from mmbatch.schema import EmbeddingDims
from mmbatch.stage import StageSpec

log = logging.getLogger(__name__)


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
    manifest: dict[str, Any] = field(default_factory=dict)  # the run record, as on disk

    @property
    def failed_fraction(self) -> float:
        attempted = self.scored + self.failed
        return self.failed / attempted if attempted else 0.0

    def degraded_modalities(self, limit: float) -> dict[str, float]:
        """Configured modalities that failed on more than `limit` of the clips they were tried on."""
        return {m: c["failed_fraction"] for m, c in self.manifest.get("modalities", {}).items()
                if c["failed_fraction"] > limit}


@dataclass
class RunPlan:
    """Everything decided before any video is read: models inspected, inputs discovered and checked,
    what is resumed, skipped or refused, and (unless a dry run) the lease on the night."""

    config: PipelineConfig
    input_uri: str
    output_uri: str
    run_date: dt.date
    refs: list  # VideoRef: every input of the night
    dims: EmbeddingDims
    fingerprint: str
    identities: dict[str, str]  # each model's identity: what the fingerprint hashes
    night: NightOutput  # layout, ledger, committer, writer arguments, lease (None for a dry run)
    specs: list[StageSpec]
    resumed: dict  # video id → outcome finished by an earlier attempt of this run
    skipped: dict  # video id → state row: scored on an earlier night from the same content and models
    todo: list  # VideoRef to score now
    refused: list  # VideoRef refused or unreadable: failed with the reason, never read
    rolled: list = field(default_factory=list)  # runs of the date whose interrupted commit this plan finished
    started: float = field(default_factory=time.perf_counter)

    def release(self) -> None:
        """Free the night (a plan that will not be executed)."""
        if self.night.lease is not None:
            self.night.lease.release()

    def summary(self) -> str:
        return (f"{len(self.refs)} inputs: {len(self.todo)} to score, {len(self.resumed)} resumed, "
                f"{len(self.skipped)} skipped, {len(self.refused)} refused or unreadable")


@dataclass
class PlanWatch:
    """What the plan is reading now, and the lease once taken: the plan runs in a thread and
    another keeps its deadline (run.plan_timeout_s), naming what it was stuck on."""

    doing: str = "starting"
    lease: Any = None

    def __call__(self, doing: str) -> None:
        self.doing = doing


def config_key(config: PipelineConfig) -> str:
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


def plan_run(config: PipelineConfig, input_uri: str, output_uri: str, run_date: dt.date, *, force: bool = False,
             dry_run: bool = False, checked: Callable[[], None] | None = None,
             watch: PlanWatch | None = None) -> RunPlan:
    """The run up to the point where Ray is needed; no Ray here, so bad configuration, models,
    inputs or outputs fail fast. A real run takes the lease on the night (the first write to the
    output) and finishes an interrupted commit of the date; a dry run only probes that the
    output can be written.

    `checked` is called once the inputs are listed and the output is known to be writable, before
    the models' configs are read (seconds: it imports torch): the CLI starts Ray at that point,
    so the two overlap. `watch` is told what is being read, and gets the lease once taken.
    """
    from mmbatch.encoders.inspect import model_identities
    from mmbatch.inputs import sources
    from mmbatch.night.night import night_layout
    from mmbatch.trust import AllowedRoots, redact_uri

    t0 = time.perf_counter()
    watch = watch or PlanWatch()
    watch("identifying the configured models")
    identities = model_identities(config)  # hashed once: the trained-head check reuses them
    fingerprint = config.fingerprint(identities)
    fs, layout = night_layout(output_uri, config.storage_options, run_date, fingerprint)
    trust = AllowedRoots.for_input(input_uri, config.inputs.allowed_roots)
    refs = sources.discover(input_uri, config.storage_options, trust=trust, watch=watch,
                            max_manifest_rows=config.inputs.max_manifest_rows,
                            max_manifest_bytes=config.inputs.max_manifest_bytes)
    watch(f"taking the lease on the output {redact_uri(output_uri)}")
    lease = watch.lease = _take_night(fs, layout, output_uri, config, dry_run)
    try:
        if checked is not None:
            checked()
        plan = _plan_work(config, input_uri, output_uri, run_date, refs, identities, fingerprint, fs, layout, trust,
                          lease=lease, force=force, dry_run=dry_run, watch=watch)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    plan.started = t0
    log.info("%s", plan.summary())
    return plan


def _take_night(fs, layout, output_uri: str, config: PipelineConfig, dry_run: bool):
    """The lease on the night (None for a dry run, which only probes): the first write to the
    output, so an unwritable output fails here, before any video work."""
    from mmbatch.errors import OutputError, OutputMistakeError
    from mmbatch.night.lock import LockedError
    from mmbatch.night.night import night_lease
    from mmbatch.trust import redact_uri

    lease = night_lease(fs, layout, output_uri, config.run.lock_ttl_s)
    try:
        lease.probe() if dry_run else lease.acquire()
    except LockedError:
        raise
    except Exception as err:
        # A file where a folder belongs, or no permission: a person must act (2); a full disk or a
        # store that does not answer may pass (1).
        kind = OutputMistakeError if isinstance(err, _OUTPUT_MISTAKES) else OutputError
        raise kind(f"cannot write to the output {redact_uri(output_uri)}: {short_reason(err, 300)}") from None
    return None if dry_run else lease


_OUTPUT_MISTAKES = (NotADirectoryError, FileExistsError, IsADirectoryError, PermissionError)


def _plan_work(config: PipelineConfig, input_uri: str, output_uri: str, run_date: dt.date, refs: list,
               identities: dict, fingerprint: str, fs, layout, trust, *, lease, force: bool, dry_run: bool,
               watch: PlanWatch) -> RunPlan:
    """Models inspected, the night's objects wired, and what is resumed, skipped, refused or to do."""
    from mmbatch.encoders.inspect import inspect_models
    from mmbatch.night.night import open_night
    from mmbatch.night.state import skipped_videos
    from mmbatch.output.records import VideoOutcome
    from mmbatch.pipeline.graph import row_group_rows, stage_specs
    from mmbatch.tables.formats import open_tables

    watch("reading the configured models' configs")
    dims = inspect_models(config, identities)
    watch("opening the output's tables")
    tables = open_tables(output_uri, config.storage_options, config.output)
    night = open_night(fs, layout, refs, output_uri=output_uri, fingerprint=fingerprint, dims=dims,
                       config_json=json.dumps(config.redacted(), sort_keys=True), storage_options=config.storage_options,
                       row_group_rows=row_group_rows(config, dims), lease=lease, tables=tables)
    specs = stage_specs(config, dims, night.writer, trust)
    watch("finishing an interrupted commit of the date, if any")
    rolled = [] if dry_run else night.committer.roll_forward()
    watch("reading the work staged by earlier attempts of the night")
    resumed = night.ledger.load() if not force else {}
    refused = [r for r in refs if r.error]
    for ref in refused:  # refused or unreadable inputs: failed with the reason, never read
        night.ledger.done[ref.video_id] = VideoOutcome(ref.video_id, "error", n_clips=0, duration_s=None,
                                                       decode_seconds=0.0, error_stage="input", error=ref.error,
                                                       etag=ref.etag, size_bytes=ref.size_bytes)
    watch("reading the state table (videos scored on earlier nights)")
    skipped = skipped_videos(fs, layout, night.committer.tables, refs, resumed, fingerprint) if not force else {}
    todo = [r for r in refs if r.video_id not in night.ledger.done and r.video_id not in skipped]
    return RunPlan(config, input_uri, output_uri, run_date, refs, dims, fingerprint, identities, night, specs,
                   resumed, skipped, todo, refused, rolled)


def execute(plan: RunPlan, *, strict_resources: bool = True) -> RunResult:
    """Score what the plan says, then commit; releases the plan's lease. Ray must be up.

    `strict_resources`: fail when the pools' minimum does not fit the cluster (set False on
    autoscaling clusters, where it is only logged).
    """
    from mmbatch.pipeline import ray_runtime

    config, night = plan.config, plan.night
    try:
        for problem in ray_runtime.check_cluster_fits(plan.specs, ray_runtime.cluster_resources(), strict=strict_resources):
            log.warning("%s", problem)
        if not strict_resources:  # attached to a cluster
            check_shared_folders(plan)
        ray_runtime.configure_execution(config.run, attached=not strict_resources)
        night.lease.start_renewing()
        stage_stats, execution_s = _score(plan) if plan.todo else (None, 0.0)
        for vid, pending in night.ledger.pending.items():  # rows lost mid-video (should not happen)
            log.error("video %s incomplete at commit: chunks %s of %d", vid, pending.received, pending.n_chunks)
        wall = time.perf_counter() - plan.started
        extra = _manifest_extra(plan, wall, stage_stats, execution_s)
        with _interrupts_deferred() as received:  # committed entirely, or not at all
            manifest = night.committer.commit(plan.refs, night.ledger.done, plan.skipped, extra,
                                              guard=night.lease.check)  # a lapsed or lost lease never commits
        if received:
            log.warning("%s arrived during the commit; the night is committed, its report left out", received[0])
        else:
            _write_report(plan, manifest)
    finally:
        night.lease.release()
    c = manifest["counts"]
    return RunResult(night.layout.run_id, plan.output_uri, c["inputs"], c["scored"], c["failed"], c["skipped"],
                     c["clips"], wall, manifest)


@contextlib.contextmanager
def _interrupts_deferred():
    """SIGINT and SIGTERM are held (their names collected) while the block runs, so a commit is
    never cut between its record and its publish by a scheduler's stop. Main thread only."""
    import signal
    import threading

    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    kinds = (signal.SIGINT, signal.SIGTERM)
    before = {k: signal.signal(k, lambda signum, frame: received.append(signal.Signals(signum).name)) for k in kinds}
    try:
        yield received
    finally:
        for k, handler in before.items():
            signal.signal(k, handler)


def _score(plan: RunPlan) -> tuple[list[dict[str, Any]] | None, float]:
    """Run the graph over the videos to do; their completion records go to the ledger. Returns
    Ray Data's per-operator stats and the seconds the graph ran."""
    from mmbatch.night.progress import ProgressReporter
    from mmbatch.pipeline import adapter, ray_runtime, run_stats, tally

    config, ledger = plan.config, plan.night.ledger
    ledger.begin()
    scored = tally.start_tally()
    progress = ProgressReporter(ledger, len(plan.todo), config.run.progress_interval_s, lambda: tally.counts(scored))
    progress.start()
    key = f"{config_key(config)}-{ledger.attempt}"
    specs = ray_runtime.starting_sizes(plan.specs, ray_runtime.cluster_resources(), len(plan.todo))
    ds = adapter.build_dataset([r.as_row() for r in plan.todo], specs, key,
                               (config.run.task_retries, config.run.actor_restarts), scored)
    started = time.perf_counter()
    try:  # only small completion records reach the driver; clip rows stay on the workers
        written = adapter.write_to_sink(ds, plan.specs, key, int(config.output.target_file_mb * 2**20),
                                        config.run.task_retries)
    except Exception as err:
        named = ray_runtime.cluster_failure(err, config.run, ray_runtime.pool_demand(plan.specs)) or _storage_failure(err, plan)
        if named is None:
            raise
        raise named from None
    finally:
        progress.stop()
        tally.stop_tally(scored)
    execution_s = time.perf_counter() - started
    for records in written:
        ledger.add_records(records)
    return run_stats.stage_stats(ds), execution_s


def _manifest_extra(plan: RunPlan, wall: float, stage_stats, execution_s: float) -> dict[str, Any]:
    """What the run adds to its commit record besides the night's files and counts."""
    from mmbatch.pipeline import run_stats
    from mmbatch.trust import redact_uri

    outcomes = plan.night.ledger.done.values()
    return {
        "resumed_from_ledger": len(plan.resumed),
        "rolled_forward": plan.rolled,
        "config": plan.config.redacted(),
        "embedding_dims": plan.dims.as_dict(),
        "model_identities": plan.identities,  # what the fingerprint hashes; trained heads check them
        "input": redact_uri(plan.input_uri),  # the per-input listing is the videos table of this partition
        "timings": {"wall_seconds": round(wall, 3),
                    "decode_seconds": round(sum(o.decode_seconds for o in outcomes), 3),
                    "stages": stage_stats, "execution_seconds": round(execution_s, 3),
                    # the pool nearest 1.0 is the one the others waited for (docs/performance.md, Tuning)
                    "pool_busy_share": run_stats.pool_busy_share(stage_stats, run_stats.pool_sizes(plan.specs), execution_s)},
        "versions": _versions(),
    }


def run_pipeline(config: PipelineConfig, input_uri: str, output_uri: str, run_date: dt.date,
                 *, force: bool = False, strict_resources: bool = True) -> RunResult:
    """Discover, skip what is done, score the rest, commit: `plan_run` then `execute`."""
    return execute(plan_run(config, input_uri, output_uri, run_date, force=force), strict_resources=strict_resources)


def _write_report(plan: RunPlan, manifest: dict[str, Any]) -> None:
    """The night's HTML report next to its run record, which then names it; a report is never a
    reason to fail the night."""
    from mmbatch.readers.report import write_report

    committer = plan.night.committer
    try:
        report = write_report(plan.output_uri, plan.run_date, plan.config.storage_options,
                              output_config=plan.config.output)
    except Exception as err:
        log.warning("run report not written: %s", short_reason(err, 300))
        committer.amend(manifest, cleanup_warnings=[*manifest["cleanup_warnings"], f"run report: {short_reason(err, 300)}"])
        return
    committer.amend(manifest, report=report)


# A store that will not take the workers' requests as they are: botocore's exception types, and the
# S3 error codes that s3fs folds into the message of a generic OSError.
_ACCESS_ERROR_TYPES = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "PermissionError")
_ACCESS_ERROR_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AccessDenied")


def _storage_failure(err: BaseException, plan: RunPlan):
    """The output error behind a failed write, through Ray's task-error wrapping: credentials or
    access the workers lack (exit 2: a rerun changes nothing), or another OSError (exit 1)."""
    from mmbatch.errors import OutputError, StorageAccessError, causes
    from mmbatch.trust import redact_uri

    where = redact_uri(plan.output_uri)
    chain = list(causes(err))
    oserrors = [c for c in chain if isinstance(c, OSError)]
    innermost = oserrors[-1] if oserrors else None  # Ray's wrapper is an OSError too; its text is a traceback
    for cause in chain:
        if type(cause).__name__ in _ACCESS_ERROR_TYPES or any(code in str(cause) for code in _ACCESS_ERROR_CODES):
            return StorageAccessError(
                f"the workers cannot write clip files under {where}: {short_reason(cause, 300)}; give every node "
                "credentials (an instance role or the provider chain, storage_options, or the variables named in "
                "run.worker_env)")
        if cause is innermost:
            return OutputError(f"writing clip files under {where} failed: {short_reason(cause, 300)}; "
                               "the work staged so far is kept and a rerun of this date resumes it")
    return None


def check_shared_folders(plan: RunPlan) -> None:
    """On an attached cluster, every local folder the night needs (output, inputs, model folders)
    must look the same from every node, and package: models must import there; else the night
    is refused before any video is read. The output is proven by a probe file written here."""
    from mmbatch import cluster, storage
    from mmbatch.pipeline.ray_runtime import check_shared_storage

    fs, layout, attempt = plan.night.fs, plan.night.layout, plan.night.ledger.attempt
    paths = [cluster.SharedPath(what, path, cluster.path_signature(path))
             for what, path in cluster.local_paths(plan.config, plan.input_uri)]
    probe = None
    if storage.is_local(plan.output_uri):
        fs.makedirs(layout.staging, exist_ok=True)
        probe = f"{layout.staging}/probe-{attempt}.txt"
        fs.pipe_file(probe, attempt.encode())
        paths.append(cluster.SharedPath("the output", probe, attempt, probe=True))
    try:
        check_shared_storage(paths, cluster.packages(plan.config))
    finally:
        if probe is not None:
            fs.rm_file(probe)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mmbatch", "ray", "torch", "torchaudio", "transformers", "decord", "av", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
