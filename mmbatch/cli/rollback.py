"""Restore a date of a Delta or Iceberg output to what it was before its latest night.

    mmbatch rollback --output s3://bucket/scores/ --run-date 2026-11-27 [--config pipeline.yaml]

The rollback is a new commit a table (the history keeps both); run it again to go one more night
back. It takes the date's lease, so it never changes a night that is being written. Exit codes:
0 rolled back, 1 the date is held or the store failed, 2 nothing to roll back to (plain Parquet,
no earlier night, or its files removed by `mmbatch maintain`).
"""

from __future__ import annotations

import argparse
import datetime as dt

from mmbatch.cli import configure_logging, errors_as_exit_codes, json_option, logging_option, print_result


@errors_as_exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="the output root of the nightly job (local path, s3://, …)")
    p.add_argument("--run-date", required=True, type=dt.date.fromisoformat, help="the date to restore (YYYY-MM-DD)")
    p.add_argument("--config", default=None, help="pipeline YAML: storage_options and the output's format/catalog")
    logging_option(p)
    json_option(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    from mmbatch.config import reader_settings
    from mmbatch.errors import ExitCode
    from mmbatch.tables.upkeep import rollback

    options, output_config = reader_settings(args.config)
    print_result(rollback(args.output, args.run_date, options, output_config), args.json)
    return ExitCode.OK
