"""`output.format: delta | iceberg`, on local disk and on S3 (moto), without Ray: each night is one
commit a table, a rerun replaces exactly its date, a killed run leaves the previous version and
resumes exactly once, a run that slipped past the lease loses at the table commit, nights of other
embedding sizes read together, rollback restores a date and upkeep waits for its retention."""

from __future__ import annotations

import datetime as dt
import uuid

import duckdb
import pytest
from nights import DAY, Night, clip_rows, concat, refs

from mmbatch.config import IcebergConfig, OutputConfig
from mmbatch.errors import ExitCode, OutputError
from mmbatch.night import runs
from mmbatch.night.commit import CommitError
from mmbatch.schema import EmbeddingDims
from mmbatch.tables.formats import open_tables
from mmbatch.tables.tables import TableConflictError
from mmbatch.tables.upkeep import RollbackError, maintain, rollback

DAY2 = DAY + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def s3_endpoint():
    from s3server import moto_server

    with moto_server() as endpoint:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="tables")
        yield endpoint


class Place:
    """An output root in one format on one store, and how a test reads it back."""

    def __init__(self, fmt: str, uri: str, storage_options: dict | None, catalog: dict):
        self.fmt, self.uri, self.storage_options = fmt, uri, storage_options
        self.output = OutputConfig(format=fmt, iceberg=IcebergConfig(catalog=catalog))

    def night(self, *ids: str, **kw) -> Night:
        return Night(self.uri, refs(*ids, etag=kw.pop("etag", "e")), storage_options=self.storage_options,
                     output=self.output, **kw)

    def tables(self):
        return open_tables(self.uri, self.storage_options, self.output)

    def clip_ids(self, day=DAY) -> list[str]:
        t = self.tables().read_date("clips", day, ["clip_id"])
        return [] if t is None else sorted(t.column("clip_id").to_pylist())

    def videos(self, day=DAY) -> dict[str, dict]:
        t = self.tables().read_date("videos", day)
        return {} if t is None else {r["video_id"]: r for r in t.to_pylist()}

    def commits(self, table: str = "clips") -> int:
        """How many commits the table has (Delta versions, Iceberg snapshots)."""
        tables = self.tables()
        if self.fmt == "delta":
            return len(tables.history(table))
        tbl = tables.load(table, fresh=True)
        return 0 if tbl is None else len(tbl.snapshots())


@pytest.fixture(params=["delta-local", "iceberg-local", "delta-s3", "iceberg-s3"])
def place(request, tmp_path):
    fmt, store = request.param.split("-")
    if store == "local":
        return Place(fmt, str(tmp_path / "out"), None, {})
    from s3server import storage_options

    endpoint = request.getfixturevalue("s3_endpoint")
    catalog = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db"}  # the SQLite file stays local
    return Place(fmt, f"s3://tables/{uuid.uuid4().hex[:8]}", storage_options(endpoint), catalog)


def test_each_night_is_one_commit_a_table_and_a_rerun_replaces_exactly_its_date(place):
    first = place.night("a", "b").write(clip_rows("a", 2), clip_rows("b", 1)).commit()
    place.night("a", day=DAY2).write(clip_rows("a", 3)).commit()
    assert place.commits("clips") == 2 and place.commits("videos") == 2
    assert set(first["table_versions"]) == {"clips", "videos"} and first["format"] == place.fmt
    # A rerun of DAY with other models: a now fails (its committed result is kept), b is rescored.
    rerun = place.night("a", "b", fp="fp2").write(concat(clip_rows("a", 2, "error"), clip_rows("b", 2, value=2.0)))
    manifest = rerun.commit()
    assert place.commits("clips") == 3 and place.commits("videos") == 3  # one commit a table
    assert place.clip_ids() == ["a-0", "a-1", "b-0", "b-1"]
    assert place.clip_ids(DAY2) == ["a-0", "a-1", "a-2"]  # the other date is untouched
    v = place.videos()
    assert v["a"]["status"] == "ok" and "is kept: boom" in v["a"]["error"] and v["b"]["run_id"] == rerun.layout.run_id
    assert manifest["kept_after_failure"] == ["a"]
    history = place.tables().versions_of_date("clips", DAY)
    assert [c["run_id"] for c in history] == [first["run_id"], rerun.layout.run_id]
    assert history[-1]["commit_id"] == manifest["commit_id"] and history[-1]["clips"] == "2"  # scored tonight (a is kept)


