"""Build or extend the "clips like this one" index of an output (a Lance dataset with IVF_PQ).

    mmbatch index --output s3://bucket/scores/ [--run-date 2026-11-27] [--config pipeline.yaml]

New nights are appended and a date whose committed content changed (a rerun, a rollback) is
replaced; run it after each night. Prints what changed (`--json`: as JSON). Then `mmbatch similar`.
Exit codes: 0 done, 1 the store failed, 2 bad arguments, config or no such night.
"""

from __future__ import annotations

import argparse
import datetime as dt

from mmbatch.cli import configure_logging, errors_as_exit_codes, json_option, logging_option, print_result


@errors_as_exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="the output root of the nightly job (local path, s3://, …)")
    p.add_argument("--run-date", type=dt.date.fromisoformat, default=None,
                   help="index only this night (default: every committed night not indexed as it is now)")
    p.add_argument("--config", default=None, help="pipeline YAML: storage_options and the output's format/catalog")
    logging_option(p)
    json_option(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    from mmbatch.config import reader_settings
    from mmbatch.errors import ExitCode
    from mmbatch.readers.similar import build_index

    options, output_config = reader_settings(args.config)
    print_result(build_index(args.output, options, output_config, args.run_date), args.json)
    return ExitCode.OK
