"""`python -m mmbatch.cli` is the `mmbatch` command."""

from mmbatch.cli import run

run()
