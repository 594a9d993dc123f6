"""Every Ray call of a run: a stage spec → map_batches or a Datasink, the dataset over the input
rows, Ray Data's execution settings and stats, the cluster checks, and Ray's errors named.

Actor pools (decode, encoders, fusion): one stage object per actor, `setup()` once per actor.
Task pools (split, sidecar transcripts): a stage object cached per worker process, so tasks on
a warm worker do not redo `setup()`. The write stage (compute "sink") runs as a Ray Data `Datasink`:
its `min_bytes_per_write` makes Ray Data hand each write task a bundle of about the target
file size (map_batches would re-batch a bundle and leave a small tail file per task), and
what each write returns — small completion records — comes back to the driver.

Each operator is named after its stage (progress bars, `ds.stats()` and the dashboard say
which stage is slow), and after each stage the columns no later stage reads are dropped: the
rule comes from the stages' declared `reads` and `may_read`, not from flags placed by hand.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings
from typing import Any

from mmbatch.stage import StageSpec, keep_after
from pipelines import tally

log = logging.getLogger(__name__)
MAX_BLOCKS = 10_000
# How often the job tries to start its local Ray (an attached cluster is started by its operator).
LOCAL_START_ATTEMPTS = 2
_TASK_STAGES: dict[str, Any] = {}
_MAP_BATCHES = re.compile(r"MapBatches\((\w+)\)")  # how Ray Data names an operator of ours
# Retries and restarts have no named parameter in Ray 2.60; the generic **ray_remote_args that
# carries them warns of its deprecation on every run, which says nothing to a user.
warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")


def _project(batch: dict, keep: frozenset | None) -> dict:
    if keep is None:
        return batch
    return {k: v for k, v in batch.items() if k in keep}


class StageActor:
    """Ray Data callable class wrapping any stage; subclassed per stage for its name."""

    def __init__(self, spec: StageSpec, keep: frozenset | None, progress=None):
        self.stage = spec.build()
        self.stage.setup()
        self.keep, self.progress = keep, progress  # the tally actor the last stage before the write reports to
        self._fan_out = inspect.isgeneratorfunction(type(self.stage).__call__)

    def __call__(self, batch):
        outs = self.stage(batch) if self._fan_out else [self.stage(batch)]
        for out in outs:
            out = _project(out, self.keep)
            if self.progress is not None:
                tally.report(self.progress, out)
            yield out


def _task_fn(name: str):
    def run(batch, spec: StageSpec, keep: frozenset | None, key: str, progress=None):
        out = _cached_stage(spec, key)(batch)
        for b in out if inspect.isgenerator(out) else [out]:
            b = _project(b, keep)
            if progress is not None:
                tally.report(progress, b)
            yield b

    run.__name__ = run.__qualname__ = name
    return run


def _cached_stage(spec: StageSpec, key: str):
    """The worker's stage object for this run attempt (`key`); one of an earlier run of the same
    stage in this long-lived worker is closed first (a decode stage holds a child process)."""
    stage = _TASK_STAGES.get(key)
    if stage is None:
        for old in [k for k in _TASK_STAGES if k.startswith(f"{spec.name}-")]:
            close = getattr(_TASK_STAGES.pop(old), "close", None)
            if close is not None:
                close()
        stage = spec.build()
        stage.setup()
        _TASK_STAGES[key] = stage
    return stage


def _datasink_class():
    from ray.data import Datasink

    class StageDatasink(Datasink):
        """Runs a sink stage on each write task's bundle; keeps what the writes return."""

        def __init__(self, spec: StageSpec, key: str, min_bytes: int):
            self.spec, self.key, self._min_bytes = spec, key, min_bytes
            self.records: list = []

        @property
        def min_bytes_per_write(self) -> int:
            return self._min_bytes

        def get_name(self) -> str:
            return self.spec.name

        def write(self, blocks, ctx):
            import pyarrow as pa
            from ray.data.block import BlockAccessor

            tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
            if not tables:
                return None
            table = pa.concat_tables(tables, promote_options="default")
            batch = BlockAccessor.for_block(table).to_batch_format("numpy")
            return _cached_stage(self.spec, f"{self.spec.name}-{self.key}")(batch)

        def on_write_complete(self, write_result) -> None:
            self.records = [r for r in write_result.write_returns if r is not None]

    return StageDatasink


def build_dataset(rows: list[dict], specs: list[StageSpec], key: str, retries: tuple[int, int] = (3, -1),
                  progress=None):
    """The lazy Ray Data graph over the input rows (VideoRef.as_row) up to the sink; nothing runs
    yet. `key` names this run attempt's stage objects in the workers' caches; `progress`: the tally
    actor (pipelines/tally.py) the last stage before the sink reports to."""
    import ray.data

    # One row per block (up to a cap that keeps scheduling overhead sane on huge nights) so
    # decode spreads over the cluster and one slow video does not hold up others.
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))
    return apply_stages(ds, specs, key, retries, progress)


