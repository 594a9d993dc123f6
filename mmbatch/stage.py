"""The stage contract (DESIGN §3): settings in __init__, models in setup(), batches in __call__.

Stages know nothing of Ray; `pipelines/adapter.py` maps a stage and its declared resources
onto Ray Data's map_batches. A stage is unit-tested by calling it with a plain dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; gpus may be a fraction so pools share a GPU."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int | None = None


class Stage(Protocol):
    name: str
    resources: Resources
    reads: tuple[str, ...]  # the columns __call__ reads; later stages' reads decide what travels

    def setup(self) -> None: ...

    def __call__(self, batch: Batch) -> Batch: ...


@dataclass(frozen=True)
class StageSpec:
    """One step of the graph: which stage, built how, on which pool. The Ray Data adapter and
    the plain in-process loop of the benchmark both consume the same list of these."""

    name: str
    stage_cls: type
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    pool: Any = None  # mmbatch.config.PoolConfig
    kind: str = "actor"  # actor | task

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
    """For each stage, the columns any later stage reads (declared `reads`): everything else
    is dropped after it. None after the last stage (its output goes to the driver as is)."""
    reads = [frozenset(spec.build().reads) for spec in specs]
    out: list[frozenset | None] = []
    for i in range(len(specs)):
        later = frozenset().union(*reads[i + 1:]) if i + 1 < len(specs) else None
        out.append(later)
    return out


class ColocatedStages:
    """Stages run in turn by one worker: one actor holds every model of the chain, so batches
    pass between them in memory (no extra processes, start-ups or object-store hops)."""

    name = "encoders"

    def __init__(self, members: list[StageSpec], resources: Resources):
        self.members = [spec.build() for spec in members]
        self.resources = resources
        # What the chain reads from outside; columns a member makes for a later one are simply there.
        self.reads = tuple(dict.fromkeys(c for m in self.members for c in m.reads))

    def setup(self) -> None:
        for member in self.members:
            member.setup()

    def __call__(self, batch: Batch) -> Batch:
        for member in self.members:
            batch = member(batch)
        return batch
