"""Typed errors and the exit codes they mean. System-level errors are raised; per-row ones
become data (status="error")."""

from enum import IntEnum


class ExitCode(IntEnum):
    """What a scheduler reads. The one home of these numbers (README, --help, docs/operations.md)."""

    OK = 0  # committed
    SYSTEM = 1  # not committed, worth retrying: infrastructure, output faults, a held lease, a failed commit
    USAGE = 2  # not committed, not worth retrying: bad arguments, configuration, input or models (argparse: 2)
    DEGRADED = 3  # committed, but too many videos failed or a configured modality failed too often
    INTERRUPTED = 130  # not committed: SIGINT (Ctrl-C); the lease released, a rerun of the date resumes
    TERMINATED = 143  # not committed: SIGTERM (a scheduler's timeout or stop); the same as INTERRUPTED


def first_line(err: BaseException | str, limit: int = 300) -> str:
    """The first line of a message, at most `limit` characters, credentials in URIs removed
    (the one home of error shortening)."""
    import re

    from mmbatch.trust import redact_text

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(err)).strip()  # terminal colours (Ray's tracebacks)
    if not text and isinstance(err, BaseException):
        return type(err).__name__
    return redact_text(text.splitlines()[0][:limit]) if text else ""


def short_reason(err: BaseException, limit: int = 200) -> str:
    """`Type: first line` of an exception, for error columns and error lines."""
    text = first_line(err, limit)
    return f"{type(err).__name__}: {text}" if text and text != type(err).__name__ else type(err).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: handled everywhere an interrupt is (the lease released,
    one `error:` line), with its own exit code."""


def exit_code_of(err: BaseException) -> ExitCode:
    """The exit code of an error that ended a night uncommitted: its own, 130/143 for a stop,
    else 1 (a bug or an infrastructure failure). The command's and the monitors' one rule."""
    if isinstance(err, MmbatchError):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return ExitCode.TERMINATED if isinstance(err, Terminated) else ExitCode.INTERRUPTED
    return ExitCode.SYSTEM


class MmbatchError(Exception):
    """Base class: something wrong with the whole run, reported before or instead of work."""

    exit_code = ExitCode.SYSTEM


class ConfigError(MmbatchError):
    """The configuration is invalid; the message names the key."""

    exit_code = ExitCode.USAGE


class InputError(MmbatchError):
    """The input cannot be listed or read: missing bucket, denied, nothing matched, bad scheme."""

    exit_code = ExitCode.USAGE


class ModelLoadError(MmbatchError):
    """A model cannot be loaded or does not fit its task (e.g. labels that cannot be mapped)."""

    exit_code = ExitCode.USAGE


class OutputError(MmbatchError):
    """The output cannot be written (not a folder, denied, full); the message names it."""


class OutputMistakeError(OutputError):
    """The output cannot be used as given (a file where a folder belongs, another format's tables,
    no permission): a rerun changes nothing until a person does; the message names the output."""

    exit_code = ExitCode.USAGE


class DamagedOutputError(OutputError):
    """A file of the output itself is unreadable (garbled, truncated, emptied, or listed but gone):
    a rerun cannot mend it, a person must (restore the file, or remove it and rescore its date)."""

    exit_code = ExitCode.USAGE


class StorageAccessError(MmbatchError):
    """Workers cannot authenticate to, or are denied by, the store (no credentials, access denied,
    no such bucket): a rerun changes nothing until the deployment does."""

    exit_code = ExitCode.USAGE


class ClusterError(MmbatchError):
    """The cluster could not run the night: pools not placed in time, no progress, a folder that
    not every node sees. Worth retrying once the cluster has room; the message names the knob."""


class PlanTimeoutError(MmbatchError):
    """The plan (discovery and start-up checks) did not finish in time: a store that stalls, or an
    input that takes longer to read than it should. Worth retrying; the message says what was read."""


class SharedStorageError(MmbatchError):
    """A local folder the night needs is not the same on every node of the cluster."""

    exit_code = ExitCode.USAGE


class DecodeError(Exception):
    """One video cannot be decoded; the message is the short human reason written to `error`."""


def causes(err: BaseException | None, depth: int = 10):
    """`err` and what it wraps: Ray's task errors (`cause`) and Python's chaining."""
    seen = 0
    while err is not None and seen < depth:
        yield err
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
        seen += 1
