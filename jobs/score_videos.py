#!/usr/bin/env python
"""Score videos for sentiment per clip: `mmbatch score`, runnable from a checkout that is not pip-installed.

    python jobs/score_videos.py --help
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # under `ray job submit --working-dir .` the package may not be installed
    sys.path.insert(0, str(REPO))

from mmbatch.cli import console, exit_now  # noqa: E402
from mmbatch.cli.score import main  # noqa: E402

if __name__ == "__main__":
    console.command_process()
    exit_now(main())
