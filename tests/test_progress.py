"""The progress line reads the driver's ledger, which the staged records feed while the night runs."""

import re

from nights import Night, clip_rows, refs

from mmbatch.output.progress import ProgressReporter


def test_progress_line_from_staged_records(tmp_path):
    night = Night(tmp_path, refs("a", "b", "c"))
    progress = ProgressReporter(night.ledger, 3, 60)
    assert progress.tick().startswith("progress: 0/3 videos, 0 clips, 0.00 clips/s, ETA unknown")
    returned = night.stage(clip_rows("a", 2), clip_rows("b", 3, n_rows=4))  # b is not complete yet
    line = progress.tick()
    assert re.fullmatch(r"progress: 1/3 videos, 2 clips, [0-9.]+ clips/s, ETA \dm\d\ds", line), line
    returned += night.stage(clip_rows("b", 1, first=3, n_rows=4), clip_rows("c", 1))
    assert progress.tick().startswith("progress: 3/3 videos, 7 clips")
    # The writes' returns reach the ledger at the end: each report counts once.
    for records in returned:
        night.ledger.add_records(records)
    assert (night.ledger.finished, night.ledger.clips_done, night.ledger.pending) == (3, 7, {})
    assert progress.tick().startswith("progress: 3/3 videos, 7 clips")
    assert sorted(night.commit()["outputs"]["clip_files"]) == sorted({r["file"][0] for r in returned})
