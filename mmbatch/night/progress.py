"""One progress line at a fixed interval: videos done of total, clips, clips/s and an ETA.

The write stage stages a small records file beside each clip file it writes; a background
thread on the driver feeds the new ones to the run's ledger every `interval_s` (RunLedger.poll)
and reports what the ledger has completed ("written"). Videos are counted as they are scored,
before their ~128 MB write bundle lands, from the tally the last stage before the write feeds.
Its cost is one listing, a few small reads and one small actor call a tick.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


def _eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressReporter:
    """`scored()`: (videos, clips) scored so far but maybe not written yet (mmbatch/pipeline/tally.py), or
    None; the line counts the larger of that and what the ledger has written. `listener` gets each
    line's figures (mmbatch.monitor.Monitor.progress)."""

    def __init__(self, ledger, total_videos: int, interval_s: float = 30.0,
                 scored: Callable[[], tuple[int, int] | None] | None = None,
                 listener: Callable[[dict[str, float]], None] | None = None):
        self.ledger, self.total, self.interval_s = ledger, total_videos, interval_s  # ledger: output.ledger.RunLedger
        self.scored = scored or (lambda: None)
        self.listener = listener or (lambda figures: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self.lines: list[str] = []

    def tick(self) -> str:
        self.ledger.poll()
        written = self.ledger.finished
        done, clips = max((written, self.ledger.clips_done), self.scored() or (0, 0))
        elapsed = time.perf_counter() - self._t0
        rate = clips / elapsed if elapsed else 0.0
        eta = _eta(elapsed / done * (self.total - done)) if done else "unknown"
        line = f"progress: {done}/{self.total} videos, {clips} clips, {rate:.2f} clips/s, ETA {eta}; {written} written"
        self.lines.append(line)
        log.info("%s", line)
        self.listener({"videos_done": done, "videos_total": self.total, "clips": clips, "clips_per_second": rate,
                       "videos_written": written})
        return line

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.interval_s):
                try:
                    self.tick()
                except Exception as err:  # progress is a report, never a reason to fail the night
                    log.debug("progress tick failed: %s", err)

        self._thread = threading.Thread(target=loop, name="mmbatch-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
