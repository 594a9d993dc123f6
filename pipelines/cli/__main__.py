"""`python -m pipelines.cli` is the `mmbatch` command."""

from pipelines.cli import run

run()
