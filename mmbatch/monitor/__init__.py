"""What a night tells the systems that watch it: its figures to a Prometheus Pushgateway
(`run.metrics`, monitor/prometheus.py) and OpenLineage run events with its datasets
(`run.lineage`, monitor/lineage.py).

`Monitor` is the one face the run sees: `started` once the night is planned, `progress` with each
progress line, then `finished` (committed: 0 or 3) or `failed` (not committed: the error's exit
code). A watcher that cannot be reached costs one warning line, never the night: monitoring
reports a night, it does not decide it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class Monitor:
    """The configured watchers of one night (none configured: every call does nothing)."""

    def __init__(self, run_config=None, input_uri: str = "", output_uri: str = "", run_date=None, output_config=None):
        self.watchers: list[Any] = []
        self.ended = False
        if run_config is None:
            return
        if run_config.metrics.pushgateway:
            from mmbatch.monitor.prometheus import NightMetrics

            self.watchers.append(NightMetrics(run_config.metrics, output_uri))
        if run_config.lineage.url:
            from mmbatch.monitor.lineage import NightLineage

            self.watchers.append(NightLineage(run_config.lineage, input_uri, output_uri, run_date, output_config))

    def started(self, run_id: str, videos: int) -> None:
        self._each("started", run_id, videos)

    def progress(self, figures: dict[str, float]) -> None:
        self._each("progress", figures)

    def finished(self, record: dict[str, Any], exit_code: int) -> None:
        if not self.ended:
            self.ended = True
            self._each("finished", record, exit_code)

    def failed(self, err: BaseException) -> None:
        """The night ended uncommitted (also before it started: a plan that failed)."""
        from mmbatch.errors import exit_code_of, short_reason

        if not self.ended:
            self.ended = True
            self._each("failed", int(exit_code_of(err)), short_reason(err, 500))

    def _each(self, event: str, *args) -> None:
        for watcher in self.watchers:
            try:
                getattr(watcher, event)(*args)
            except Exception as err:
                from mmbatch.errors import short_reason

                log.warning("%s could not be told the night %s: %s", watcher.what, event, short_reason(err))
