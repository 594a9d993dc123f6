"""The clips nearest to one clip by fused embedding, from the index `mmbatch index` keeps.

    mmbatch similar --output s3://bucket/scores/ --clip-id <clip_id> [-k 10] [--run-date D]

Prints one line per clip (`--json`: a JSON list), nearest first, with its cosine `distance`; only clips scored by the
same models are compared. In Python: `mmbatch.readers.similar.similar_clips(output, clip_id, k)`.
Exit codes: 0 found, 2 no such clip in the index (or bad arguments).
"""

from __future__ import annotations

import argparse
import datetime as dt

from mmbatch.cli import configure_logging, errors_as_exit_codes, json_option, logging_option, print_result


@errors_as_exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="the output root of the nightly job (local path, s3://, …)")
    p.add_argument("--clip-id", required=True, help="the clip to start from (the clips table's clip_id)")
    p.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
    p.add_argument("--run-date", type=dt.date.fromisoformat, default=None,
                   help="the night of the clip (default: its latest indexed night)")
    p.add_argument("--config", default=None, help="pipeline YAML: storage_options")
    logging_option(p)
    json_option(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.k < 1:
        p.error("-k must be at least 1")
    from mmbatch.config import reader_settings
    from mmbatch.errors import ExitCode
    from mmbatch.readers.similar import similar_clips

    options, _ = reader_settings(args.config)
    print_result(similar_clips(args.output, args.clip_id, args.k, options, args.run_date), args.json)
    return ExitCode.OK
