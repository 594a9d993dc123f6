"""The Python API from plain Python: `mmbatch.score` runs a night on the session's Ray (it attaches to
a Ray this process already started, as a notebook's would be) and `mmbatch.read_clips` reads it back;
a mistake is raised as a typed error with the command's exit code."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from conftest import REPO

from mmbatch.synth import write_video

DAY = dt.date(2026, 11, 27)


def test_score_and_read_clips_from_python(ray_cluster, tmp_path):
    import mmbatch

    for name in ("a", "b"):
        write_video(tmp_path / "in" / f"{name}.mp4", seconds=6.0, width=64, height=48, seed=len(name))
    result = mmbatch.score(tmp_path / "in", tmp_path / "out", REPO / "pipelines" / "tiny.yaml", run_date="2026-11-27")
    assert (result.inputs, result.scored, result.failed, result.clips) == (2, 2, 0, 4)
    assert result.manifest["run_id"] == result.run_id
    clips = mmbatch.read_clips(tmp_path / "out")
    assert clips.num_rows == 4 and set(clips.column("run_date").to_pylist()) == {DAY}
    assert sorted(set(clips.column("video_id").to_pylist())) == ["a", "b"]
    some = mmbatch.read_clips(tmp_path / "out", [DAY, DAY + dt.timedelta(days=1)], columns=["clip_id", "valence"])
    assert some.column_names == ["clip_id", "valence", "run_date"] and some.num_rows == 4
    assert mmbatch.read_clips(tmp_path / "out", "2026-11-28").num_rows == 0


def test_a_mistake_is_raised_with_its_exit_code(tmp_path):
    import mmbatch
    from mmbatch.errors import InputError

    with pytest.raises(InputError, match="input not found") as err:
        mmbatch.score(tmp_path / "nope", tmp_path / "out", {"models": {"text": {"task": "text_zero_shot",
                                                                                 "source": "tiny:roberta-sentiment"}}})
    assert err.value.exit_code == 2


def test_import_mmbatch_loads_nothing_heavy():
    code = "import sys, mmbatch; mmbatch.read_clips; print(sorted(m for m in ('ray', 'torch', 'av') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
