"""`python -m pipelines.cli` is the `mmbatch` command."""

import sys

from pipelines.cli import main

sys.exit(main())
