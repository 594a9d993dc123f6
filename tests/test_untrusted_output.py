"""The output's own files are untrusted input. After a committed night, each kind of file the
output holds is garbled, truncated, emptied, deleted or copied astray; then the next night and
the same night again run (real ledger, committer, state and skip check; no Ray). Each ends in a
repair or rebuild, a skip with a warning naming the file, or an exit-2 error naming it: never a
silent skip of unreadable work, never an exit-1 error that a scheduler would retry forever.
docs/operations.md ("The output's own files") holds this table for users."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import shutil
from pathlib import Path

import pytest
from nights import DAY, Night, clip_rows, refs

from mmbatch.config import OutputConfig
from mmbatch.errors import ExitCode, MmbatchError

NEXT = DAY + dt.timedelta(days=1)


def garble(p: Path) -> None:
    p.write_bytes(random.Random(0).randbytes(max(p.stat().st_size, 64)))  # the same bytes every run


DAMAGES = {
    "garbled": garble,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "emptied": lambda p: p.write_bytes(b""),
    "deleted": lambda p: p.unlink(),
    "stray copy": lambda p: shutil.copy(p, p.with_name(STRAY_NAMES.get(p.suffix, "copy-") + p.name)),
}
STRAY_NAMES = {".json": "latest-"}  # `latest-2026-11-27_fp1.json`: not a run id


def lease_file(out: Path, day: dt.date) -> Path:
    """A lapsed lease of a run that died, as a crash leaves it."""
    path = out / "_locks" / f"run_date={day.isoformat()}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"holder": "x", "host": "elsewhere", "pid": 1, "expires_at": 0}))
    return path


# What each kind of file is, after night DAY scored videos a and b.
TARGETS = {
    "run record": lambda out: out / "_runs" / "2026-11-27_fp1.json",
    "state table": lambda out: out / "state" / "state.parquet",
    "videos file": lambda out: out / "videos" / "run_date=2026-11-27" / "videos.parquet",
    "clips file": lambda out: sorted((out / "clips" / "run_date=2026-11-27").glob("*.parquet"))[0],
    "lease": lambda out: (lease_file(out, NEXT), lease_file(out, DAY))[1],
}

# (file, damage) -> (the next night, the same night again). Outcomes:
#   skip          committed; a and b skipped (their night reads fine), c scored
#   skip, warned  the same, with a warning naming the file (ignored, or rebuilt around)
#   rescored      committed; a and b scored again, with a warning naming the file (their night cannot be read)
#   repaired      committed; the night rewritten whole, the damaged file replaced
#   exit 2        not committed; an error naming the file, for a person
EXPECTED = {
    ("run record", "garbled"): ("skip, warned", "repaired"),
    ("run record", "truncated"): ("skip, warned", "repaired"),
    ("run record", "emptied"): ("skip, warned", "repaired"),
    ("run record", "deleted"): ("skip", "repaired"),
    ("run record", "stray copy"): ("skip, warned", "repaired"),
    ("state table", "garbled"): ("skip, warned", "repaired"),
    ("state table", "truncated"): ("skip, warned", "repaired"),
    ("state table", "emptied"): ("skip, warned", "repaired"),
    ("state table", "deleted"): ("skip", "repaired"),
    ("state table", "stray copy"): ("skip", "repaired"),
    ("videos file", "garbled"): ("rescored", "exit 2"),
    ("videos file", "truncated"): ("rescored", "exit 2"),
    ("videos file", "emptied"): ("rescored", "exit 2"),
    ("videos file", "deleted"): ("rescored", "repaired"),
    ("videos file", "stray copy"): ("skip, warned", "repaired"),
    ("clips file", "garbled"): ("rescored", "repaired"),
    ("clips file", "truncated"): ("rescored", "repaired"),
    ("clips file", "emptied"): ("rescored", "repaired"),
    ("clips file", "deleted"): ("rescored", "repaired"),
    ("clips file", "stray copy"): ("skip, warned", "repaired"),
    **{("lease", d): ("skip", "repaired") for d in DAMAGES},
}


# The table formats' own files: a damaged log or metadata file stops the night naming it (a rerun
# cannot rebuild a table's history); the embedded Iceberg catalog, emptied or deleted, is rebuilt by
# registering each table's newest metadata again.
def _newest(pattern: str):
    return lambda out: sorted((out / "clips").rglob(pattern))[-1]


FORMAT_TARGETS = {
    ("delta", "Delta log"): _newest("_delta_log/*.json"),
    ("iceberg", "Iceberg metadata"): _newest("metadata/*.metadata.json"),
    ("iceberg", "Iceberg manifest list"): _newest("metadata/snap-*.avro"),
    ("iceberg", "Iceberg manifest"): _newest("metadata/*-m0.avro"),
    ("iceberg", "Iceberg catalog"): lambda out: out / "_catalog" / "iceberg.db",
}
LOST = ("exit 2", "exit 2")
FORMAT_EXPECTED = {
    **{(fmt, target, damage): LOST for fmt, target in FORMAT_TARGETS for damage in DAMAGES},
    **{(fmt, target, "stray copy"): ("skip", "repaired") for fmt, target in FORMAT_TARGETS},
    ("iceberg", "Iceberg catalog", "emptied"): ("skip, warned", "repaired"),
    ("iceberg", "Iceberg catalog", "deleted"): ("skip, warned", "repaired"),
}


def night(out: Path, day: dt.date, ids: tuple[str, ...], fmt: str = "parquet") -> tuple[list[str], list[str]]:
    """One night as the job runs it: lease, roll-forward, resume, skip check, score the rest, commit.
    Returns (skipped, scored)."""
    n = Night(out, refs(*ids), day=day, output=OutputConfig(format=fmt))
    n.night.take()
    try:
        work = n.night.sort()
        skipped, todo = work.skipped, [r.video_id for r in work.todo]
        n.write(*[clip_rows(v, 2) for v in todo])
        n.night.commit()
    finally:
        n.night.release()
    return sorted(skipped), sorted(todo)


def outcome(out: Path, day: dt.date, ids: tuple[str, ...], named: str, caplog, fmt: str = "parquet") -> str:
    caplog.clear()
    try:
        skipped, scored = night(out, day, ids, fmt)
    except MmbatchError as err:
        assert err.exit_code == ExitCode.USAGE, f"exit {err.exit_code}: {err}"
        assert named in str(err), str(err)
        return "exit 2"
    warned = any(named in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), caplog.text
    if day == DAY:
        assert skipped == [] and scored == ["a", "b"]
        return "repaired"
    if skipped == ["a", "b"]:
        return "skip, warned" if warned else "skip"
    assert scored == ["a", "b", "c"] and warned, caplog.text  # never rescored without a word
    return "rescored"


def damage_and_run(tmp_path: Path, fmt: str, target, damage: str, caplog) -> tuple[str, str]:
    """Two outputs each get night DAY (a, b) and the same damage; then one runs the next night
    (a, b, c) and the other the same night again (a, b)."""
    caplog.set_level(logging.WARNING)
    got = []
    for name, day, ids in (("next", NEXT, ("a", "b", "c")), ("same", DAY, ("a", "b"))):
        out = tmp_path / name
        night(out, DAY, ("a", "b"), fmt)
        path = target(out)
        DAMAGES[damage](path)
        named = _named(path, damage)
        if damage == "deleted" and not any(path.parent.iterdir()):  # the folder's only file: the folder is named
            named = path.parent.name
        got.append(outcome(out, day, ids, named, caplog, fmt))
    return tuple(got)


def _named(path: Path, damage: str) -> str:
    return path.name if damage != "stray copy" else STRAY_NAMES.get(path.suffix, "copy-") + path.name


@pytest.mark.parametrize("target,damage", sorted(EXPECTED))
def test_a_damaged_output_file_is_repaired_named_or_refused(tmp_path, caplog, target, damage):
    got = damage_and_run(tmp_path, "parquet", TARGETS[target], damage, caplog)
    assert got == EXPECTED[target, damage]
    if got[0] != "exit 2":  # and the night after that is plain again (what was repaired stays repaired)
        assert night(tmp_path / "next", NEXT + dt.timedelta(days=1), ("a", "b", "c"))[1] == []


@pytest.mark.parametrize("fmt,target,damage", sorted(FORMAT_EXPECTED))
def test_a_damaged_table_log_stops_the_night_naming_it(tmp_path, caplog, fmt, target, damage):
    assert damage_and_run(tmp_path, fmt, FORMAT_TARGETS[fmt, target], damage, caplog) == FORMAT_EXPECTED[fmt, target, damage]


STAGED = {  # a crashed attempt's staged files (the same night resumes from them)
    "staged records": "records-*.parquet",
    "staged part": "part-*.parquet",
    "staged inputs": "inputs-*.parquet",
}


@pytest.mark.parametrize("target", sorted(STAGED))
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_staged_work_is_done_again_never_published_unread(tmp_path, caplog, target, damage):
    """A crashed attempt's staged files: what cannot be read is scored again (a warning names an
    unreadable file); what can is resumed. The night commits readable rows only."""
    caplog.set_level(logging.WARNING)
    crashed = Night(tmp_path, refs("a", "b"))
    crashed.write(clip_rows("a", 2), clip_rows("b", 2))  # then the process died: nothing committed
    path = sorted(Path(crashed.layout.parts if target != "staged inputs" else crashed.layout.staging)
                  .glob(STAGED[target]))[0]
    DAMAGES[damage](path)
    skipped, scored = night(tmp_path, DAY, ("a", "b"))
    import pandas as pd

    clips = pd.read_parquet(tmp_path / "clips")
    assert sorted(clips["clip_id"]) == ["a-0", "a-1", "b-0", "b-1"]  # readable, exactly once
    unreadable = damage in ("garbled", "truncated", "emptied")
    if damage == "stray copy":
        assert scored == []  # a copy changes nothing: both resumed
    else:
        assert scored  # what the damaged or lost file held is scored again
    if unreadable or (damage == "deleted" and target == "staged part"):
        assert any(path.name in r.getMessage() for r in caplog.records), caplog.text


def test_a_store_that_does_not_answer_is_not_called_damage(tmp_path):
    """Only what was read and is wrong counts as damage (exit 2); a read that fails is raised as it
    is, so the night ends worth retrying (exit 1)."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmbatch import storage

    fs = fsspec.filesystem("file")
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), good)
    bad.write_bytes(b"PAR1" + b"\0" * 20 + b"PAR1")
    assert storage.unreadable_parquet(fs, [str(good), str(bad), str(tmp_path / "gone.parquet")]) == [
        str(bad), str(tmp_path / "gone.parquet")]

    class Unreachable(type(fs)):
        def size(self, path):
            raise ConnectionResetError("the store closed the connection")

    with pytest.raises(ConnectionResetError):
        storage.unreadable_parquet(Unreachable(), [str(good)])
