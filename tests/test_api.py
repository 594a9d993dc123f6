"""The Python API from plain Python: `mmbatch.score` runs a night on the session's Ray (it attaches to
a Ray this process already started, as a notebook's would be) and `mmbatch.read_clips` reads it back;
a mistake is raised as a typed error with the command's exit code."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import pytest
from conftest import REPO
from watchers import lineage_receiver, pushgateway, scrape

from mmbatch.synth import write_video

DAY = dt.date(2026, 11, 27)


def test_a_night_from_python_is_read_back_and_watched(ray_cluster, tmp_path):
    """One night from plain Python, watched: its figures reach a real Pushgateway and its OpenLineage
    START and COMPLETE a receiver, with the night's datasets; then a mistake: FAIL, exit code 2, and
    the committed night's success time kept."""
    import yaml

    import mmbatch
    from mmbatch.errors import MmbatchError

    for name in ("a", "b"):
        write_video(tmp_path / "in" / f"{name}.mp4", seconds=6.0, width=64, height=48, seed=len(name))
    config = yaml.safe_load((REPO / "pipelines" / "tiny.yaml").read_text())
    with pushgateway() as gateway, lineage_receiver() as (lineage_url, events):
        config.setdefault("run", {}).update({"metrics": {"pushgateway": gateway, "grouping": {"pipeline": "api"}},
                                             "lineage": {"url": lineage_url, "job_name": "nightly-test"}})
        result = mmbatch.score(tmp_path / "in", tmp_path / "out", config, run_date="2026-11-27")
        assert (result.inputs, result.scored, result.failed, result.clips, result.exit_code) == (2, 2, 0, 4, 0)
        assert result.manifest["run_id"] == result.run_id
        pushed = scrape(gateway, ("pipeline",))
        assert {k: pushed[("mmbatch_night_" + k, ())] for k in ("clips", "exit_code", "running")} == \
            {"clips": 4, "exit_code": 0, "running": 0}
        assert pushed[("mmbatch_night_videos", (("outcome", "scored"),))] == 2
        assert pushed[("mmbatch_night_modality_failed_fraction", (("modality", "text"),))] == 0
        shares = {labels[0][1]: v for (name, labels), v in pushed.items() if name == "mmbatch_night_pool_busy_share"}
        assert set(shares) == set(result.manifest["timings"]["pool_busy_share"])
        assert pushed[("mmbatch_night_busiest_pool_share", ())] == max(shares.values())
        assert pushed[("mmbatch_night_clips_per_second", ())] == pytest.approx(4 / result.manifest["timings"]["wall_seconds"])
        succeeded = pushed[("mmbatch_night_last_success_timestamp_seconds", ())]
        assert abs(succeeded - time.time()) < 120
        assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
        assert {e["path"] for e in events} == {"/api/v1/lineage"} and len({e["run"]["runId"] for e in events}) == 1
        done = events[1]
        assert done["job"]["name"] == "nightly-test"
        assert done["run"]["facets"]["nominalTime"]["nominalStartTime"] == "2026-11-27T00:00:00Z"
        assert [(d["namespace"], d["name"]) for d in done["inputs"]] == [("file", str(tmp_path / "in"))]
        outputs = {d["name"]: d for d in done["outputs"]}
        assert set(outputs) == {str(tmp_path / "out" / "clips"), str(tmp_path / "out" / "videos")}
        clips_out = outputs[str(tmp_path / "out" / "clips")]
        assert clips_out["outputFacets"]["outputStatistics"]["rowCount"] == 4
        assert {"clip_id", "valence", "fused_embedding"} <= {f["name"] for f in clips_out["facets"]["schema"]["fields"]}

        held = tmp_path / "out" / "_locks" / "run_date=2026-11-28.json"  # another run holds the next night: exit 1
        held.parent.mkdir(exist_ok=True)
        held.write_text(json.dumps({"holder": "other", "host": "elsewhere", "pid": 1, "expires_at": time.time() + 600}))
        with pytest.raises(MmbatchError, match="another run holds") as err:
            mmbatch.score(tmp_path / "in", tmp_path / "out", config, run_date="2026-11-28")
        assert err.value.exit_code == 1
        assert events[-1]["eventType"] == "FAIL" and events[-1]["run"]["runId"] != done["run"]["runId"]
        assert events[-1]["run"]["facets"]["errorMessage"]["message"].startswith("exit 1: ")
        after = scrape(gateway, ("pipeline",))
        assert after[("mmbatch_night_exit_code", ())] == 1 and after[("mmbatch_night_running", ())] == 0
        assert after[("mmbatch_night_last_success_timestamp_seconds", ())] == succeeded  # what staleness alerts read
        assert after[("mmbatch_night_last_failure_timestamp_seconds", ())] >= succeeded
        assert after[("mmbatch_night_clips", ())] == 4  # the last committed night's figures stay

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
