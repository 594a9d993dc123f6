"""Worker-side files, the ledger and the commit, without Ray: each data-loss case keeps every
committed result, readers see one complete night, and a second run of a night is refused."""

import datetime as dt
import json
import os
import socket
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from nights import DAY, Night, clip_rows, concat, refs

from mmbatch import storage
from mmbatch.night import runs
from mmbatch.night.commit import CommitError
from mmbatch.night.lock import Lease, LockedError
from mmbatch.output.writer import part_file_name
from mmbatch.schema import CLIPS_SCHEMA, SCHEMA_VERSION, EmbeddingDims, partitioning


def clips(out, day=DAY) -> pd.DataFrame:
    return pd.read_parquet(out / "clips" / f"run_date={day.isoformat()}").sort_values(["video_id", "clip_index"])


def videos(out, day=DAY) -> pd.DataFrame:
    return pd.read_parquet(out / "videos" / f"run_date={day.isoformat()}").set_index("video_id")


def parquet_files(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet"))


def test_many_videos_share_a_file_with_exact_values(tmp_path):
    night = Night(tmp_path, refs("a", "b", "c")).write(
        concat(clip_rows("a", 2), clip_rows("b", 3), clip_rows("c", 1, "error", first=-1)))
    manifest = night.commit()
    files = parquet_files(tmp_path / "clips" / "run_date=2026-11-27")
    keys = np.array(["a-0", "a-1", "b-0", "b-1", "b-2", "c|unopened"])
    assert files == [part_file_name(night.layout.run_id, night.ledger.attempt, keys)]
    assert manifest["outputs"]["clip_files"] == files
    t = pq.read_table(tmp_path / "clips", partitioning=partitioning())
    assert t.schema.remove_metadata() == CLIPS_SCHEMA
    assert pq.read_schema(tmp_path / "clips" / "run_date=2026-11-27" / files[0]).metadata[
        b"mmbatch.schema_version"] == str(SCHEMA_VERSION).encode()
    rec = t.to_pylist()[0]
    assert (rec["video_id"], rec["clip_id"], rec["status"], rec["error"], rec["run_date"]) == ("a", "a-0", "ok", None, DAY)
    assert rec["vision_embedding"] == [1.0] * 4 and rec["text_embedding"] == [1.0] * 2
    assert rec["audio_embedding"] is None and rec["audio_valence"] is None and rec["fusion_weight_audio"] is None
    assert rec["p_positive"] == pytest.approx(0.7) and rec["fused_embedding"] == [1.0] * 9
    v = videos(tmp_path)
    assert v["status"].to_dict() == {"a": "ok", "b": "ok", "c": "error"}
    assert v["n_clips"].to_dict() == {"a": 2, "b": 3, "c": 0}
    assert v.loc["c", ["error_stage", "error"]].tolist() == ["decode", "boom"]
    assert manifest["counts"] == {"inputs": 3, "scored": 2, "failed": 1, "skipped": 0, "clips": 5,
                                  "kept_after_failure": 0, "carried_over": 0}
    assert (tmp_path / "clips" / "run_date=2026-11-27" / "_SUCCESS").read_text() == manifest["commit_id"]
    assert json.loads((tmp_path / "_runs" / f"{night.layout.run_id}.json").read_text())["commit_id"] == manifest["commit_id"]
    assert not (tmp_path / "_staging").exists() and not (tmp_path / "_locks").exists()


def test_a_video_whose_rows_span_files_completes_once_and_a_lost_one_is_reconciled(tmp_path):
    night = Night(tmp_path, refs("a", "lost"))
    night.write(clip_rows("a", 2, n_rows=3), clip_rows("a", 1, first=2, n_rows=3))
    assert set(night.ledger.done) == {"a"} and night.ledger.done["a"].files and len(night.ledger.done["a"].files) == 2
    night.commit()
    assert clips(tmp_path)["clip_id"].tolist() == ["a-0", "a-1", "a-2"]
    v = videos(tmp_path)
    assert v.loc["lost", ["status", "error_stage"]].tolist() == ["error", "reconcile"]


def test_killed_run_resumes_exactly_once(tmp_path):
    first = Night(tmp_path, refs("a", "b"))
    # File 1 holds all of a and 2 of b's 3 rows; the run dies before b's last row is written.
    first.write(concat(clip_rows("a", 2), clip_rows("b", 2, n_rows=3, value=7.0)))
    assert set(first.ledger.done) == {"a"}
    again = Night(tmp_path, refs("a", "b"))
    assert set(again.resumed) == {"a"}
    again.write(clip_rows("b", 3))  # b is done again from the start
    manifest = again.commit()
    c = clips(tmp_path)
    assert c["clip_id"].tolist() == ["a-0", "a-1", "b-0", "b-1", "b-2"]  # no duplicate of b's first attempt
    assert {tuple(e) for e in c[c.video_id == "b"]["fused_embedding"]} == {(1.0,) * 9}
    assert manifest["counts"]["scored"] == 2


def test_staged_failures_and_changed_inputs_are_redone_on_resume(tmp_path):
    first = Night(tmp_path, refs("bad", "good", "changed"))
    first.write(clip_rows("bad", 1, "error", first=-1), clip_rows("good", 1), clip_rows("changed", 1))
    resumed = Night(tmp_path, refs("bad", "good") + refs("changed", etag="new"))
    assert set(resumed.resumed) == {"good"}  # the failure is retried; the changed file is redone
    resumed.write(clip_rows("bad", 1), clip_rows("changed", 2))
    resumed.commit()
    assert videos(tmp_path)["status"].to_dict() == {"bad": "ok", "changed": "ok", "good": "ok"}
    assert clips(tmp_path)["clip_id"].tolist() == ["bad-0", "changed-0", "changed-1", "good-0"]


def test_same_date_rerun_keeps_a_committed_result_when_the_video_now_fails(tmp_path):
    Night(tmp_path, refs("a", "b")).write(clip_rows("a", 2), clip_rows("b", 2)).commit()
    rerun = Night(tmp_path, refs("a", "b")).write(concat(clip_rows("a", 2, value=2.0), clip_rows("b", 2, "error")))
    manifest = rerun.commit()
    c = clips(tmp_path)
    assert c["clip_id"].tolist() == ["a-0", "a-1", "b-0", "b-1"] and (c["status"] == "ok").all()
    assert c.set_index("clip_id")["fused_embedding"]["a-0"][0] == 2.0  # a: the new result
    v = videos(tmp_path)
    assert v.loc["b", "status"] == "ok" and v.loc["b", "n_clips"] == 2
    assert "is kept: boom" in v.loc["b", "error"]
    assert manifest["kept_after_failure"] == ["b"] and manifest["counts"]["failed"] == 1


def test_a_second_run_of_the_date_with_other_inputs_keeps_the_first(tmp_path):
    Night(tmp_path, refs("a")).write(clip_rows("a", 2)).commit()
    manifest = Night(tmp_path, refs("b")).write(clip_rows("b", 1)).commit()
    assert clips(tmp_path)["video_id"].tolist() == ["a", "a", "b"]
    assert sorted(videos(tmp_path).index) == ["a", "b"]
    assert manifest["carried_over"] == ["a"] and manifest["counts"]["inputs"] == 1


def test_other_config_same_date_replaces_scores_and_marks_the_old_manifest(tmp_path):
    old = Night(tmp_path, refs("a"), fp="fp1").write(clip_rows("a", 2))
    old.commit()
    new = Night(tmp_path, refs("a"), fp="fp2").write(clip_rows("a", 2))
    new.commit()
    assert set(clips(tmp_path)["model_fingerprint"]) == {"fp2"}
    old_manifest = json.loads((tmp_path / "_runs" / f"{old.layout.run_id}.json").read_text())
    assert old_manifest["superseded_by"] == new.layout.run_id


def test_manifest_write_failure_publishes_nothing_and_a_rerun_resumes(tmp_path, monkeypatch):
    night = Night(tmp_path, refs("a")).write(clip_rows("a", 2))
    real = storage.write_bytes_atomic

    def failing(fs, path, data):
        if "/_runs/" in path:
            raise OSError("disk full")
        return real(fs, path, data)

    monkeypatch.setattr(storage, "write_bytes_atomic", failing)
    with pytest.raises(CommitError, match="before anything was published") as err:
        night.commit()
    assert not err.value.committed and not (tmp_path / "clips").exists() and not (tmp_path / "videos").exists()
    monkeypatch.setattr(storage, "write_bytes_atomic", real)
    again = Night(tmp_path, refs("a"))
    assert set(again.resumed) == {"a"}
    again.commit()
    assert clips(tmp_path)["clip_id"].tolist() == ["a-0", "a-1"]


def test_publish_interrupted_after_the_commit_record_is_finished_by_the_next_run(tmp_path, monkeypatch):
    Night(tmp_path, refs("a")).write(clip_rows("a", 1)).commit()
    night = Night(tmp_path, refs("a", "b")).write(clip_rows("a", 2, value=3.0), clip_rows("b", 1))
    monkeypatch.setattr(type(night.committer.publisher), "publish",
                        lambda self, layout, commit_id: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(CommitError, match="after the commit record") as err:
        night.commit()
    assert err.value.committed
    assert clips(tmp_path)["clip_id"].tolist() == ["a-0"]  # still exactly the previous night
    monkeypatch.undo()
    nxt = Night(tmp_path, refs("a", "b"))
    assert nxt.rolled == [night.layout.run_id]
    assert clips(tmp_path)["clip_id"].tolist() == ["a-0", "a-1", "b-0"]
    assert sorted(videos(tmp_path).index) == ["a", "b"]
    staged = tmp_path / "_staging" / night.layout.run_id
    assert not (staged / "publish").exists()
    # The retry of a committed night resumes what that attempt scored instead of scoring it again.
    assert set(nxt.resumed) == {"a", "b"}
    nxt.commit()
    assert clips(tmp_path)["clip_id"].tolist() == ["a-0", "a-1", "b-0"] and not staged.exists()


def test_clean_up_failure_after_the_commit_is_only_a_warning(tmp_path, monkeypatch):
    night = Night(tmp_path, refs("a")).write(clip_rows("a", 1))
    monkeypatch.setattr(runs, "mark_superseded", lambda fs, layout, m: (_ for _ in ()).throw(OSError("x")))
    manifest = night.commit()
    assert manifest["cleanup_warnings"] and clips(tmp_path)["clip_id"].tolist() == ["a-0"]
    assert json.loads((tmp_path / "_runs" / f"{night.layout.run_id}.json").read_text()) == json.loads(
        json.dumps(manifest, default=str))  # the record on disk is the one returned


def test_damaged_run_manifest_is_skipped(tmp_path):
    (tmp_path / "_runs").mkdir()
    (tmp_path / "_runs" / "2026-11-27_deadbeef.json").write_text('{"run_id": "2026-11-2')
    Night(tmp_path, refs("a")).write(clip_rows("a", 1)).commit()
    second = Night(tmp_path, refs("a"), day=DAY + dt.timedelta(days=1))
    from mmbatch.night.state import skipped_videos

    assert set(skipped_videos(second.fs, second.layout, second.committer.tables, refs("a"), {}, "fp1")) == {"a"}


def test_glob_readers_see_one_complete_night(tmp_path):
    Night(tmp_path, refs("a", "b")).write(clip_rows("a", 2), clip_rows("b", 1)).commit()
    glob = f"{tmp_path}/clips/**/*.parquet"

    def seen():
        df = pd.read_parquet(tmp_path / "clips", partitioning=partitioning())
        n = duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchall()[0][0]
        return sorted(df["clip_id"]), n

    assert seen() == (["a-0", "a-1", "b-0"], 3)
    killed = Night(tmp_path, refs("a", "b")).write(clip_rows("a", 3, value=5.0))  # killed before its commit
    assert killed.ledger.done and seen() == (["a-0", "a-1", "b-0"], 3)
    Night(tmp_path, refs("a", "b")).write(clip_rows("b", 2)).commit()  # resumes: a from the ledger
    assert seen() == (["a-0", "a-1", "a-2", "b-0", "b-1"], 5)
    files = list((tmp_path / "clips").rglob("*.parquet"))
    assert len(files) == 2 and not list((tmp_path / "clips").glob("*/*.old"))


def test_nights_with_other_embedding_sizes_read_together(tmp_path):
    Night(tmp_path, refs("a")).write(clip_rows("a", 1)).commit()
    other = EmbeddingDims(8, 5, 0)
    day2 = DAY + dt.timedelta(days=1)
    Night(tmp_path, refs("a"), day=day2, fp="fp2", dims=other).write(clip_rows("a", 1, dims=other)).commit()
    df = pd.read_parquet(tmp_path / "clips", partitioning=partitioning()).sort_values("run_date")
    assert [len(e) for e in df["vision_embedding"]] == [4, 8] and df["text_embedding"].iloc[1] is None
    table = pads.dataset(tmp_path / "clips", partitioning=partitioning()).to_table()
    assert table.num_rows == 2
    sizes = duckdb.sql(f"SELECT len(vision_embedding) FROM '{tmp_path}/clips/**/*.parquet' ORDER BY 1").fetchall()
    assert sizes == [(4,), (8,)]


def test_a_second_run_of_the_same_night_is_refused(tmp_path):
    fs, root = storage.filesystem(str(tmp_path))
    path = f"{root}/_locks/run_date=2026-11-27.json"
    first = Lease(fs, path, "2026-11-27_aaaa", ttl_s=60)
    first.me["pid"] = os.getppid()  # another live process on this host
    first.acquire()
    second = Lease(fs, path, "2026-11-27_bbbb", ttl_s=60)
    with pytest.raises(LockedError, match=r"another run holds .*2026-11-27_aaaa on host .* expires in \d+ s"):
        second.acquire()
    # A lease whose holder is dead on this host, or that expired elsewhere, is taken over.
    fs.pipe_file(path, json.dumps({"holder": "x", "host": socket.gethostname(), "pid": 2**22 + 7,
                                   "expires_at": time.time() + 60}).encode())
    second.acquire()
    fs.pipe_file(path, json.dumps({"holder": "y", "host": "elsewhere", "pid": 1, "expires_at": time.time() - 1}).encode())
    second.acquire()
    second.release()
    assert not fs.exists(path)


def test_an_output_that_cannot_be_written_fails_before_any_video_work(tiny_config, tmp_path, monkeypatch):
    """An output path under a regular file: one clear error, and Ray was never asked for work."""
    import mmbatch.pipeline.adapter as adapter
    import mmbatch.pipeline.run as vs
    from mmbatch.errors import OutputError
    from mmbatch.synth import write_video

    write_video(tmp_path / "in" / "v.mp4", seconds=1.0, width=32, height=32)
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setattr(adapter, "build_dataset", lambda *a, **k: pytest.fail("video work started"))
    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    with pytest.raises(OutputError, match=rf"cannot write to the output {tmp_path / 'afile' / 'out'}: "
                                          r"(NotADirectoryError|FileExistsError)"):
        vs.run_pipeline(tiny_config, str(tmp_path / "in"), str(tmp_path / "afile" / "out"), DAY)


def test_rows_carried_from_a_v1_partition_take_todays_schema(tmp_path):
    """A schema-v1 night (fixed-size embeddings, no *_error columns) rerun with other inputs:
    its videos are carried over into v2 files."""
    import pyarrow as pa

    from mmbatch.schema import file_schema
    from mmbatch.tables.tables import conform as _conform

    v1 = pa.table({"video_id": ["old"], "clip_id": ["old-0"], "clip_index": pa.array([0], pa.int32()),
                   "vision_embedding": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2))})
    out = _conform(v1, file_schema(CLIPS_SCHEMA))
    assert out.schema == file_schema(CLIPS_SCHEMA)
    assert out.to_pylist()[0]["vision_embedding"] == [1.0, 2.0] and out.to_pylist()[0]["text_error"] is None


