"""Ray's life cycle on the driver: start a local Ray or attach to a cluster, Ray Data's execution
settings, whether the pools fit the cluster (and at what size the decode pool starts), whether every
node sees the night's folders, and the Ray failures of a night named as mmbatch errors."""

from __future__ import annotations

import contextlib
import logging
import re

from mmbatch.stage import StageSpec

log = logging.getLogger(__name__)
# Said on every healthy run and nothing to act on: the token notice of a local Ray (it serves this
# machine only), and Ray Data's note that its progress bars are off (the job turns them off itself).
BENIGN_RAY_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")
# How often the job tries to start its local Ray (an attached cluster is started by its operator).
LOCAL_START_ATTEMPTS = 2


def _need(spec: StageSpec) -> dict[str, float]:
    """What one actor or task of `spec` asks Ray for, custom resources included."""
    res = spec.resources
    return {"CPU": res.cpus, "GPU": res.gpus, **({"memory": res.memory_bytes} if res.memory_bytes else {}),
            **spec.custom_resources}


def pool_demand(specs: list[StageSpec]) -> dict[str, float]:
    """Resources the graph holds at its minimum: every actor pool at min size + one task (the
    largest), custom resources included."""
    demand: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    task: dict[str, float] = {}
    for spec in specs:
        need = _need(spec)
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
    hints = {"CPU": "lower pool.num_cpus or pool.concurrency minimums", "GPU": "lower pool.num_gpus or pool.concurrency "
             "minimums", "memory": "lower pool.memory_gb or pool.concurrency minimums"}
    scale = {"memory": (2**30, " GiB of memory")}  # Ray counts memory in bytes

    def amount(k: str, value: float) -> str:
        unit, name = scale.get(k, (1, f" {k}"))
        return f"{value / unit:g}{name}"

    problems = [
        f"the pools need at least {amount(k, need)} at their minimum sizes but the cluster has "
        f"{amount(k, available.get(k, 0))} ({hints.get(k, 'no node declares that resource: see pool.resources')})"
        for k, need in demand.items() if need > available.get(k, 0) + 1e-9
    ]
    if problems and strict:
        raise ConfigError("; ".join(problems))
    return problems


def configure_execution(run) -> None:
    """Ray Data's execution settings for this night (run: mmbatch.config.RunConfig)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.op_resource_reservation_enabled = run.ray_data_reservation  # see run.ray_data_reservation
    ctx.execution_no_progress_timeout_s = run.no_progress_timeout_s
    ctx.max_consecutive_actor_init_deaths = run.actor_init_deaths
    # The pools start side by side, without waiting. Ray Data's bounded wait for them
    # (wait_for_min_actors_s) starts them one after another, each pool's models loaded before the
    # next pool's actors are asked for (a 2-video night attached: 28 s); an attached night waits
    # for room with wait_until_placeable instead, a local Ray was checked up front.
    ctx.wait_for_min_actors_s = -1


def wait_until_placeable(specs: list[StageSpec], run) -> None:
    """Attached: wait (at most run.placement_timeout_s) until the cluster can place every actor
    pool's minimum at once, e.g. while it scales up. A placement group of their bundles says so
    (and is what an autoscaler scales for); it is removed before the pools start, so nothing is
    loaded while waiting. ClusterError (exit 1) if the room never comes."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from mmbatch.errors import ClusterError

    bundles = [{k: v for k, v in _need(spec).items() if v} for spec in specs if spec.compute == "actor"
               for _ in range(spec.pool.concurrency[0])]
    bundles = [b for b in bundles if b]  # an actor that asks for nothing is placed anywhere
    if not bundles:
        return
    group = placement_group(bundles, strategy="PACK", name=f"mmbatch-placement-{ray.get_runtime_context().get_job_id()}")
    try:  # (PlacementGroup.wait ignores its timeout for a group that cannot be placed: Ray 2.60)
        ray.get(group.ready(), timeout=run.placement_timeout_s)
    except ray.exceptions.GetTimeoutError:
        need = ", ".join(f"{v:g} {k}" for k, v in pool_demand(specs).items() if v)
        raise ClusterError(
            f"the pools' minimum ({need}) could not be placed within run.placement_timeout_s = "
            f"{run.placement_timeout_s:g} s: add nodes of the needed kind, or lower the pools' num_gpus, num_cpus, "
            "resources or concurrency minimums; the night is not committed and a rerun resumes it") from None
    finally:
        remove_placement_group(group)


# How a worker's set-up error reaches the driver: only as the last line of a traceback's text.
_WORKER_CONFIG_ERROR = re.compile(r"^mmbatch\.errors\.ConfigError: (.+)$", re.MULTILINE)


