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
from mmbatch.monitor import Monitor
from mmbatch.night.night import Night, record_json
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
    exit_code: int = 0  # 0 committed, 3 committed but degraded (mmbatch.errors.ExitCode)
    degraded: list[str] = field(default_factory=list)  # why it is degraded, most serious first


@dataclass
class RunPlan:
    """Everything decided before any video is read: models inspected, inputs discovered and checked,
    the night opened (its lease taken unless a dry run) and its inputs sorted."""

    config: PipelineConfig
    input_uri: str
    night: Night  # layout, lease, tables, ledger, committer, the sorted work
    dims: EmbeddingDims
    identities: dict[str, str]  # each model's identity: what the fingerprint hashes
    specs: list[StageSpec]
    rolled: list = field(default_factory=list)  # runs of the date whose interrupted commit this plan finished
    started: float = field(default_factory=time.perf_counter)

    output_uri = property(lambda self: self.night.output_uri)
    run_date = property(lambda self: self.night.layout.run_date)
    refs = property(lambda self: self.night.refs)  # VideoRef: every input of the night
    resumed = property(lambda self: self.night.work.resumed)
    skipped = property(lambda self: self.night.work.skipped)
    refused = property(lambda self: self.night.work.refused)
    todo = property(lambda self: self.night.work.todo)

    def release(self) -> None:
        """Free the night (a plan that will not be executed)."""
        self.night.release()

    def summary(self) -> str:
        return (f"{len(self.refs)} inputs: {len(self.todo)} to score, {len(self.resumed)} resumed, "
                f"{len(self.skipped)} skipped, {len(self.refused)} refused or unreadable")


@dataclass
class PlanWatch:
    """What the plan is reading now, and the night once its lease is taken: the plan runs in a
    thread and another keeps its deadline (run.plan_timeout_s), naming what it was stuck on."""

    doing: str = "starting"
    lease: Any = None  # the night (its release() frees the lease)

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
    so the two overlap. `watch` is told what is being read, and gets the night once its lease is taken.
    """
    from mmbatch.encoders.inspect import model_identities
    from mmbatch.inputs import sources
    from mmbatch.trust import AllowedRoots, redact_uri

    t0 = time.perf_counter()
    watch = watch or PlanWatch()
    watch("identifying the configured models")
    identities = model_identities(config)  # hashed once: the trained-head check reuses them
    night = Night(output_uri, run_date, config.fingerprint(identities), storage_options=config.storage_options,
                  output=config.output, lease_ttl_s=config.run.lock_ttl_s)
    trust = AllowedRoots.for_input(input_uri, config.inputs.allowed_roots)
    refs = sources.discover(input_uri, config.storage_options, trust=trust, watch=watch,
                            max_manifest_rows=config.inputs.max_manifest_rows,
                            max_manifest_bytes=config.inputs.max_manifest_bytes)
    watch(f"taking the lease on the output {redact_uri(output_uri)}")
    if dry_run:
        night.probe()
    else:
        watch.lease = night  # before it is taken: a stop while it is being taken still gives it back
        night.take()
    try:
        if checked is not None:
            checked()
        plan = _plan_work(RunPlan(config, input_uri, night, None, identities, []), refs, trust, force=force,
                          watch=watch)
    except BaseException:
        night.release()
        raise
    plan.started = t0
    log.debug("%s", plan.summary())  # the command prints it (plan: ...): once
    return plan


def _plan_work(plan: RunPlan, refs: list, trust, *, force: bool, watch: PlanWatch) -> RunPlan:
    """Models inspected, the night opened, and its inputs sorted into resumed, skipped, refused, to do."""
    from mmbatch.encoders.inspect import inspect_models
    from mmbatch.pipeline.graph import row_group_rows, stage_specs

    config, night = plan.config, plan.night
    watch("reading the configured models' configs")
    plan.dims = inspect_models(config, plan.identities)
    watch("opening the output's tables")
    night.open(refs, plan.dims, config_json=record_json(config), row_group_rows=row_group_rows(config, plan.dims))
    plan.specs = stage_specs(config, plan.dims, night.writer, trust)
    watch("finishing an interrupted commit of the date, if any")
    plan.rolled = night.roll_forward() if night.held else []
    watch("reading the work staged by earlier attempts of the night and the state table")
    night.sort(force=force)
    return plan


def execute(plan: RunPlan, *, strict_resources: bool = True, monitor: Monitor | None = None) -> RunResult:
    """Score what the plan says, then commit; releases the plan's lease. Ray must be up.

    `strict_resources`: fail when the pools' minimum does not fit the cluster (set False on
    autoscaling clusters, where it is only logged). `monitor` is told the night's start, progress
    and committed end; an error is the caller's to tell it (`Monitor.failed`).
    """
    from mmbatch.errors import ExitCode
    from mmbatch.pipeline import ray_runtime

    config, night = plan.config, plan.night
    monitor = monitor or Monitor(None)
    monitor.started(night.run_id, len(plan.todo))
    try:
        for problem in ray_runtime.check_cluster_fits(plan.specs, ray_runtime.cluster_resources(), strict=strict_resources):
            log.warning("%s", problem)
        if not strict_resources:  # attached to a cluster
            check_shared_folders(plan)
            if plan.todo:  # a night with nothing to score starts no pool: nothing to wait for
                ray_runtime.wait_until_placeable(plan.specs, config.run)
        ray_runtime.configure_execution(config.run)
        night.lease.start_renewing()
        stage_stats, execution_s = _score(plan, monitor) if plan.todo else (None, 0.0)
        for vid, pending in night.ledger.pending.items():  # rows lost mid-video (should not happen)
            log.error("video %s incomplete at commit: chunks %s of %d", vid, pending.received, pending.n_chunks)
        wall = time.perf_counter() - plan.started
        extra = _manifest_extra(plan, wall, stage_stats, execution_s)
        with _interrupts_deferred() as received:  # committed entirely, or not at all
            manifest = night.commit(extra)
        if received:
            log.warning("%s arrived during the commit; the night is committed, its report left out", received[0])
        else:
            night.report(manifest)
    finally:
        night.release()
    c = manifest["counts"]
    reasons = night.degraded_reasons(manifest, config.run)
    code = ExitCode.DEGRADED if reasons else ExitCode.OK
    monitor.finished(manifest, int(code))
    return RunResult(night.run_id, plan.output_uri, c["inputs"], c["scored"], c["failed"], c["skipped"],
                     c["clips"], wall, manifest, int(code), reasons)


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


def _score(plan: RunPlan, monitor: Monitor) -> tuple[list[dict[str, Any]] | None, float]:
    """Run the graph over the videos to do; their completion records go to the ledger. Returns
    Ray Data's per-operator stats and the seconds the graph ran."""
    from mmbatch.pipeline import adapter, ray_runtime, run_stats, tally

    config, ledger = plan.config, plan.night.ledger
    ledger.begin()
    scored = tally.start_tally()
    progress = plan.night.progress(config.run.progress_interval_s, lambda: tally.counts(scored), monitor.progress)
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
        named = ray_runtime.cluster_failure(err, config.run) or _storage_failure(err, plan)
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
                    # the pool nearest 1.0 is the one the others waited for (docs/tuning.md)
                    "pool_busy_share": run_stats.pool_busy_share(stage_stats, run_stats.pool_sizes(plan.specs), execution_s)},
        "versions": _versions(),
    }