def sink_of(specs: list[StageSpec]) -> StageSpec:
    """The graph's sink: the stage whose calls' returns come back to the driver."""
    sinks = [spec for spec in specs if spec.compute == "sink"]
    if len(sinks) != 1 or specs[-1] is not sinks[0]:
        raise ValueError(f"the graph must end in exactly one sink stage, got {[s.name for s in sinks]}")
    return sinks[0]


def write_to_sink(ds, specs: list[StageSpec], key: str, min_bytes: int, retries: int = 3) -> list:
    """Execute the graph into its sink stage; returns each write's records (on the driver)."""
    spec = sink_of(specs)
    sink = _datasink_class()(spec, key, min_bytes)
    ds.write_datasink(sink, concurrency=spec.pool.concurrency[1],
                      ray_remote_args={**remote_args(spec), "max_retries": retries})
    return sink.records


def remote_args(spec: StageSpec) -> dict[str, Any]:
    """Ray resources of one worker of a stage: CPUs and memory its spec declares, and the custom
    resources its pool names (which nodes it may run on)."""
    res = spec.resources
    args: dict[str, Any] = {"num_cpus": res.cpus}
    if res.memory_bytes:
        args["memory"] = res.memory_bytes
    if spec.custom_resources:
        args["resources"] = spec.custom_resources
    return args


def apply_stage(ds, spec: StageSpec, keep: frozenset | None, key: str, retries: tuple[int, int] = (3, -1),
                progress=None):
    """`retries`: (task retries, actor restarts), for workers that die; see run.task_retries.
    `progress`: a tally actor this stage reports its output to (the last stage before the sink)."""
    res = spec.resources
    common = {"batch_size": spec.pool.batch_size, "batch_format": "numpy", "zero_copy_batch": False,
              **remote_args(spec)}
    if spec.compute == "actor":
        from ray.data import ActorPoolStrategy

        actor_cls = type(spec.name, (StageActor,), {})
        return ds.map_batches(actor_cls, fn_constructor_args=(spec, keep, progress),
                              compute=ActorPoolStrategy(min_size=spec.pool.concurrency[0],
                                                        max_size=spec.pool.concurrency[1],
                                                        initial_size=spec.initial_size),
                              num_gpus=res.gpus or None, max_restarts=retries[1], max_task_retries=retries[1],
                              **common)
    from ray.data import TaskPoolStrategy

    ds = ds.map_batches(_task_fn(spec.name), fn_kwargs={"spec": spec, "keep": keep, "key": f"{spec.name}-{key}",
                                                         "progress": progress},
                        compute=TaskPoolStrategy(size=spec.pool.concurrency[1]), max_retries=retries[0], **common)
    return one_block_a_row(ds) if getattr(spec.stage_cls, "one_block_a_row", False) else ds


def one_block_a_row(ds):
    """The last operator's output rows leave it one a block, so the next operator's tasks (and
    nodes) take them apart: Ray Data gathers a task's rows into one block and never slices a block
    to bundle the next operator's input, so all chunks of a long video reached one decode actor.
    Ray 2.60's `repartition(target_num_rows_per_block=1)` is that, but as an operator of its own that
    asks a whole CPU a task (no public way to give it the stage's share, which it needs to fuse):
    built here with the upstream operator's remote args and compute, it fuses into that operator."""
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import StreamingRepartition
    from ray.data.dataset import Dataset

    up = ds._logical_plan.dag
    op = StreamingRepartition(1, input_dependencies=[up], ray_remote_args=dict(up.ray_remote_args), compute=up.compute)
    return Dataset._from_parent(ds, LogicalPlan(op, ds.context))


def apply_stages(ds, specs: list[StageSpec], key: str, retries: tuple[int, int] = (3, -1), progress=None):
    """map_batches for every stage but a final sink (see `write_to_sink`); the last of them reports
    to the `progress` tally."""
    staged = [(spec, keep) for spec, keep in zip(specs, keep_after(specs)) if spec.compute != "sink"]
    for i, (spec, keep) in enumerate(staged):
        ds = apply_stage(ds, spec, keep, key, retries, progress if i == len(staged) - 1 else None)
    return ds


def pool_demand(specs: list[StageSpec]) -> dict[str, float]:
    """Resources the graph holds at its minimum: every actor pool at min size + one task (the
    largest), custom resources included."""
    demand: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    task: dict[str, float] = {}
    for spec in specs:
        res = spec.resources
        need = {"CPU": res.cpus, "GPU": res.gpus, **spec.custom_resources}
        if spec.compute == "actor":
            for k, v in need.items():
                demand[k] = demand.get(k, 0.0) + spec.pool.concurrency[0] * v
        else:
            for k, v in need.items():
                task[k] = max(task.get(k, 0.0), v)
    for k, v in task.items():
        demand[k] = demand.get(k, 0.0) + v
    return demand


