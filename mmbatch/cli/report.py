"""Write the HTML report of a committed night (the job writes one next to each manifest too).

    mmbatch report --output s3://bucket/scores/ [--run-date 2026-11-27] [--out report.html]

The page is self-contained (plots inline as SVG): counts and failure reasons, the sentiment
distribution, timelines of the most negative and most positive videos, modality agreement, time
by stage and the change from the previous night. Exit codes: 0 written, 2 no such night.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from mmbatch.cli import configure_logging, errors_as_exit_codes, json_option, logging_option


@errors_as_exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="the output root of the nightly job (local path, s3://, …)")
    p.add_argument("--run-date", type=dt.date.fromisoformat, default=None, help="default: the latest committed night")
    p.add_argument("--out", default=None, help="where to write the page (default: _runs/<run_id>.html under --output)")
    p.add_argument("--config", default=None,
                   help="pipeline YAML, for its storage_options (credentials, endpoint) and output format/catalog")
    logging_option(p)
    json_option(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    from mmbatch.config import reader_settings
    from mmbatch.errors import ExitCode
    from mmbatch.readers.report import write_report

    options, output_config = reader_settings(args.config)
    try:
        where = write_report(args.output, args.run_date, options, args.out, output_config)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return ExitCode.USAGE
    print(json.dumps({"report": where}) if args.json else f"report: {where}")
    return ExitCode.OK