def test_a_lapsed_or_taken_over_lease_never_commits(tmp_path, monkeypatch):
    """Renewals that fail for longer than the TTL (a store that stalls), or another run taking the
    lease, stop this run before its commit record; a renewal never takes the lease back."""
    from mmbatch.night.lock import LeaseLostError

    fs, root = storage.filesystem(str(tmp_path))
    path = f"{root}/_locks/run_date=2026-11-27.json"
    lease = Lease(fs, path, "2026-11-27_aaaa", ttl_s=0.5, what="run date 2026-11-27")
    lease.acquire()
    lease.renew()
    real = storage.write_bytes_atomic
    monkeypatch.setattr(storage, "write_bytes_atomic", lambda *a, **k: (_ for _ in ()).throw(OSError("store stalls")))
    with pytest.raises(OSError):
        lease.renew()  # the renewal thread logs this and tries again
    time.sleep(0.6)
    monkeypatch.setattr(storage, "write_bytes_atomic", real)
    with pytest.raises(LeaseLostError, match=r"the lease on run date 2026-11-27 lapsed \d+ s ago .*run.lock_ttl_s = 0.5 s"):
        lease.renew()  # lapsed: writing again could take the night from a run that holds it now

    night = Night(tmp_path, refs("a")).write(clip_rows("a", 2))
    taken = Lease(fs, path, "2026-11-27_aaaa", ttl_s=60)
    taken.acquire()
    fs.pipe_file(path, json.dumps({"holder": "2026-11-27_bbbb", "host": "elsewhere", "pid": 1,
                                   "expires_at": time.time() + 60}).encode())
    with pytest.raises(LeaseLostError, match="another run took over"):
        taken.renew()
    assert json.loads(fs.cat_file(path))["holder"] == "2026-11-27_bbbb"  # not taken back
    with pytest.raises(LeaseLostError):
        night.committer.commit(night.inputs, night.ledger.done, {}, {}, guard=taken.check)
    assert not (tmp_path / "clips").exists() and not (tmp_path / "_runs").exists()
    fs.rm(path)
    assert set(Night(tmp_path, refs("a")).resumed) == {"a"}  # the staged work is kept for the rerun