def starting_sizes(specs: list[StageSpec], available: dict[str, float], inputs: int) -> list[StageSpec]:
    """The specs, each actor pool whose stage `starts_full` starting with as many actors as the
    cluster holds beside every other pool's minimum: at most its maximum and one an input (a pool
    that grows from one adds actors one scheduling round at a time while the GPU pools wait)."""
    from dataclasses import replace

    out = []
    for spec in specs:
        lo, hi = spec.pool.concurrency if spec.pool is not None else (1, 1)
        if spec.compute != "actor" or not getattr(spec.stage_cls, "starts_full", False):
            out.append(spec)
            continue
        others = pool_demand([s for s in specs if s is not spec])
        need = {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus, **spec.custom_resources}
        fits = [int((available.get(k, 0.0) - others.get(k, 0.0)) / v + 1e-9) for k, v in need.items() if v > 0]
        size = max(lo, min([hi, max(inputs, 1), *fits]))
        out.append(replace(spec, initial_size=size))
    return out


def check_cluster_fits(specs: list[StageSpec], available: dict[str, float], *, strict: bool) -> list[str]:
    """Problems if the pools' minimum cannot be placed: Ray Data would then wait forever.

    On a fixed cluster (strict) that is an error; on an attached, possibly autoscaling
    cluster it is only reported, and the wait is bounded by run.placement_timeout_s.
    """
    from mmbatch.errors import ConfigError

    demand = pool_demand(specs)
    problems = [
        f"the pools need at least {need:g} {k} at their minimum sizes but the cluster has {available.get(k, 0):g} "
        + (f"(lower pool.num_{k.lower()}s or pool.concurrency minimums)" if k in ("CPU", "GPU")
           else "(no node declares that resource: see pool.resources)")
        for k, need in demand.items() if need > available.get(k, 0) + 1e-9
    ]
    if problems and strict:
        raise ConfigError("; ".join(problems))
    return problems


def configure_execution(run, *, attached: bool) -> None:
    """Ray Data's execution settings for this night (run: mmbatch.config.RunConfig)."""
    import math

    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.op_resource_reservation_enabled = run.ray_data_reservation  # see run.ray_data_reservation
    ctx.execution_no_progress_timeout_s = run.no_progress_timeout_s
    ctx.max_consecutive_actor_init_deaths = run.actor_init_deaths
    # Attached: wait (bounded) for the pools' minimum, e.g. while the cluster scales up. A local Ray
    # was checked up front (check_cluster_fits, strict) and starts its actors without waiting.
    ctx.wait_for_min_actors_s = math.ceil(run.placement_timeout_s) if attached else -1


# How a worker's set-up error reaches the driver: only as the last line of a traceback's text.
_WORKER_CONFIG_ERROR = re.compile(r"^mmbatch\.errors\.ConfigError: (.+)$", re.MULTILINE)


def cluster_failure(err: BaseException, run, demand: dict[str, float]):
    """The MmbatchError a Ray failure of the night means (None: not one we can name)."""
    from mmbatch.errors import ClusterError, ConfigError, causes

    for cause in causes(err):
        name = type(cause).__name__
        if name == "ActorDiedError" and (said := _WORKER_CONFIG_ERROR.findall(str(cause))):
            # a worker refused its settings (decode.hwaccel on a node without a CUDA device): exit 2
            return ConfigError(f"a worker refused the configuration: {said[-1]}")
        if name == "GetTimeoutError" and "starting actors" in str(cause):
            need = ", ".join(f"{v:g} {k}" for k, v in demand.items() if v)
            return ClusterError(
                f"the pools' minimum ({need}) could not be placed within run.placement_timeout_s = "
                f"{run.placement_timeout_s:g} s: add nodes of the needed kind, or lower the pools' num_gpus, num_cpus, "
                "resources or concurrency minimums; the night is not committed and a rerun resumes it")
        if name == "ExecutionTimeoutError":
            return ClusterError(
                f"the night made no progress for run.no_progress_timeout_s = {run.no_progress_timeout_s:g} s "
                "(a pool waiting for a node that never came, or a stage stuck); the work staged so far is kept "
                "and a rerun of this date resumes it")
    return None


