"""The graph's mapping onto Ray Data: a stage spec → map_batches or a Datasink, and the dataset
over the input rows. Ray's life cycle and the cluster checks are in ray_runtime.py; what a run's
stats say, in run_stats.py.

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

import inspect
import logging
import warnings
from typing import Any

from mmbatch.pipeline import tally
from mmbatch.stage import StageSpec, keep_after

log = logging.getLogger(__name__)
MAX_BLOCKS = 10_000
_TASK_STAGES: dict[str, Any] = {}
# Retries and restarts have no named parameter in Ray 2.60; the generic **ray_remote_args that
# carries them warns of its deprecation on every run, which says nothing to a user.
warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
# An operator given fewer inputs than its concurrency (every small night's write, a night's few
# long videos to split) is not a problem.
warnings.filterwarnings("ignore", message=r"The maximum number of concurrent tasks for '")


def _project(batch: dict, keep: frozenset | None) -> dict:
    if keep is None:
        return batch
    return {k: v for k, v in batch.items() if k in keep}


class StageActor:
    """Ray Data callable class wrapping any stage; subclassed per stage for its name."""

    def __init__(self, spec: StageSpec, keep: frozenset | None, progress=None):
        self.stage = spec.build()
        self.stage.setup()
        self.keep = keep
        # the tally actor the last stage before the write reports to
        self.report = tally.Reporter(progress) if progress is not None else None
        self._fan_out = inspect.isgeneratorfunction(type(self.stage).__call__)

    def __call__(self, batch):
        outs = self.stage(batch) if self._fan_out else [self.stage(batch)]
        for out in outs:
            out = _project(out, self.keep)
            if self.report is not None:
                self.report(out)
            yield out


def _task_fn(name: str):
    def run(batch, spec: StageSpec, keep: frozenset | None, key: str, progress=None):
        out = _cached_stage(spec, key)(batch)
        report = tally.Reporter(progress, every_s=0.0) if progress is not None else None  # a task's every batch
        for b in out if inspect.isgenerator(out) else [out]:
            b = _project(b, keep)
            if report is not None:
                report(b)
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
    actor (mmbatch/pipeline/tally.py) the last stage before the sink reports to.

    Rows that the first stage passes through unread (its class's `passes_unread(row, *args)`, e.g.
    the split stage's short videos) go around its operator as that stage would emit them: a task
    a video saved (the driver's and Ray's CPU, docs/performance.md)."""
    staged = [(spec, keep) for spec, keep in zip(specs, keep_after(specs)) if spec.compute != "sink"]
    (first, keep), *rest = staged
    passes = getattr(first.stage_cls, "passes_unread", None) if rest else None
    outs = [passes(row, *first.args, **first.kwargs) if passes else None for row in rows]
    around = [_project(out, keep) for out in outs if out is not None]
    through = [row for row, out in zip(rows, outs) if out is None]
    branches = [_items(around)] if around else []
    if through or not around:
        branches.insert(0, apply_stage(_items(through), first, keep, key, retries, None if rest else progress))
    ds = branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0]
    for i, (spec, keep) in enumerate(rest):
        ds = apply_stage(ds, spec, keep, key, retries, progress if i == len(rest) - 1 else None)
    return ds


def _items(rows: list[dict]):
    import ray.data

    # One row per block (up to a cap that keeps scheduling overhead sane on huge nights) so
    # decode spreads over the cluster and one slow video does not hold up others.
    return ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))


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
