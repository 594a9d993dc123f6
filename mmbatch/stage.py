"""The stage contract: settings in __init__, models in setup(), batches in __call__.

Stages know nothing of Ray; `mmbatch/pipeline/adapter.py` maps a `StageSpec` onto Ray Data's
map_batches. A stage is unit-tested by calling it with a plain dict.

What a stage is, is declared on its class (NeMo Curator style), so nothing has to build a stage
to learn it: `name` (the operator's name in progress, stats and the dashboard), `reads` (columns
`__call__` needs), `may_read` (columns it uses when present) and `writes` (columns it adds or
replaces); a fan-out task stage whose rows must reach different workers of the next stage
declares `one_block_a_row` (fused into its tasks; actor stages cannot fuse it), and an actor
stage that should start with as many workers as the cluster holds, not grow from its minimum,
declares `starts_full` (decode, which feeds everything after it), and the first stage may
declare `passes_unread(row, *args)`: the row it would emit for an input row it passes through
without reading anything, which then goes around its operator (the split stage's short videos).
What it runs on, `resources`, is declared on its `StageSpec`, from the config's pool.
`check_columns` checks at assembly that every column a stage reads is written upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from mmbatch.errors import ConfigError

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; gpus may be a fraction so pools share a GPU."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int | None = None


class Stage(Protocol):
    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]]  # needed: written upstream (or by the input rows)
    may_read: ClassVar[tuple[str, ...]]  # used when present
    writes: ClassVar[tuple[str, ...]]  # added or replaced

    def setup(self) -> None: ...

    def __call__(self, batch: Batch) -> Batch: ...


@dataclass(frozen=True)
class StageSpec:
    """One step of the graph: which stage, built how, on which pool. The Ray Data adapter and
    the plain in-process loop of the benchmark both consume the same list of these.

    `name`, `reads`, `may_read` and `writes` come from the stage class unless given (a stage
    made of others, `ColocatedStages`, declares its members' union); `resources` from the pool.
    `compute` says how Ray runs it: "actor" (a pool of long-lived workers), "task" (a task pool),
    or "sink" (the last stage: what its calls return goes to the driver)."""

    stage_cls: type
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    pool: Any = None  # mmbatch.config.PoolConfig
    compute: str = "actor"  # actor | task | sink
    name: str = ""
    reads: tuple[str, ...] = ()
    may_read: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    initial_size: int | None = None  # actors a pool starts with (None: its minimum); see starts_full

    def __post_init__(self):
        for attr in ("name", "reads", "may_read", "writes"):
            if not getattr(self, attr):
                object.__setattr__(self, attr, getattr(self.stage_cls, attr, "" if attr == "name" else ()))

    @property
    def resources(self) -> Resources:
        pool = self.pool
        if pool is None:
            return Resources()
        memory = int(pool.memory_gb * 2**30) if pool.memory_gb else None
        return Resources(cpus=pool.num_cpus, gpus=pool.num_gpus, memory_bytes=memory)

    @property
    def custom_resources(self) -> dict[str, float]:
        """Custom Ray resources of the pool (which node types it may run on)."""
        return dict(self.pool.resources) if self.pool is not None and self.pool.resources else {}

    def build(self):
        return self.stage_cls(*self.args, **self.kwargs)


def concat_batches(parts: list[Batch]) -> Batch:
    """One batch from several with the same columns. A column whose rows differ in shape (error
    rows carry zero-length tensors) becomes an object array of arrays, as Ray Data hands ragged
    columns to the stages."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for k in parts[0]:
        cols = [p[k] for p in parts]
        try:
            out[k] = np.concatenate(cols)
        except ValueError:
            out[k] = np.empty(sum(len(c) for c in cols), dtype=object)
            out[k][:] = [row for c in cols for row in c]
    return out


def keep_after(specs: list[StageSpec]) -> list[frozenset | None]:
    """For each stage, the columns any later stage reads (declared `reads` and `may_read`):
    everything else is dropped after it. None after the last stage (its output goes on as is)."""
    used = [frozenset(spec.reads) | frozenset(spec.may_read) for spec in specs]
    return [frozenset().union(*used[i + 1:]) if i + 1 < len(specs) else None for i in range(len(specs))]


def check_columns(specs: list[StageSpec], source: tuple[str, ...]) -> None:
    """Every column a stage reads is written by the input rows (`source`) or a stage before it;
    a ConfigError naming the stage and the columns otherwise (a graph assembled wrongly)."""
    available = set(source)
    for spec in specs:
        missing = [c for c in spec.reads if c not in available]
        if missing:
            raise ConfigError(f"stage {spec.name!r} reads {', '.join(missing)}, which no stage before it writes "
                              f"(stages: {', '.join(s.name for s in specs)})")
        available.update(spec.writes)


def colocated_spec(members: list[StageSpec], pool) -> StageSpec:
    """One spec whose actors run `members` in turn (see ColocatedStages), on `pool`."""
    reads, written = [], set()
    for m in members:  # what the chain needs from outside; columns a member makes for a later one are there
        reads += [c for c in m.reads if c not in written and c not in reads]
        written.update(m.writes)
    may_read = tuple(dict.fromkeys(c for m in members for c in m.may_read if c not in written))
    writes = tuple(dict.fromkeys(c for m in members for c in m.writes))
    return StageSpec(ColocatedStages, (members,), {}, pool, "actor", ColocatedStages.name, tuple(reads), may_read,
                     writes)


class ColocatedStages:
    """Stages run in turn by one worker: one actor holds every model of the chain, so batches
    pass between them in memory (no extra processes, start-ups or object-store hops)."""

    name = "encoders"

    def __init__(self, members: list[StageSpec]):
        self.members = [spec.build() for spec in members]

    def setup(self) -> None:
        for member in self.members:
            member.setup()

    def __call__(self, batch: Batch) -> Batch:
        for member in self.members:
            batch = member(batch)
        return batch
