"""The output's tables in the format its configuration names (`output.format`), and a check that
an output is not read or written in a format other than the one it holds."""

from __future__ import annotations

import posixpath

from mmbatch import storage
from mmbatch.errors import OutputMistakeError
from mmbatch.schema import PARTITION_COLUMN
from mmbatch.tables.tables import ParquetTables, Tables


def open_tables(output_uri: str, storage_options: dict | None = None, output_config=None) -> Tables:
    """The output's tables in the configured format (`output_config`: an OutputConfig). Without one
    (tools that only read), the format the output holds, with default settings. An output written
    in another format than the configured one is refused: its folders would read wrong."""
    fs, root = storage.filesystem(output_uri, storage_options)
    if output_config is None:
        from mmbatch.config import OutputConfig

        output_config = OutputConfig(format=detect_format(fs, root.rstrip("/")) or "parquet")
    fmt = output_config.format
    _check_installed(fmt)
    if fmt == "delta":
        from mmbatch.tables.delta import DeltaTables

        tables: Tables = DeltaTables(fs, root, output_uri, storage_options)
    elif fmt == "iceberg":
        from mmbatch.tables.iceberg import IcebergTables

        tables = IcebergTables(fs, root, output_uri, storage_options, output_config.iceberg)
    else:
        tables = ParquetTables(fs, root, output_uri, storage_options)
    found = detect_format(fs, root.rstrip("/"))
    if found is not None and found != fmt:
        raise OutputMistakeError(f"the output {output_uri} holds {found} tables, but output.format is {fmt}: "
                          f"set output.format: {found}, or write to a new output")
    tables.check()
    return tables


def detect_format(fs, root: str) -> str | None:
    """The format the output's `clips` table was written in (None: nothing written yet)."""
    clips = posixpath.join(root, "clips")
    if fs.exists(posixpath.join(clips, "_delta_log")):
        return "delta"
    if fs.exists(posixpath.join(clips, "metadata")):
        return "iceberg"
    if fs.exists(clips) and any(posixpath.basename(p.rstrip("/")).startswith(PARTITION_COLUMN + "=")
                                for p in fs.ls(clips, detail=False)):
        return "parquet"
    return None


LIBRARIES = {"delta": ("deltalake", "delta"), "iceberg": ("pyiceberg", "iceberg")}


def _check_installed(fmt: str) -> None:
    """A table format's library, or an error that names the install."""
    import importlib.util

    from mmbatch.errors import ConfigError

    if fmt in LIBRARIES and importlib.util.find_spec(LIBRARIES[fmt][0]) is None:
        module, extra = LIBRARIES[fmt]
        raise ConfigError(f"output.format {fmt} needs the {module} package: pip install 'mmbatch[{extra}]'")