def test_a_killed_run_leaves_the_previous_version_and_resumes_exactly_once(place, monkeypatch):
    place.night("a").write(clip_rows("a", 1)).commit()
    # Killed while writing: nothing of it is visible.
    place.night("a", "b", fp="fp2").write(clip_rows("a", 2))
    assert place.clip_ids() == ["a-0"] and place.commits() == 1
    # Killed at the table commit (after the intent was written and the files placed).
    night = place.night("a", "b", fp="fp2").write(clip_rows("b", 1))
    tables_type = type(night.committer.tables)
    monkeypatch.setattr(tables_type, "write_version", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(CommitError, match="before anything was published"):
        night.commit()
    monkeypatch.undo()
    assert place.clip_ids() == ["a-0"] and place.commits() == 1
    # Killed after the table commits, before the run record: the next run writes the record only.
    real = runs.write_run_record
    again = place.night("a", "b", fp="fp2")
    assert again.rolled == [night.layout.run_id]  # the interrupted commit is finished
    assert place.clip_ids() == ["a-0", "a-1", "b-0"] and place.commits() == 2
    third = place.night("a", "b", fp="fp3").write(clip_rows("a", 1, value=3.0), clip_rows("b", 1, value=3.0))
    monkeypatch.setattr(runs, "write_run_record", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(CommitError):
        third.commit()
    monkeypatch.setattr(runs, "write_run_record", real)
    assert place.commits() == 3
    fourth = place.night("a", "b", fp="fp3")
    assert fourth.rolled == [third.layout.run_id] and place.commits() == 3  # no second commit of the night
    record = runs.read_run_record(fourth.fs, third.layout.manifest)
    assert record["table_versions"]["clips"] is not None and place.clip_ids() == ["a-0", "b-0"]


def test_a_run_that_slipped_past_the_lease_loses_at_the_table_commit(place):
    place.night("a").write(clip_rows("a", 1)).commit()
    winner = place.night("a", "b", fp="fp2").write(clip_rows("a", 1, value=2.0), clip_rows("b", 1))
    loser = place.night("a", "c", fp="fp3").write(clip_rows("a", 1, value=3.0), clip_rows("c", 2))
    publish = loser.committer.publisher.publish

    def racing(layout, record):  # the other run commits after the loser read the table
        winner.commit()
        return publish(layout, record)

    loser.committer.publisher.publish = racing
    with pytest.raises(TableConflictError, match="moved on") as err:
        loser.commit()
    assert isinstance(err.value, OutputError) and err.value.exit_code == ExitCode.SYSTEM
    assert place.clip_ids() == ["a-0", "b-0"] and place.commits() == 2  # the winner's night, whole
    assert not loser.fs.exists(loser.layout.intent) and not loser.fs.exists(loser.layout.manifest)
    again = place.night("a", "c", fp="fp3")  # the loser's rerun resumes its staged work on the new version
    assert set(again.resumed) == {"a", "c"}
    again.commit()
    assert place.clip_ids() == ["a-0", "b-0", "c-0", "c-1"]
    assert place.videos()["a"]["model_fingerprint"] == "fp3" and place.videos()["b"]["run_id"] == winner.layout.run_id


def test_rollback_restores_a_date_and_upkeep_waits_for_the_retention(place):
    first = place.night("a", "b").write(clip_rows("a", 1), clip_rows("b", 1))
    first.commit()
    second = place.night("a", fp="fp2").write(clip_rows("a", 2, value=2.0))
    second.commit()
    assert place.clip_ids() == ["a-0", "a-1", "b-0"]
    done = maintain(place.uri, 1.0, place.storage_options, place.output)  # superseded just now: kept
    assert done["clips"]["removed_files"] == 0
    out = rollback(place.uri, DAY, place.storage_options, place.output)
    assert out["rolled_back_run"] == second.layout.run_id
    assert place.clip_ids() == ["a-0", "b-0"] and place.videos()["a"]["model_fingerprint"] == "fp1"
    assert runs.read_run_record(first.fs, second.layout.manifest)["rolled_back_at"]
    assert "superseded_by" not in runs.read_run_record(first.fs, first.layout.manifest)  # current again
    assert not first.fs.exists(first.layout.state)  # rebuilt from the tables: the skip check sees fp1's night
    rollback(place.uri, DAY, place.storage_options, place.output)  # one more night back: the date is empty
    assert place.clip_ids() == [] and place.commits() == 4
    with pytest.raises(RollbackError, match="no committed night left"):
        rollback(place.uri, DAY, place.storage_options, place.output)
    done = maintain(place.uri, 0.0, place.storage_options, place.output)
    assert done["clips"]["removed_files"] == 4  # both nights' files: superseded, past the retention
    assert place.clip_ids() == [] and place.commits() >= 1


def test_model_swap_nights_read_together_through_the_format(place, tmp_path):
    """Nights of other embedding sizes, read by the formats' own libraries (no mmbatch) into pandas,
    pyarrow and DuckDB."""
    other = EmbeddingDims(8, 5, 0)
    place.night("a").write(clip_rows("a", 1)).commit()
    place.night("a", day=DAY2, fp="fp2", dims=other).write(clip_rows("a", 1, dims=other)).commit()
    tables = place.tables()
    if place.fmt == "delta":
        from deltalake import DeltaTable

        arrow = DeltaTable(tables.uri_of("clips"), storage_options=tables.options).to_pyarrow_dataset().to_table()
    else:
        from pyiceberg.catalog import load_catalog

        catalog = load_catalog("mmbatch", **tables.properties)  # a SQL catalog keeps tables per catalog name
        arrow = catalog.load_table("mmbatch.clips").scan().to_arrow()
    df = arrow.to_pandas().sort_values("run_date")
    assert [len(e) for e in df["vision_embedding"]] == [4, 8] and df["text_embedding"].iloc[1] is None
    sizes = duckdb.sql("SELECT run_date, len(vision_embedding) FROM arrow ORDER BY 1").fetchall()
    assert sizes == [(DAY, 4), (DAY2, 8)]
    assert tables.read("clips", ["run_date"]).num_rows == 2


def test_an_output_is_read_and_written_only_in_its_own_format(tmp_path):
    Night(tmp_path, refs("a")).write(clip_rows("a", 1)).commit()  # plain Parquet
    with pytest.raises(OutputError, match="holds parquet tables, but output.format is delta"):
        open_tables(str(tmp_path), None, OutputConfig(format="delta"))
    assert open_tables(str(tmp_path)).format == "parquet"  # readers without a config detect it
    with pytest.raises(RollbackError, match="plain Parquet"):
        rollback(str(tmp_path), DAY)
    from mmbatch.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a catalog"):
        open_tables("s3://bucket/out", {"anon": True}, OutputConfig(format="iceberg"))


@pytest.mark.parametrize("fmt", ["parquet", "delta", "iceberg"])
def test_an_output_written_before_a_modality_was_added_takes_its_columns(tmp_path, monkeypatch, fmt):
    """Night 1 in the schema of before the face modality (its columns absent from every file and
    table), night 2 in today's: both read back in today's schema, the old rows' face columns null."""
    import pyarrow as pa

    from mmbatch import schema
    from mmbatch.output import writer
    from mmbatch.tables import tables as tables_module

    face = {c for c in schema.CLIPS_SCHEMA.names if "face" in c}
    old = pa.schema([f for f in schema.CLIPS_SCHEMA if f.name not in face])
    today = schema.CLIPS_SCHEMA
    place = Place(fmt, str(tmp_path / "out"), None, {})
    with monkeypatch.context() as m:
        m.setattr(schema, "CLIPS_SCHEMA", old)
        m.setattr(writer, "CLIPS_SCHEMA", old)
        m.setitem(tables_module.TABLE_SCHEMAS, "clips", old)
        place.night("a").write(clip_rows("a", 2)).commit()
    assert schema.CLIPS_SCHEMA is today and face
    place.night("b", day=DAY2).write(clip_rows("b", 1)).commit()
    before, after = place.tables().read_date("clips", DAY), place.tables().read_date("clips", DAY2)
    assert before.schema.names == after.schema.names == schema.file_schema(today).names
    assert before.column("has_face").to_pylist() == [None, None] and after.column("has_face").to_pylist() == [False]
    assert before.column("clip_id").to_pylist() == ["a-0", "a-1"]
