"""The stage contract (DESIGN §3): settings in __init__, models in setup(), batches in __call__.

Stages know nothing of Ray; `pipelines/adapter.py` maps a stage and its declared resources
onto Ray Data's map_batches. A stage is unit-tested by calling it with a plain dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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

    def setup(self) -> None: ...

    def __call__(self, batch: Batch) -> Batch: ...
