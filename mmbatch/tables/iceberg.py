"""`output.format: iceberg`: each table (`clips`, `videos`) is an Apache Iceberg table at
`<output>/<table>`, identity-partitioned by `run_date`, registered in a pyiceberg catalog
(`output.iceberg.catalog`; by default an embedded SQLite catalog at `<output>/_catalog/iceberg.db`).

The workers' Parquet files are the table's data files (they carry no `run_date` column and no field
ids: readers take `run_date` from the partition and columns by the table's name mapping, as the
Iceberg spec says). A night is one snapshot a table that adds the night's files and deletes the
date's superseded ones, with mmbatch's keys in the snapshot summary. Tables are created with
`commit.retry.num-retries = 0` and each commit names the snapshot it read: a run that lost a race
fails, it never merges into the other.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
from typing import Any

import pyarrow as pa

from mmbatch import storage
from mmbatch.errors import ConfigError
from mmbatch.schema import PARTITION_COLUMN
from mmbatch.tables import damage
from mmbatch.tables.tables import TABLE_LOG, TABLE_LOG_ADVICE, TABLE_SCHEMAS, TABLES, TableConflictError, Tables, damaged

log = logging.getLogger(__name__)

EPOCH = dt.date(1970, 1, 1)


FILE_IO_NAMES = {"key": "s3.access-key-id", "secret": "s3.secret-access-key", "token": "s3.session-token",
                 "endpoint": "s3.endpoint", "region": "s3.region"}


def file_io_properties(storage_options: dict | None) -> dict[str, str]:
    """s3fs-style storage options as pyiceberg FileIO properties."""
    return {FILE_IO_NAMES[k]: v for k, v in storage.s3_settings(storage_options).items()}


class IcebergTables(Tables):
    format = "iceberg"
    commit_point = TABLE_LOG
    requires, log_folder = ("pyiceberg", "iceberg"), "metadata"

    @classmethod
    def open(cls, fs, root: str, uri: str, storage_options: dict | None, output_config) -> IcebergTables:
        return cls(fs, root, uri, storage_options, output_config.iceberg)

    def __init__(self, fs, root: str, uri: str, storage_options: dict | None, config):
        super().__init__(fs, root, uri, storage_options)
        self.config = config
        self.properties = {**file_io_properties(storage_options), **config.catalog}
        self.embedded = "type" not in config.catalog and "uri" not in config.catalog  # the output's own SQLite
        if self.embedded:
            if not storage.is_local(uri):
                raise ConfigError("output.format iceberg on an object store needs a catalog: set "
                                  "output.iceberg.catalog (e.g. {type: glue} or {type: rest, uri: ...}); "
                                  "the embedded SQLite catalog works for local outputs only")
            os.makedirs(os.path.join(root, "_catalog"), exist_ok=True)
            self.properties.update(type="sql", uri=f"sqlite:///{os.path.abspath(os.path.join(root, '_catalog'))}/iceberg.db")
        self.properties.setdefault("warehouse", self.uri_of(""))
        self._catalog = None

    @property
    def catalog(self):
        if self._catalog is None:
            from pyiceberg.catalog import load_catalog

            self._catalog = load_catalog(self.config.catalog_name, **self.properties)
        return self._catalog

    def check(self) -> None:
        from mmbatch.trust import redact_text

        where = f"{self.config.catalog_name!r} ({redact_text(str(self.properties.get('uri', self.properties.get('type'))))})"
        for table in TABLES:
            self.checked(table, lambda t=table: read_metadata(self, t), f"cannot reach the Iceberg catalog {where}")

    def damaged_metadata(self, table: str) -> list[str]:
        db = self.properties["uri"].removeprefix("sqlite:///") if self.embedded else None
        return damage.iceberg_damaged(self.fs, posixpath.join(self.folder(table), "metadata"), db)

    def ident(self, table: str) -> tuple[str, str]:
        return (self.config.namespace, self.config.table_prefix + table)

    def location(self, table: str) -> str:
        loc = self.uri_of(table)
        return "file://" + loc if loc.startswith("/") else loc

    def exists(self, table: str) -> bool:
        return self.catalog.table_exists(self.ident(table))

    def load(self, table: str, fresh: bool = False):
        if table in self.pinned and not fresh:
            return self.pinned[table]
        return self.catalog.load_table(self.ident(table)) if self.exists(table) else None

    def pin(self) -> dict[str, Any]:
        self.pinned = {}
        self.pinned = {t: self.load(t) for t in TABLES}
        return {t: _snapshot_id(tbl) for t, tbl in self.pinned.items()}

    def current(self, table: str) -> int | None:
        return _snapshot_id(self.load(table, fresh=True))

    def _files(self, table: str, snapshot_id: int | None = None, day: dt.date | None = None) -> list:
        from pyiceberg.expressions import AlwaysTrue, EqualTo

        tbl = self.load(table, fresh=snapshot_id is not None)
        if tbl is None or _snapshot_id(tbl) is None:
            return []
        where = EqualTo(PARTITION_COLUMN, day.isoformat()) if day else AlwaysTrue()
        return [task.file for task in tbl.scan(row_filter=where, snapshot_id=snapshot_id).plan_files()]

    def dates(self, table: str) -> list[dt.date]:
        return sorted({EPOCH + dt.timedelta(days=f.partition[0]) for f in self._files(table)})

    def _read_date(self, table: str, day: dt.date, columns: list[str]) -> pa.Table | None:
        from pyiceberg.expressions import EqualTo

        tbl = self.load(table)
        if tbl is None or day not in self.dates(table):
            return None
        # the partition column stays selected: pyiceberg 0.12 filters every row out when a filter's
        # column comes from the partition (not the file) and is not among the selected fields
        t = tbl.scan(row_filter=EqualTo(PARTITION_COLUMN, day.isoformat()),
                     selected_fields=(*columns, PARTITION_COLUMN)).to_arrow()
        return t.drop_columns([PARTITION_COLUMN]) if PARTITION_COLUMN in t.column_names else t

    def _read_all(self, table: str, columns: list[str]) -> pa.Table | None:
        tbl = self.load(table)
        if tbl is None or _snapshot_id(tbl) is None:
            return None
        return tbl.scan(selected_fields=tuple(columns)).to_arrow()

    def files_of_date(self, table: str, day: dt.date, version: int | None = None) -> list[tuple[str, int, int]]:
        prefix = self.location(table).rstrip("/") + "/"
        return sorted((f.file_path.removeprefix(prefix), f.file_size_in_bytes, f.record_count)
                      for f in self._files(table, version, day))

    def versions_of_date(self, table: str, day: dt.date) -> list[dict[str, Any]]:
        tbl = self.load(table, fresh=True)
        out = []
        for snap in tbl.snapshots() if tbl is not None else []:
            props = snap.summary.additional_properties if snap.summary else {}
            if props.get("mmbatch.run_date") == day.isoformat():
                ours = {k.split(".", 1)[1]: v for k, v in props.items() if k.startswith("mmbatch.")}
                out.append({"version": snap.snapshot_id, "before": snap.parent_snapshot_id, **ours})
        return out

    def maintain(self, table: str, retention_hours: float) -> dict[str, Any]:
        """Snapshots older than the retention expire (the current one never does); data files under
        the table's folder that no remaining snapshot uses, and older than the retention, are deleted."""
        tbl = self.load(table, fresh=True)
        if tbl is None:
            return {}
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=retention_hours)
        before = len(tbl.snapshots())
        tbl.maintenance.expire_snapshots().older_than(cutoff).commit()
        tbl = self.load(table, fresh=True)
        used = set(tbl.inspect.all_data_files().column("file_path").to_pylist()) if tbl.snapshots() else set()
        prefix = self.location(table).rstrip("/") + "/"
        removed = 0
        for path, info in self.fs.find(self.folder(table), detail=True).items():
            rel = path[len(self.folder(table)) + 1:]
            if not rel.startswith(PARTITION_COLUMN + "=") or prefix + rel in used:
                continue
            if _modified(info) < cutoff.timestamp():
                self.fs.rm(path)
                removed += 1
        return {"expired_snapshots": before - len(tbl.snapshots()), "removed_files": removed}

    def version_of_commit(self, table: str, commit_id: str, after: Any = None) -> int | None:
        tbl = self.load(table, fresh=True)
        for snap in tbl.snapshots() if tbl is not None else []:
            if snap.summary and snap.summary.additional_properties.get("mmbatch.commit_id") == commit_id:
                return snap.snapshot_id
        return None

    def write_version(self, table: str, day: dt.date, files: list[tuple[str, int, int]], base: int | None,
               properties: dict[str, str]) -> int:
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        tbl = self.load(table, fresh=True) or self._create(table)
        if _snapshot_id(tbl) != base:
            raise self._conflict(table, base, f"its current snapshot is {_snapshot_id(tbl)}")
        tbl = self._with_new_columns(tbl, table)
        old = self._files(table, base, day) if base is not None else []
        new = data_files(tbl, self.location(table), files, day)
        try:
            with tbl.transaction() as tx:
                with tx.update_snapshot(snapshot_properties=properties).overwrite() as change:
                    for f in old:
                        change.delete_data_file(f)
                    for f in new:
                        change.append_data_file(f)
        except (CommitFailedException, ValidationException) as err:
            raise self._conflict(table, base, str(err)) from None
        return self.version_of_commit(table, properties["mmbatch.commit_id"])

    def _with_new_columns(self, tbl, table: str):
        """The table with the columns added to its schema since it was made (a modality's), null in
        the rows before; a schema change makes no snapshot, so the night's base still holds."""
        have = {f.name for f in tbl.schema().fields}
        if all(f.name in have for f in TABLE_SCHEMAS[table]):
            return tbl
        with tbl.update_schema() as update:
            update.union_by_name(TABLE_SCHEMAS[table])
        return self.load(table, fresh=True)

    def _conflict(self, table: str, base: Any, why: str) -> TableConflictError:
        return TableConflictError.of(f"the Iceberg table {'.'.join(self.ident(table))}", base, why)

    def _create(self, table: str):
        from pyiceberg.exceptions import TableAlreadyExistsError

        self.catalog.create_namespace_if_not_exists(self.config.namespace)
        try:
            tbl = self.catalog.create_table(self.ident(table), schema=TABLE_SCHEMAS[table], location=self.location(table),
                                            properties={"commit.retry.num-retries": "0"})
        except TableAlreadyExistsError:
            return self.load(table, fresh=True)
        with tbl.transaction() as tx:  # files without field ids are read by name; run_date from the partition
            tx.set_properties(**{"schema.name-mapping.default": tbl.schema().name_mapping.model_dump_json()})
            with tx.update_spec() as update:
                update.add_identity(PARTITION_COLUMN)
        return self.load(table, fresh=True)