def test_a_committed_night_whose_state_update_fails_is_committed_and_never_rescored(tmp_path, monkeypatch, caplog):
    """Disk full or `state/` denied after the publish: the night is committed (exit 3, never 1, so no
    scheduler retries it), clean-up still runs, no temporary file is left, and the next night skips
    every video (the state catches up from the run records) instead of scoring them again."""
    import argparse
    import types

    from mmbatch.cli.score import finish
    from mmbatch.night.state import skipped_videos

    night = Night(tmp_path, refs("a", "b")).write(clip_rows("a", 1), clip_rows("b", 1))
    real = storage.write_bytes_atomic

    def full(fs, path, data):
        if "state" in path:
            with open(f"{path}{storage.TEMP_INFIX}{os.getpid()}", "wb") as fh:
                fh.write(data[:10])  # a partial temporary file, then the disk is full
            raise OSError(28, "No space left on device")
        return real(fs, path, data)

    monkeypatch.setattr(storage, "write_bytes_atomic", full)
    manifest = night.commit()
    monkeypatch.undo()
    assert manifest["state_updated"] is False and "No space left on device" in manifest["cleanup_warnings"][0]
    assert json.loads((tmp_path / "_runs" / "2026-11-27_fp1.json").read_text())["state_updated"] is False
    assert clips(tmp_path)["clip_id"].tolist() == ["a-0", "b-0"] and not (tmp_path / "_staging").exists()
    config = types.SimpleNamespace(run=types.SimpleNamespace(max_failed_fraction=0.2, max_modality_failed_fraction=0.2))
    from mmbatch.night.night import Night as TheNight

    reasons = TheNight.degraded_reasons(manifest, config.run)  # the run's rule (mmbatch.pipeline.run.execute)
    assert reasons[0].startswith("committed, but the state table was not updated")
    result = types.SimpleNamespace(run_id="r", inputs=2, scored=2, failed=0, skipped=0, clips=2, wall_seconds=1.0,
                                   output=str(tmp_path), manifest=manifest, exit_code=3, degraded=reasons)
    assert finish(argparse.Namespace(max_failed_fraction=None, demo=False), config, result, DAY) == 3
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert finish(argparse.Namespace(max_failed_fraction=None, demo=False, json=True), config, result, DAY) == 3
    summary = json.loads(out.getvalue())  # --json: one object, the exit code and why in it
    assert summary["exit_code"] == 3 and summary["degraded"][0].startswith("committed, but the state table was not")
    assert (summary["inputs"], summary["scored"], summary["clips"]) == (2, 2, 2)
    # The temporary file of the failed write goes with the next clean-up once abandoned (an hour).
    leftovers = list((tmp_path / "state").glob("*.tmp-*"))
    assert leftovers == []  # the failed atomic write removed its own
    stale = tmp_path / "_runs" / "x.json.tmp-99999999"
    stale.write_bytes(b"{")
    os.utime(stale, (time.time() - 7200,) * 2)
    fresh = tmp_path / "_runs" / "y.json.tmp-99999998"
    fresh.write_bytes(b"{")
    nxt = Night(tmp_path, refs("a", "b", "c"), day=DAY + dt.timedelta(days=1))
    skipped = skipped_videos(nxt.fs, nxt.layout, nxt.tables, nxt.inputs, {}, nxt.fp)
    assert sorted(skipped) == ["a", "b"]  # not scored twice
    nxt.write(clip_rows("c", 1)).committer.commit(nxt.inputs, nxt.ledger.done, skipped, {})
    assert not stale.exists() and fresh.exists()


