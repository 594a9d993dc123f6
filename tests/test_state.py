"""The state table equals the answer from the full history, is rebuilt when missing and
catches up with a night whose state update never landed."""

import datetime as dt

import pandas as pd
from nights import DAY, Night, clip_rows, refs

from mmbatch.night.state import read_state


def full_history_answer(out) -> dict[str, tuple]:
    """Latest scored-ok night per video, straight from every videos partition."""
    df = pd.read_parquet(out / "videos")
    df["run_date"] = pd.to_datetime(df["run_date"].astype(str)).dt.date
    ok = df[(df["status"] == "ok") & (df["n_clips"] > 0)].sort_values("run_date")
    return {r.video_id: (r.run_date, r.model_fingerprint, r.etag) for r in ok.groupby("video_id").tail(1).itertuples()}


def state_answer(night: Night) -> dict[str, tuple]:
    table, _ = read_state(night.fs, night.layout, night.committer.tables)
    return {r["video_id"]: (r["run_date"], r["model_fingerprint"], r["etag"]) for r in table.to_pylist()}


def test_state_matches_history_rebuilds_and_catches_up(tmp_path):
    plan = [  # (day offset, fingerprint, ok videos, failed videos)
        (0, "fp1", ["a", "b", "c"], ["d"]),
        (1, "fp1", ["d"], ["a"]),
        (2, "fp2", ["a", "e"], []),
        (1, "fp1", ["b"], []),  # a backfill of an earlier night, run again later
    ]
    for offset, fp, ok, failed in plan:
        day = DAY + dt.timedelta(days=offset)
        night = Night(tmp_path, refs(*ok, *failed), day=day, fp=fp)
        night.write(*[clip_rows(v, 1) for v in ok], *[clip_rows(v, 1, "error", first=-1) for v in failed])
        night.commit()
    expected = full_history_answer(tmp_path)
    assert expected["a"] == (DAY + dt.timedelta(days=2), "fp2", "e") and expected["b"][0] == DAY + dt.timedelta(days=1)
    assert state_answer(night) == expected

    (tmp_path / "state" / "state.parquet").unlink()  # missing: built once from the partitions
    assert state_answer(night) == expected

    # A night whose state update was lost (state file from before it) is merged on read.
    night.committer.update_state(night.layout)
    before = (tmp_path / "state" / "state.parquet").read_bytes()
    day = DAY + dt.timedelta(days=3)
    Night(tmp_path, refs("f"), day=day).write(clip_rows("f", 1)).commit()
    (tmp_path / "state" / "state.parquet").write_bytes(before)
    assert state_answer(night) == full_history_answer(tmp_path) and "f" in state_answer(night)
