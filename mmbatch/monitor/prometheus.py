"""The night's figures, pushed to a Prometheus Pushgateway with prometheus_client.

Grouped by `job` (run.metrics.job), `output` (the output URI) and run.metrics.grouping, so
pipelines that share a Pushgateway keep apart. Pushed with POST (pushadd): a failed night
replaces its exit code and failure time but keeps the last committed night's figures and its
`mmbatch_night_last_success_timestamp_seconds`, the series a staleness alert reads.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

PREFIX = "mmbatch_night_"
# name → help; every series the Pushgateway gets from a night.
SERIES = {
    "running": "1 while a night runs, 0 once it ended",
    "videos": "Videos of the last committed night by outcome",
    "clips": "Clips written by the last committed night",
    "duration_seconds": "Wall seconds of the night, planning included",
    "clips_per_second": "Clips written a second of the night's wall time",
    "exit_code": "The command's exit code: 0 committed, 3 committed but degraded, 1/2/130/143 not committed",
    "modality_failed_fraction": "Share of attempted clips on which a modality failed",
    "pool_busy_share": "Share of its time each actor pool spent working",
    "busiest_pool_share": "The busiest actor pool's working share (what set the night's rate)",
    "last_success_timestamp_seconds": "Unix time the last night committed",
    "last_failure_timestamp_seconds": "Unix time the last night ended uncommitted",
    "end_timestamp_seconds": "Unix time the last night ended",
    "progress_videos_done": "Videos scored so far tonight",
    "progress_videos_total": "Videos to score tonight",
    "progress_clips": "Clips scored so far tonight",
    "progress_clips_per_second": "Clips scored a second so far tonight",
    "progress_videos_written": "Videos written so far tonight",
}
Sample = tuple[str, dict[str, str], float]  # (series, labels, value)


def committed_samples(record: dict[str, Any], exit_code: int, now: float) -> list[Sample]:
    """The series of a committed night, from its run record."""
    counts, timings = record.get("counts") or {}, record.get("timings") or {}
    wall = float(timings.get("wall_seconds") or 0.0)
    shares = timings.get("pool_busy_share") or {}
    samples: list[Sample] = [("videos", {"outcome": k}, float(v)) for k, v in counts.items() if k != "clips"]
    samples += [("clips", {}, float(counts.get("clips", 0))), ("duration_seconds", {}, wall),
                ("clips_per_second", {}, counts.get("clips", 0) / wall if wall else 0.0),
                ("exit_code", {}, float(exit_code)), ("running", {}, 0.0),
                ("last_success_timestamp_seconds", {}, now), ("end_timestamp_seconds", {}, now)]
    samples += [("modality_failed_fraction", {"modality": m}, float(v.get("failed_fraction", 0.0)))
                for m, v in (record.get("modalities") or {}).items()]
    samples += [("pool_busy_share", {"pool": p}, float(v)) for p, v in shares.items()]
    if shares:
        samples.append(("busiest_pool_share", {}, float(max(shares.values()))))
    return samples


def failed_samples(exit_code: int, now: float) -> list[Sample]:
    return [("exit_code", {}, float(exit_code)), ("running", {}, 0.0),
            ("last_failure_timestamp_seconds", {}, now), ("end_timestamp_seconds", {}, now)]


def registry_of(samples: Iterable[Sample]):
    """A prometheus_client registry holding the samples as gauges."""
    from prometheus_client import CollectorRegistry, Gauge

    registry, gauges = CollectorRegistry(), {}
    for name, labels, value in samples:
        if name not in gauges:
            gauges[name] = Gauge(PREFIX + name, SERIES[name], list(labels), registry=registry)
        (gauges[name].labels(**labels) if labels else gauges[name]).set(value)
    return registry


class NightMetrics:
    """A night's watcher that pushes its figures (run.metrics)."""

    what = "the Pushgateway"

    def __init__(self, metrics_config, output_uri: str):
        from mmbatch.trust import redact_uri

        self.config = metrics_config
        self.grouping = {"output": redact_uri(output_uri), **metrics_config.grouping}

    def push(self, samples: list[Sample]) -> None:
        from prometheus_client import pushadd_to_gateway

        pushadd_to_gateway(self.config.pushgateway, job=self.config.job, registry=registry_of(samples),
                           grouping_key=self.grouping, timeout=self.config.timeout_s)

    def started(self, run_id: str, videos: int) -> None:
        self.push([("running", {}, 1.0), ("progress_videos_total", {}, float(videos)),
                   ("progress_videos_done", {}, 0.0), ("progress_clips", {}, 0.0)])

    def progress(self, figures: dict[str, float]) -> None:
        if self.config.push_progress:
            self.push([(f"progress_{k}", {}, float(v)) for k, v in figures.items()])

    def finished(self, record: dict[str, Any], exit_code: int) -> None:
        self.push(committed_samples(record, exit_code, time.time()))

    def failed(self, exit_code: int, reason: str) -> None:
        self.push(failed_samples(exit_code, time.time()))
