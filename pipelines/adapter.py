"""The one place where a stage meets Ray Data: stage + declared resources → map_batches.

Actor pools (encoders, fusion): one stage object per actor, `setup()` once per actor.
Task pools (decode): a stage object cached per worker process, so tasks on a warm worker do
not redo `setup()`.
"""

from __future__ import annotations

import inspect
from typing import Any

from mmbatch.config import PoolConfig

_TASK_STAGES: dict[str, Any] = {}


class StageActor:
    """Ray Data callable class wrapping any stage."""

    def __init__(self, stage_cls, args: tuple, kwargs: dict):
        self.stage = stage_cls(*args, **kwargs)
        self.stage.setup()
        self._fan_out = inspect.isgeneratorfunction(type(self.stage).__call__)

    def __call__(self, batch):
        if self._fan_out:
            yield from self.stage(batch)
        else:
            yield self.stage(batch)


def _run_task_stage(batch, stage_cls, args: tuple, kwargs: dict, key: str):
    stage = _TASK_STAGES.get(key)
    if stage is None:
        stage = stage_cls(*args, **kwargs)
        stage.setup()
        _TASK_STAGES[key] = stage
    out = stage(batch)
    if inspect.isgenerator(out):
        yield from out
    else:
        yield out


def apply_actor_stage(ds, stage_cls, pool: PoolConfig, *args, **kwargs):
    from ray.data import ActorPoolStrategy

    res = stage_cls(*args, **kwargs).resources  # cheap: __init__ only stores settings
    return ds.map_batches(
        StageActor,
        fn_constructor_args=(stage_cls, args, kwargs),
        batch_size=pool.batch_size,
        batch_format="numpy",
        zero_copy_batch=False,
        compute=ActorPoolStrategy(min_size=pool.concurrency[0], max_size=pool.concurrency[1]),
        num_cpus=res.cpus,
        num_gpus=res.gpus or None,
        **({"memory": res.memory_bytes} if res.memory_bytes else {}),
    )


def apply_task_stage(ds, stage_cls, pool: PoolConfig, key: str, *args, **kwargs):
    from ray.data import TaskPoolStrategy

    res = stage_cls(*args, **kwargs).resources
    return ds.map_batches(
        _run_task_stage,
        fn_kwargs={"stage_cls": stage_cls, "args": args, "kwargs": kwargs, "key": key},
        batch_size=pool.batch_size,
        batch_format="numpy",
        zero_copy_batch=False,
        compute=TaskPoolStrategy(size=pool.concurrency[1]),
        num_cpus=res.cpus,
        **({"memory": res.memory_bytes} if res.memory_bytes else {}),
    )


def pool_demand(config) -> dict[str, float]:
    """CPUs and GPUs the graph holds at its minimum: every actor pool at min size + one decode task."""
    pools = {"decode": config.decode.pool, "fusion": config.fusion.pool}
    for name in ("vision", "speech", "audio", "text"):
        enc = getattr(config.models, name)
        if enc is not None:
            pools[name] = enc.pool
    cpus = config.decode.pool.num_cpus
    gpus = 0.0
    for name, pool in pools.items():
        if name != "decode":
            cpus += pool.concurrency[0] * pool.num_cpus
            gpus += pool.concurrency[0] * pool.num_gpus
    return {"CPU": cpus, "GPU": gpus}


def check_cluster_fits(config, available: dict[str, float], *, strict: bool) -> list[str]:
    """Problems if the pools' minimum cannot be placed: Ray Data would then wait forever.

    On a fixed cluster (strict) that is an error; on an attached, possibly autoscaling
    cluster it is only reported, since nodes may still join.
    """
    from mmbatch.errors import ConfigError

    demand = pool_demand(config)
    problems = [
        f"the pools need at least {demand[k]:g} {k} at their minimum sizes but the cluster has {available.get(k, 0):g} "
        f"(lower pool.num_{k.lower()}s or pool.concurrency minimums)"
        for k in ("CPU", "GPU") if demand[k] > available.get(k, 0) + 1e-9
    ]
    if problems and strict:
        raise ConfigError("; ".join(problems))
    return problems
