"""Upkeep of a Delta or Iceberg output: history older than the retention expires, unused files go.

    mmbatch maintain --output s3://bucket/scores/ [--vacuum-hours 168] [--config pipeline.yaml]

Superseded nights stay readable (time travel, `mmbatch rollback`) until the retention has passed.
Prints what was done (`--json`: as JSON). Exit codes: 0 done, 1 the store failed, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse

from mmbatch.cli import configure_logging, errors_as_exit_codes, json_option, logging_option, print_result

DEFAULT_RETENTION_HOURS = 168.0  # a week: Delta Lake's own default


@errors_as_exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="the output root of the nightly job (local path, s3://, …)")
    p.add_argument("--vacuum-hours", type=float, default=DEFAULT_RETENTION_HOURS,
                   help=f"keep superseded files and history this long (default {DEFAULT_RETENTION_HOURS:g})")
    p.add_argument("--config", default=None, help="pipeline YAML: storage_options and the output's format/catalog")
    logging_option(p)
    json_option(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.vacuum_hours < 0:
        p.error("--vacuum-hours must be >= 0")
    from mmbatch.config import reader_settings
    from mmbatch.errors import ExitCode
    from mmbatch.tables.upkeep import maintain

    options, output_config = reader_settings(args.config)
    print_result(maintain(args.output, args.vacuum_hours, options, output_config), args.json)
    return ExitCode.OK
