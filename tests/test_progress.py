"""The progress line counts videos completed by the staged records, nothing else."""

import re

from nights import Night, clip_rows, refs

from mmbatch.ledger import RunLedger
from mmbatch.progress import ProgressReporter


def test_progress_line_from_staged_records(tmp_path):
    night = Night(tmp_path, refs("a", "b", "c"))
    progress = ProgressReporter(night.fs, night.layout.parts,
                                lambda: RunLedger(night.fs, night.layout.staging, {}, night.ledger.attempt), 3, 60)
    assert progress.tick().startswith("progress: 0/3 videos, 0 clips, 0.00 clips/s, ETA unknown")
    night.write(clip_rows("a", 2), clip_rows("b", 3, n_rows=4))  # b is not complete yet
    line = progress.tick()
    assert re.fullmatch(r"progress: 1/3 videos, 2 clips, [0-9.]+ clips/s, ETA \dm\d\ds", line), line
    night.write(clip_rows("b", 1, first=3, n_rows=4), clip_rows("c", 1))
    assert progress.tick().startswith("progress: 3/3 videos, 7 clips")
