#!/usr/bin/env python
"""Write the HTML report of a committed night: `mmbatch report`, runnable from a checkout that is not pip-installed.

    python jobs/report.py --help
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # under `ray job submit --working-dir .` the package may not be installed
    sys.path.insert(0, str(REPO))

from mmbatch.cli import exit_now  # noqa: E402
from mmbatch.cli.report import main  # noqa: E402

if __name__ == "__main__":
    exit_now(main())
