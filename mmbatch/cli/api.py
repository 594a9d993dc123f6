"""The Python face of `mmbatch score`, for notebooks and scripts: `mmbatch.score(...)` plans the
night, starts a local Ray or attaches to one (RAY_ADDRESS, or a Ray this process already started)
as the command does, runs and commits it, and returns its result. Mistakes are raised as mmbatch's
typed errors (`mmbatch.errors.MmbatchError`: each carries the `exit_code` the command would give),
not printed. Reading a committed output back: `mmbatch.read_clips` (mmbatch/readers/clips.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def score(input: str, output: str, config: Any = None, *, run_date: dt.date | str | None = None,
          force: bool = False, num_cpus: int | None = None, log_level: str = "WARNING"):
    """Score the videos of `input` into `output` for `run_date` (default: today, UTC); returns the
    night's `RunResult` (`.exit_code`: 0, or 3 when committed but degraded, `.degraded` says why;
    `.manifest` is its run record). `config`: a YAML path, a dict in the YAML's shape, a
    `PipelineConfig`, or None for the shipped `pipelines/video_sentiment.yaml`. The config's
    watchers (run.metrics, run.lineage) are told of the night, as by the command."""
    from mmbatch.cli.score import init_ray, score_night

    config = as_config(config)
    day = dt.date.fromisoformat(run_date) if isinstance(run_date, str) else run_date
    day = day or dt.datetime.now(dt.timezone.utc).date()
    return score_night(config, str(input), str(output), day, force=force,
                       start_ray=lambda: init_ray(num_cpus, log_level, config))


def as_config(config: Any):
    """A PipelineConfig from what a caller may hand over (validated as the YAML would be)."""
    from mmbatch.cli import shipped_pipelines
    from mmbatch.config import PipelineConfig, load_config, parse_config

    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config, "the config given to mmbatch.score")
    return load_config(str(config) if config is not None else str(shipped_pipelines() / "video_sentiment.yaml"))
