"""Progress before the write: the last stage before the write reports its batches' completion
records (a few numbers a video, computed column-wise; an actor's at most every 2 s) to one small actor, so the driver's progress
line counts scored videos while the write stage still gathers its ~128 MB bundles. A report that
fails to arrive only makes the line lag; the night never depends on it."""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np

log = logging.getLogger(__name__)
REPORT_EVERY_S = 2.0  # an actor's reports to the tally, at most this often (Reporter)


def start_tally():
    """The tally actor of one attempt (no CPU of its own, on the driver's node)."""
    import ray

    from mmbatch.night.ledger import CompletionTally

    @ray.remote(num_cpus=0, max_restarts=0)
    class Tally:
        def __init__(self):
            self.tally = CompletionTally()

        def add(self, columns: dict) -> None:
            from mmbatch.output.records import CompletionRecord

            self.tally.add(CompletionRecord.from_columns(columns))

        def counts(self) -> tuple[int, int]:
            return self.tally.counts()

    return Tally.options(scheduling_strategy=_this_node()).remote()


def _this_node():
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)


def records_of(batch: dict) -> dict:
    """One output batch's completion records, named by its rows: a retried batch counts once, two
    batches of a chunk twice."""
    from mmbatch.output.writer import completion_records

    clip_rows = np.asarray(batch["clip_index"]) >= 0
    name = hashlib.sha1("\n".join(map(str, batch["clip_id"])).encode()).hexdigest()[:16]
    return completion_records(batch, clip_rows, name, 0)


class Reporter:
    """A stage's reports (fire and forget), sent at most every `every_s`: a call a batch cost the
    tally actor more CPU than the records are worth (Ray's call overhead). The first goes at once;
    an actor's last of a night may stay unsent, which only leaves the line to the written count at
    its end. A task, which has no later call to send them with, reports every batch (every_s 0)."""

    def __init__(self, tally, every_s: float = REPORT_EVERY_S):
        self.tally, self.every_s = tally, every_s
        self._held: list[dict] = []
        self._sent = float("-inf")

    def __call__(self, batch: dict) -> None:
        try:
            self._held.append(records_of(batch))
            if time.monotonic() - self._sent >= self.every_s:
                held, self._held = self._held, []
                self.tally.add.remote({k: np.concatenate([r[k] for r in held]) for k in held[0]})
                self._sent = time.monotonic()
        except Exception as err:  # progress is a report, never a reason to fail a batch
            self._held = []
            log.debug("progress report not sent: %s", err)


def counts(tally, timeout_s: float = 5.0) -> tuple[int, int] | None:
    """(videos, clips) scored so far, or None when the tally does not answer in time."""
    import ray

    try:
        return tuple(ray.get(tally.counts.remote(), timeout=timeout_s))
    except Exception as err:
        log.debug("progress tally not read: %s", err)
        return None


def stop_tally(tally) -> None:
    import ray

    ray.kill(tally)