def data_files(tbl, location: str, files: list[tuple[str, int, int]], day: dt.date) -> list:
    """The Iceberg entries of the night's files: stats from their footers, partition the date."""
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import (
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record

    schema = tbl.metadata.schema()
    plan, mapping = compute_statistics_plan(schema, tbl.metadata.properties), parquet_path_to_id_mapping(schema)
    out = []
    for rel, size, _rows in files:
        path = location.rstrip("/") + "/" + rel
        with tbl.io.new_input(path).open() as f:
            meta = pq.read_metadata(f)
        stats = data_file_statistics_from_parquet_metadata(parquet_metadata=meta, stats_columns=plan,
                                                           parquet_column_mapping=mapping)
        out.append(DataFile.from_args(
            content=DataFileContent.DATA, file_path=path, file_format=FileFormat.PARQUET,
            partition=Record((day - EPOCH).days), file_size_in_bytes=size, sort_order_id=None,
            spec_id=tbl.metadata.default_spec_id, equality_ids=None, key_metadata=None,
            **stats.to_serialized_dict()))
    return out


def read_metadata(tables: IcebergTables, table: str) -> None:
    """The table's metadata, manifest list and manifests, as the commit will read them. A table
    the catalog does not know although its folder holds metadata lost its catalog entry: the
    output's own catalog re-registers the newest metadata (said in the log); another catalog is
    for a person to mend."""
    if tables.exists(table):
        bad = tables.damaged_metadata(table)  # first: pyiceberg's native Avro decoder may crash on a garbled file
        if bad:
            raise damaged(bad, None, TABLE_LOG_ADVICE)
        tables._files(table)
        return
    newest = damage.iceberg_metadata_files(tables.fs, posixpath.join(tables.folder(table), "metadata"))[-1:]
    if not newest:
        if tables.holds_data(table):
            raise damaged([posixpath.join(tables.folder(table), "metadata")], FileNotFoundError(
                "the table's folder holds data partitions but no Iceberg metadata"), TABLE_LOG_ADVICE)
        return
    location = newest[0] if "://" in newest[0] else "file://" + newest[0]
    if not tables.embedded:
        raise damaged([f"{tables.config.namespace}.{tables.config.table_prefix}{table}"], LookupError(
            f"catalog {tables.config.catalog_name!r} does not know the table, whose newest metadata is {location}"),
            "register that metadata file in the catalog")
    log.warning("the catalog %s had lost the %s table; re-registered its newest metadata %s",
                tables.properties["uri"], table, location)
    tables.catalog.create_namespace_if_not_exists(tables.config.namespace)
    tables.catalog.register_table(tables.ident(table), location)
    tables._files(table)


def _modified(info: dict) -> float:
    """A listed file's modification time (local `mtime`, S3 `LastModified`), in seconds."""
    value = info.get("mtime", info.get("LastModified", 0))
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _snapshot_id(tbl) -> int | None:
    snap = tbl.current_snapshot() if tbl is not None else None
    return None if snap is None else snap.snapshot_id
