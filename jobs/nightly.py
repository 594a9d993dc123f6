#!/usr/bin/env python
"""Submit the nightly job to a Ray cluster, retry what is worth it: `mmbatch nightly`, from a checkout.

    python jobs/nightly.py --help
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # under `ray job submit --working-dir .` the package may not be installed
    sys.path.insert(0, str(REPO))

from mmbatch.cli import exit_now  # noqa: E402
from mmbatch.cli.nightly import main  # noqa: E402

if __name__ == "__main__":
    exit_now(main())
