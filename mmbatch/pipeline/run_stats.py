"""What a finished run's Ray Data stats say: per-operator busy time and rows, and each actor
pool's busy share (the pool nearest 1.0 is the one the others wait for). Pure but `stage_stats`."""

from __future__ import annotations

import logging
import re
from typing import Any

from mmbatch.stage import StageSpec

log = logging.getLogger(__name__)
_MAP_BATCHES = re.compile(r"MapBatches\((\w+)\)")  # how Ray Data names an operator of ours


def stage_stats(ds) -> list[dict[str, Any]] | None:
    """Per-operator busy time and rows from Ray Data's own stats, as JSON (never fatal).
    `write_datasink` keeps the executed dataset as `_write_ds`. An operator that ran no task (the
    union of rows around the split stage with its output) is left out."""

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
                for op in walk(getattr(ds, "_write_ds", ds)._get_stats_summary()) if op.wall_time is not None]
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
