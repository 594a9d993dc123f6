"""The progress line reads the driver's ledger, which the staged records feed while the night runs."""

import re

from nights import Night, clip_rows, refs

from mmbatch.night.progress import ProgressReporter


def test_progress_line_from_staged_records(tmp_path):
    night = Night(tmp_path, refs("a", "b", "c"))
    progress = ProgressReporter(night.ledger, 3, 60)
    assert progress.tick().startswith("progress: 0/3 videos, 0 clips, 0.00 clips/s, ETA unknown")
    returned = night.stage(clip_rows("a", 2), clip_rows("b", 3, n_rows=4))  # b is not complete yet
    line = progress.tick()
    assert re.fullmatch(r"progress: 1/3 videos, 2 clips, [0-9.]+ clips/s, ETA \dm\d\ds; 1 written", line), line
    returned += night.stage(clip_rows("b", 1, first=3, n_rows=4), clip_rows("c", 1))
    assert progress.tick().startswith("progress: 3/3 videos, 7 clips")
    # The writes' returns reach the ledger at the end: each report counts once.
    for records in returned:
        night.ledger.add_records(records)
    assert (night.ledger.finished, night.ledger.clips_done, night.ledger.pending) == (3, 7, {})
    assert progress.tick().startswith("progress: 3/3 videos, 7 clips")
    assert sorted(night.commit()["outputs"]["clip_files"]) == sorted({r["file"][0] for r in returned})


def test_the_tally_counts_a_video_once_all_its_rows_are_scored():
    """The scored rows' reports, before any write: two batches of one chunk complete it; a retried
    batch counts once."""
    from mmbatch.night.ledger import CompletionTally
    from mmbatch.output.records import CompletionRecord
    from mmbatch.output.writer import completion_records

    def records(batch, name):
        return CompletionRecord.from_columns(completion_records(batch, batch["clip_index"] >= 0, name, 0))

    first, second = clip_rows("a", 2, n_rows=4), clip_rows("a", 2, first=2, n_rows=4)
    tally = CompletionTally()
    tally.add(records(first, "batch-1"))
    tally.add(records(first, "batch-1"))  # retried
    assert tally.counts() == (0, 0)
    tally.add(records(second, "batch-2") + records(clip_rows("b", 1), "batch-2"))
    assert tally.counts() == (2, 5)


def test_progress_counts_scored_videos_before_their_write(tmp_path):
    """A night of small clips writes one bundle at its end: the line still moves (the defect: 0/2000
    videos, 0 clips, ETA unknown for a whole night)."""
    night = Night(tmp_path, refs("a", "b", "c"))
    heard = []  # what the night's monitor gets with each line (run.metrics.push_progress)
    progress = ProgressReporter(night.ledger, 3, 60, scored=lambda: (2, 5), listener=heard.append)
    assert progress.tick().startswith("progress: 2/3 videos, 5 clips, ")
    assert progress.tick().endswith("; 0 written")
    assert len(heard) == 2 and {k: heard[1][k] for k in ("videos_done", "videos_total", "clips", "videos_written")} == \
        {"videos_done": 2, "videos_total": 3, "clips": 5, "videos_written": 0}
    from mmbatch.monitor.prometheus import SERIES

    assert {f"progress_{k}" for k in heard[0]} <= set(SERIES)  # each figure is a series the Pushgateway gets


def test_an_actor_reports_to_the_tally_at_most_every_interval(monkeypatch):
    """The first batch's records go at once, the next ones together once the interval has passed;
    the tally counts them as it would batch by batch. A tally that cannot be reached fails nothing."""
    from mmbatch.night.ledger import CompletionTally
    from mmbatch.output.records import CompletionRecord
    from mmbatch.pipeline import tally

    class FakeTally:
        def __init__(self):
            self.counted, self.calls = CompletionTally(), 0
            self.add = self

        def remote(self, columns):
            self.calls += 1
            self.counted.add(CompletionRecord.from_columns(columns))

    now = [100.0]
    monkeypatch.setattr(tally.time, "monotonic", lambda: now[0])
    fake = FakeTally()
    report = tally.Reporter(fake, every_s=2.0)
    report(clip_rows("a", 2, n_rows=4))
    assert (fake.calls, fake.counted.counts()) == (1, (0, 0))
    now[0] += 1.0
    report(clip_rows("a", 2, first=2, n_rows=4))
    report(clip_rows("b", 1))
    assert fake.calls == 1  # held
    now[0] += 1.0
    report(clip_rows("c", 3))
    assert (fake.calls, fake.counted.counts()) == (2, (3, 8))
    each = tally.Reporter(fake, every_s=0.0)  # a task's: no later call to send held records with
    each(clip_rows("e", 1))
    each(clip_rows("f", 1))
    assert (fake.calls, fake.counted.counts()) == (4, (5, 10))

    class Unreachable:
        class add:  # noqa: N801
            @staticmethod
            def remote(columns):
                raise ConnectionError("tally actor died")

    tally.Reporter(Unreachable())(clip_rows("d", 1))