def test_a_night_dated_after_this_one_is_named_not_silently_rescored(tmp_path, caplog):
    """A mistyped future date (2100-01-01) committed: a real night after it scores those videos again
    (their state is dated later) and says so, naming the date."""
    import logging

    from mmbatch.night.state import skipped_videos

    Night(tmp_path, refs("a"), day=dt.date(2100, 1, 1)).write(clip_rows("a", 1)).commit()
    nxt = Night(tmp_path, refs("a"), day=DAY)
    with caplog.at_level(logging.WARNING):
        assert skipped_videos(nxt.fs, nxt.layout, nxt.tables, nxt.inputs, {}, nxt.fp) == {}
    assert "1 of these videos were last scored on a later night than 2026-11-27 (2100-01-01)" in caplog.text


def test_a_full_disk_while_writing_clips_names_its_cause_without_colour_codes():
    """Ray wraps a worker's OSError in a RayTaskError that is itself an OSError, whose text is Ray's
    coloured traceback: the error line names the innermost cause."""
    import types

    from ray.exceptions import RayTaskError

    from mmbatch.pipeline.run import _storage_failure

    cause = OSError(28, "No space left on device")
    wrapped = RayTaskError("ray::Write", "\x1b[36mray::Write()\x1b[39m (pid=1)\n  File ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, OSError)
    err = _storage_failure(wrapped, types.SimpleNamespace(output_uri="/out"))
    assert "[Errno 28] No space left on device" in str(err) and "\x1b" not in str(err), str(err)


def test_a_rerun_of_a_committed_date_keeps_the_earlier_record(tmp_path):
    """The same run id committed again: the earlier record and report stay under _runs/<run_id>/,
    the new record names them, and the summary says what was replaced and carried over. A record
    whose commit_id is not one mmbatch writes is never made into a path."""
    from mmbatch.cli.score import replaced_line
    from mmbatch.night.runs import list_run_records

    first = Night(tmp_path, refs("a", "b")).write(clip_rows("a", 1), clip_rows("b", 1)).commit()
    runs_dir = tmp_path / "_runs"
    (runs_dir / "2026-11-27_fp1.html").write_text("the first night's report")
    second = Night(tmp_path, refs("a")).write(clip_rows("a", 2)).commit()
    kept = runs_dir / "2026-11-27_fp1" / f"{first['commit_id']}.json"
    assert json.loads(kept.read_text())["counts"] == first["counts"]
    assert kept.with_suffix(".html").read_text() == "the first night's report"
    assert second["replaced"]["commit_id"] == first["commit_id"] and second["carried_over"] == ["b"]
    assert replaced_line(second) == (
        f"\nreplaced the committed night of 2026-11-27 (commit {first['commit_id'][:8]} of {first['committed_at']}, "
        f"2 videos scored; its record is kept at {kept}); 1 of its videos carried over")
    assert list_run_records(Night(tmp_path, refs()).fs, str(runs_dir)) == {"2026-11-27_fp1": DAY}
    record = json.loads((runs_dir / "2026-11-27_fp1.json").read_text())
    (runs_dir / "2026-11-27_fp1.json").write_text(json.dumps({**record, "commit_id": "../../evil"}))
    third = Night(tmp_path, refs("a")).write(clip_rows("a", 1)).commit()
    assert "replaced" not in third and not list(tmp_path.rglob("evil*"))
    assert replaced_line(third) == ""
