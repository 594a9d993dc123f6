"""One progress line at a fixed interval: videos done of total, clips, clips/s and an ETA.

The write stage stages a small records file beside each clip file it writes; a background
thread on the driver reads the new ones every `interval_s` and counts the videos they
complete. It reads nothing else, so its cost is one listing and a few small reads per tick.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("mmbatch.progress")


def _eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressReporter:
    def __init__(self, fs, parts_dir: str, ledger_factory, total_videos: int, interval_s: float = 30.0):
        self.fs, self.parts_dir, self.total, self.interval_s = fs, parts_dir, total_videos, interval_s
        self.ledger = ledger_factory()  # a fresh ledger of this attempt: counts what completes
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self.lines: list[str] = []

    def tick(self) -> str:
        from mmbatch.ledger import read_records, staged_records

        for path in staged_records(self.fs, self.parts_dir):
            if path in self._seen:
                continue
            records = read_records(self.fs, path)
            if records is None:  # unreadable just now: the next tick tries again
                continue
            self._seen.add(path)
            if str(records["attempt"][0]) == self.ledger.attempt:
                self.ledger.add_records(records)
        done, clips = len(self.ledger.done), self.ledger.clips_done
        elapsed = time.perf_counter() - self._t0
        rate = clips / elapsed if elapsed else 0.0
        eta = _eta(elapsed / done * (self.total - done)) if done else "unknown"
        line = f"progress: {done}/{self.total} videos, {clips} clips, {rate:.2f} clips/s, ETA {eta}"
        self.lines.append(line)
        log.info("%s", line)
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