def cluster_failure(err: BaseException, run):
    """The MmbatchError a Ray failure of the night means (None: not one we can name)."""
    from mmbatch.errors import ClusterError, ConfigError, causes

    for cause in causes(err):
        name = type(cause).__name__
        if name == "ActorDiedError" and (said := _WORKER_CONFIG_ERROR.findall(str(cause))):
            # a worker refused its settings (decode.hwaccel on a node without a CUDA device): exit 2
            return ConfigError(f"a worker refused the configuration: {said[-1]}")
        if name == "ExecutionTimeoutError":
            return ClusterError(
                f"the night made no progress for run.no_progress_timeout_s = {run.no_progress_timeout_s:g} s "
                "(a pool waiting for a node that never came, or a stage stuck); the work staged so far is kept "
                "and a rerun of this date resumes it")
    return None


def check_shared_storage(paths: list, modules: list[tuple[str, str]], output_probe: tuple[str, dict] | None = None,
                         timeout_s: float = 120.0) -> dict[str, str]:
    """Refuse the night unless every alive node sees `paths` (mmbatch.cluster.SharedPath) as the
    driver does and can import `modules`: a task pinned to each node looks. One node: nothing to
    look at. `output_probe` = (uri prefix, storage_options) of an object-storage output: each node,
    however many, writes a probe file there with the workers' environment. Returns {probe uri:
    "" or why that node could not write it} for the caller to judge and clean up."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mmbatch.cluster import node_view, shared_problems
    from mmbatch.errors import SharedStorageError

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if output_probe is None and (len(nodes) <= 1 or not (paths or modules)):
        return {}
    if len(nodes) <= 1:
        paths, modules = [], []
    look = ray.remote(num_cpus=0, max_retries=1)(node_view)
    probes = {node: None if output_probe is None else (f"{output_probe[0]}-{node[:12]}.txt", output_probe[1])
              for node in nodes}
    refs = {node: look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        paths, modules, probes[node]) for node in nodes}
    views = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s)))
    problems = shared_problems(paths, modules, views)
    if problems:
        raise SharedStorageError(
            f"this cluster has {len(nodes)} nodes and not all of them see the night's local folders: "
            + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            + ". Use object storage (s3://...) for inputs, output and models, or a folder shared by every node "
              "(NFS, EFS, a mounted bucket); install package: models on every node")
    return {probes[node][0]: view["output"] for node, view in views.items() if probes[node] is not None}


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
              resources: dict[str, float] | None = None, log_format: str = "text") -> None:
    """`ray.init`: attached when RAY_ADDRESS is set (then `runtime_env` travels to the workers),
    else a local Ray of `num_cpus` declaring `resources`. Workers log at the job's level too
    (Ray's LoggingConfig reaches them under `ray job submit`)."""
    import os

    import ray

    for name in BENIGN_RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    driver_level = quiet_ray_on_driver(log_level)
    # The workers' logging rides the job's config: given to ray.init as `logging_config`, it would
    # also add a second handler to the driver's root logger (every line of the job printed twice).
    job_config = ray.job_config.JobConfig()
    job_config.set_py_logging_config(ray.LoggingConfig(log_level=log_level, encoding=log_format.upper()))
    # logging_level: the driver's "ray" logger, whose "Started a local Ray instance" line is INFO.
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True, job_config=job_config, runtime_env=runtime_env, logging_level=driver_level)
    else:
        start_local_ray(lambda: ray.init(
            num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, job_config=job_config,
            logging_level=driver_level, resources=resources,
            _system_config=local_system_config(num_cpus or os.cpu_count() or 1)))
    ray_lines_through_driver_handlers()
    quiet_ray_on_driver(log_level)  # ray.init configures its loggers anew


def ray_lines_through_driver_handlers() -> None:
    """Ray gives its "ray" logger a handler and format of its own on the driver; where the driver
    configured logging (the commands), Ray's lines go through the driver's handlers instead (one
    format: --log-format json stays JSON). A notebook that configured nothing keeps Ray's."""
    ray_logger = logging.getLogger("ray")
    if logging.getLogger().handlers:
        for handler in ray_logger.handlers[:]:
            ray_logger.removeHandler(handler)
        ray_logger.propagate = True


def quiet_ray_on_driver(log_level: str) -> int:
    """Ray's own lines on the driver (its start, Ray Data's plan and finish) at WARNING and above
    unless the job runs at DEBUG: the job's summary says what they say. Workers log at the job's level."""
    level = logging.DEBUG if log_level == "DEBUG" else max(logging.WARNING, logging.getLevelName(log_level))
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)
    return level


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


def local_system_config(cpus: int) -> dict[str, int | bool]:
    """A local Ray's settings. Ray's own metrics (per task and operator, for a dashboard this
    local Ray does not start) are off: recording and exporting them in every worker cost ~5 ms of
    CPU a clip on the footage benchmark (docs/performance.md). A cluster sets its own."""
    return {"num_workers_soft_limit": max(MIN_IDLE_WORKERS, cpus), "enable_metrics_collection": False}