def run_pipeline(config: PipelineConfig, input_uri: str, output_uri: str, run_date: dt.date,
                 *, force: bool = False, strict_resources: bool = True) -> RunResult:
    """Discover, skip what is done, score the rest, commit: `plan_run` then `execute`."""
    return execute(plan_run(config, input_uri, output_uri, run_date, force=force), strict_resources=strict_resources)


# A store that will not take the workers' requests as they are: botocore's exception types, and the
# S3 error codes that s3fs folds into the message of a generic OSError.
_ACCESS_ERROR_TYPES = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "PermissionError")
_ACCESS_ERROR_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AccessDenied")
_GIVE_CREDENTIALS = ("give every node credentials (an instance role or the provider chain, storage_options, or the "
                     "variables named in run.worker_env)")


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
            return StorageAccessError(f"the workers cannot write clip files under {where}: {short_reason(cause, 300)}; "
                                      + _GIVE_CREDENTIALS)
        if cause is innermost:
            return OutputError(f"writing clip files under {where} failed: {short_reason(cause, 300)}; "
                               "the work staged so far is kept and a rerun of this date resumes it")
    return None


def check_shared_folders(plan: RunPlan) -> None:
    """On an attached cluster, every local folder the night needs (output, inputs, model folders)
    must look the same from every node, and package: models must import there; else the night
    is refused before any video is read. A local output is proven by a probe file written here
    and read on each node; an object-storage output by a probe file each node writes with the
    workers' environment (the credentials run.worker_env sends), before any model is loaded."""
    from mmbatch import cluster, storage
    from mmbatch.pipeline.ray_runtime import check_shared_storage

    fs, layout, attempt = plan.night.fs, plan.night.layout, plan.night.ledger.attempt
    paths = [cluster.SharedPath(what, path, cluster.path_signature(path))
             for what, path in cluster.local_paths(plan.config, plan.input_uri)]
    probe = output_probe = None
    if storage.is_local(plan.output_uri):
        fs.makedirs(layout.staging, exist_ok=True)
        probe = f"{layout.staging}/probe-{attempt}.txt"
        fs.pipe_file(probe, attempt.encode())
        paths.append(cluster.SharedPath("the output", probe, attempt, probe=True))
    else:
        output_probe = (f"{fs.unstrip_protocol(layout.staging)}/probe-{attempt}", plan.config.storage_options)
    written: dict[str, str] = {}
    try:
        written = check_shared_storage(paths, cluster.packages(plan.config), output_probe)
    finally:
        if probe is not None:
            fs.rm_file(probe)
        for uri, reason in written.items():
            if not reason:
                try:
                    fs.rm_file(uri)
                except OSError as err:  # a probe left in the staging folder harms nothing
                    log.warning("could not remove the probe file %s: %s", uri, short_reason(err))
    failed = sorted((uri, reason) for uri, reason in written.items() if reason)
    if failed:
        raise _probe_failure(failed[0][1], len(failed), len(written), plan)


def _probe_failure(reason: str, failed: int, nodes: int, plan: RunPlan):
    """The error of a node that could not write the output's probe file: credentials or access
    (exit 2), or another failure of the store (exit 1)."""
    from mmbatch.errors import OutputError, StorageAccessError
    from mmbatch.trust import redact_uri

    where, on = redact_uri(plan.output_uri), f"{failed} of {nodes} nodes"
    if any(name in reason for name in _ACCESS_ERROR_TYPES) or any(code in reason for code in _ACCESS_ERROR_CODES):
        return StorageAccessError(f"the workers cannot write clip files under {where} ({on}: {reason}); "
                                  f"{_GIVE_CREDENTIALS}; nothing was scored")
    return OutputError(f"the workers could not write a probe file under {where} ({on}: {reason}); nothing was "
                       "scored, and a rerun of this date starts again")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mmbatch", "ray", "torch", "torchaudio", "transformers", "decord", "av", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
