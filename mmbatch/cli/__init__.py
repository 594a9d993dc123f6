"""The `mmbatch` command: `mmbatch score | nightly | report | train | maintain | rollback | index | similar | models`.

Each subcommand is one module here with a `main(argv) -> exit code`; `jobs/*.py` are thin wrappers
over the same functions, so `ray job submit -- python jobs/score_videos.py ...` works from a checkout
that is not pip-installed. Modules import nothing heavy at the top, so `--help` answers at once.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import os
import sys
from pathlib import Path

# The folder that holds the `mmbatch` package: a checkout, or site-packages.
CODE_ROOT = Path(__file__).resolve().parent.parent.parent


def shipped_pipelines() -> Path:
    """The folder of the shipped pipeline YAMLs: `pipelines/` of a checkout, or where a wheel
    install put them (pyproject's data-files: `<prefix>/share/mmbatch/pipelines`)."""
    checkout = CODE_ROOT / "pipelines"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "mmbatch" / "pipelines"

COMMANDS = {
    "score": ("mmbatch.cli.score", "score videos for sentiment per clip and commit a night (jobs/score_videos.py)"),
    "nightly": ("mmbatch.cli.nightly", "submit the scoring job to a Ray cluster, wait, retry what is worth it"),
    "report": ("mmbatch.cli.report", "write the HTML report of a committed night"),
    "train": ("mmbatch.cli.train", "train the fusion head on labelled clips from the output"),
    "maintain": ("mmbatch.cli.maintain", "Delta/Iceberg upkeep: expire old history, remove unused files"),
    "rollback": ("mmbatch.cli.rollback", "restore a date of a Delta/Iceberg output to its previous night"),
    "index": ("mmbatch.cli.index", "build or extend the vector index of clips (Lance, IVF_PQ)"),
    "similar": ("mmbatch.cli.similar", "the clips nearest to one clip by fused embedding"),
    "models": ("mmbatch.cli.models", "fetch a verified model bundle into the model cache ahead of a night"),
}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


def logging_option(p, default: str = "WARNING") -> None:
    """`--log-level` and `--log-format`, the same on every subcommand; `configure_logging` applies them."""
    p.add_argument("--log-level", default=default, choices=LOG_LEVELS,
                   help=f"what mmbatch and the libraries it drives log (default {default})")
    p.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                   help="text lines, or one JSON object a line for schedulers and log shippers (default text)")


def configure_logging(level: str, log_format: str = "text") -> None:
    """One level and one format for this process's loggers, mmbatch's and the libraries' alike."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    for name in ("ray", "transformers", "fsspec", "s3fs", "botocore", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(level)


class JsonLines(logging.Formatter):
    """A logging formatter: one JSON object a record (time, level, logger, message, traceback).
    Eight lines here rather than a dependency; Ray's workers get Ray's own JSON encoding."""

    def format(self, record) -> str:
        import datetime as dt
        import json

        out = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def json_option(p) -> None:
    """`--json`, the same on every command that prints results."""
    p.add_argument("--json", action="store_true", help="print the result as JSON (default: readable lines)")


def print_result(result, as_json: bool) -> None:
    """A command's result: one JSON document, or `key: value` lines (nested keys joined by dots;
    a list of records one line each)."""
    import json

    if as_json:
        print(json.dumps(result, default=str))
        return
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        flat = _flatten(row)
        print("  ".join(f"{k}={v}" for k, v in flat.items()) if isinstance(result, list) else
              "\n".join(f"{k}: {v}" for k, v in flat.items()))


def _flatten(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def deprecated_flag(old: str, new: str, why: str = "") -> None:
    """One line on stderr: an old spelling still works this release."""
    print(f"warning: {old} is deprecated: use {new}{f' ({why})' if why else ''}", file=sys.stderr)


def errors_as_exit_codes(main):
    """A command's `main` whose typed errors (mmbatch.errors.MmbatchError) print as one `error:`
    line and return their exit code, instead of a traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        from mmbatch.errors import MmbatchError

        try:
            return main(argv)
        except MmbatchError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code

    return wrapped


def stop_on_sigterm() -> None:
    """SIGTERM raises `Terminated` in the main thread, as SIGINT raises KeyboardInterrupt, so the
    night's lease is released and one `error:` line printed; a second SIGTERM during that clean-up
    is ignored (SIGKILL still ends the process). `ray.init` installs its own handler (a bare
    `sys.exit`), so this is called again once Ray is up."""
    import signal
    import threading

    from mmbatch.errors import Terminated

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)


def checkout_root() -> Path | None:
    """The repository checkout this code runs from, when it is one (it has jobs/score_videos.py)."""
    return CODE_ROOT if (CODE_ROOT / "jobs" / "score_videos.py").is_file() else None


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return ("usage: mmbatch <command> [options]   (mmbatch <command> --help for its options; mmbatch --version)\n\n"
            + "\n".join(lines))


def version() -> str:
    """The installed distribution's version (a checkout that is not installed says so)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("mmbatch")
    except PackageNotFoundError:
        return "(not installed: a source checkout)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"mmbatch {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        print(f"mmbatch: unknown command {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv[0] = f"mmbatch {name}"  # argparse names the command in usage and errors
    return int(importlib.import_module(COMMANDS[name][0]).main(rest))


def exit_now(code: int | None) -> None:
    """Exit with `code` after the exit handlers (Ray's shutdown, logging's flush) but without the
    interpreter's teardown of every module: with torch, transformers and Ray loaded that takes
    about a second and does nothing a finished command needs (mypy exits the same way)."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code or 0)


def run() -> None:
    """The `mmbatch` console script."""
    from mmbatch.cli import console

    console.command_process()
    exit_now(main())
