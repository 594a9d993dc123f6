"""Typed errors. System-level ones are raised; per-row ones become data (status="error")."""


class MmbatchError(Exception):
    """Base class: something wrong with the whole run, reported before or instead of work."""


class ConfigError(MmbatchError):
    """The configuration is invalid; the message names the key."""


class InputError(MmbatchError):
    """The input cannot be listed or read: missing bucket, denied, nothing matched, bad scheme."""


class ModelLoadError(MmbatchError):
    """A model cannot be loaded or does not fit its task (e.g. labels that cannot be mapped)."""


class OutputError(MmbatchError):
    """The output cannot be written (not a folder, denied, full); the message names it."""


class DecodeError(Exception):
    """One video cannot be decoded; the message is the short human reason written to `error`."""
