"""The output formats' registry: the output's tables in the format its configuration names
(`output.format`), and a check that an output is not read or written in a format other than the
one it holds. Each format's class says what it needs installed and which folder marks it."""

from __future__ import annotations

import posixpath

from mmbatch import storage
from mmbatch.errors import OutputMistakeError
from mmbatch.schema import PARTITION_COLUMN
from mmbatch.tables.tables import Tables


def open_tables(output_uri: str, storage_options: dict | None = None, output_config=None) -> Tables:
    """The output's tables in the configured format (`output_config`: an OutputConfig). Without one
    (tools that only read), the format the output holds, with default settings. An output written
    in another format than the configured one is refused: its folders would read wrong."""
    fs, root = storage.filesystem(output_uri, storage_options)
    if output_config is None:
        from mmbatch.config import OutputConfig

        output_config = OutputConfig(format=detect_format(fs, root.rstrip("/")) or "parquet")
    fmt = output_config.format
    cls = format_class(fmt)
    _check_installed(cls)
    tables = cls.open(fs, root, output_uri, storage_options, output_config)
    found = detect_format(fs, root.rstrip("/"))
    if found is not None and found != fmt:
        raise OutputMistakeError(f"the output {output_uri} holds {found} tables, but output.format is {fmt}: "
                          f"set output.format: {found}, or write to a new output")
    tables.check()
    return tables


# output.format → its Tables class ("module:Class"; imported when used).
FORMATS = {"parquet": "mmbatch.tables.tables:ParquetTables", "delta": "mmbatch.tables.delta:DeltaTables",
           "iceberg": "mmbatch.tables.iceberg:IcebergTables"}


def format_class(name: str) -> type[Tables]:
    from mmbatch.modalities import load_class

    return load_class(FORMATS[name])


def detect_format(fs, root: str) -> str | None:
    """The format the output's `clips` table was written in (None: nothing written yet)."""
    clips = posixpath.join(root, "clips")
    for name in FORMATS:
        marker = format_class(name).log_folder
        if marker and fs.exists(posixpath.join(clips, marker)):
            return name
    if fs.exists(clips) and any(posixpath.basename(p.rstrip("/")).startswith(PARTITION_COLUMN + "=")
                                for p in fs.ls(clips, detail=False)):
        return "parquet"
    return None


def _check_installed(cls: type[Tables]) -> None:
    """A table format's library, or an error that names the install."""
    import importlib.util

    from mmbatch.errors import ConfigError

    if cls.requires and importlib.util.find_spec(cls.requires[0]) is None:
        module, extra = cls.requires
        raise ConfigError(f"output.format {cls.format} needs the {module} package: pip install 'mmbatch[{extra}]'")