def check_shared_storage(paths: list, modules: list[tuple[str, str]], timeout_s: float = 120.0) -> None:
    """Refuse the night unless every alive node sees `paths` (mmbatch.cluster.SharedPath) as the
    driver does and can import `modules`: a task pinned to each node looks. One node: nothing to do."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mmbatch.cluster import node_view, shared_problems
    from mmbatch.errors import SharedStorageError

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1 or not (paths or modules):
        return
    look = ray.remote(num_cpus=0, max_retries=1)(node_view)
    refs = {node: look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(paths, modules)
            for node in nodes}
    views = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s)))
    problems = shared_problems(paths, modules, views)
    if problems:
        raise SharedStorageError(
            f"this cluster has {len(nodes)} nodes and not all of them see the night's local folders: "
            + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            + ". Use object storage (s3://...) for inputs, output and models, or a folder shared by every node "
              "(NFS, EFS, a mounted bucket); install package: models on every node")


def stage_stats(ds) -> list[dict[str, Any]] | None:
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


def operator_stage(operator: str) -> str | None:
    """The stage an operator of Ray Data's stats runs ("MapBatches(decode)->…" → "decode")."""
    match = _MAP_BATCHES.search(operator)
    return match.group(1) if match else None


def pool_sizes(specs: list[StageSpec]) -> dict[str, int]:
    """Each actor pool's most actors (stage name → its concurrency maximum)."""
    return {spec.name: spec.pool.concurrency[1] for spec in specs if spec.compute == "actor"}


def pool_busy_share(stats: list[dict] | None, actors: dict[str, int], wall_s: float) -> dict[str, float]:
    """Per actor pool, the share of its actors' time spent inside calls over `wall_s` (from Ray
    Data's per-operator wall time, `stage_stats`): the pool nearest 1.0 is the one the others wait
    for. `actors`: stage → actors (`pool_sizes`: each pool's maximum, so an autoscaling pool that
    stayed smaller reads low). Start-up counts as idle, so on short runs every share is low."""
    out = {}
    for stat in stats or []:
        name = operator_stage(stat["operator"])
        if actors.get(name) and stat.get("wall_seconds") is not None and wall_s > 0:
            out[name] = round(stat["wall_seconds"] / (actors[name] * wall_s), 3)
    return out


def cluster_resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()


def ray_is_up() -> bool:
    import ray

    return ray.is_initialized()


def show_progress_bars(show: bool) -> None:
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = show


def start_ray(log_level: str, *, num_cpus: int | None = None, runtime_env: dict | None = None,
              resources: dict[str, float] | None = None) -> None:
    """`ray.init`: attached when RAY_ADDRESS is set (then `runtime_env` travels to the workers),
    else a local Ray of `num_cpus` declaring `resources`. Workers log at the job's level too
    (Ray's LoggingConfig reaches them under `ray job submit`)."""
    import os

    import ray

    logging_config = ray.LoggingConfig(log_level=log_level)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True, logging_config=logging_config, runtime_env=runtime_env)
    else:
        start_local_ray(lambda: ray.init(
            num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_config=logging_config,
            resources=resources, _system_config=local_system_config(num_cpus or os.cpu_count() or 1)))


def start_local_ray(init, attempts: int = LOCAL_START_ATTEMPTS) -> None:
    """`init()` (a local `ray.init`), tried again when the local Ray fails to come up. On a busy
    machine its raylet can die waiting for its own agents (`Timed out waiting for file
    .../metrics_agent_port_...`, then `The current node timed out during startup`); a fresh
    session then usually starts. What a failed attempt started (GCS, agents, reaper: children of
    this process) is stopped by PID first. The last failure is a ClusterError, exit 1."""
    import psutil
    import ray

    from mmbatch.errors import ClusterError, short_reason

    me = psutil.Process()
    for attempt in range(1, attempts + 1):
        before = {c.pid for c in me.children(recursive=True)}
        try:
            init()
            return
        except Exception as err:
            reason = short_reason(err)
        if not ray.is_initialized():  # a half-started node, never a working connection
            ray.shutdown()
        leftovers = [c for c in me.children(recursive=True) if c.pid not in before]
        for c in leftovers:
            with contextlib.suppress(psutil.Error):
                c.terminate()
        for c in psutil.wait_procs(leftovers, timeout=10)[1]:
            with contextlib.suppress(psutil.Error):
                c.kill()
        if attempt < attempts:
            log.warning("the local Ray did not start (%s); starting a fresh one (attempt %d of %d)",
                        reason, attempt + 1, attempts)
    raise ClusterError(f"the local Ray did not start in {attempts} attempts: {reason} (a machine too busy "
                       "to start Ray's processes in time; its logs are under /tmp/ray/session_latest/logs)")


# Idle workers a local Ray keeps. Ray's default is one a CPU, and when the actor pools claim every
# core, each split and write task then starts a fresh worker that imports Ray and pyarrow again
# (~3 CPU-seconds a start on 2 cores; docs/performance.md). A cluster sets this on its nodes.
MIN_IDLE_WORKERS = 8


def local_system_config(cpus: int) -> dict[str, int]:
    return {"num_workers_soft_limit": max(MIN_IDLE_WORKERS, cpus)}
