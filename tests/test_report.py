"""The run report: a self-contained HTML page whose numbers and plots match the night."""

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from nights import DAY, Night, clip_rows, refs

REPO = Path(__file__).resolve().parent.parent


def test_report_has_the_plots_and_the_right_numbers(tmp_path):
    def rows(vid, n, valence, **kw):
        b = clip_rows(vid, n, **kw)
        b["valence"] = np.linspace(valence - 0.1, valence + 0.1, n).astype(np.float32)
        b["sentiment"] = np.array(["negative" if valence < 0 else "positive"] * n)
        return b

    Night(tmp_path, refs("a", "b")).write(rows("a", 2, 0.5), rows("b", 2, -0.5)).commit()
    day2 = DAY + dt.timedelta(days=1)
    Night(tmp_path, refs("a", "b", "c", "bad"), day=day2).write(
        rows("a", 3, 0.6), rows("b", 2, -0.8), rows("c", 4, 0.1), clip_rows("bad", 1, "error", first=-1)).commit()
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "report.py"), "--output", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    page = Path(r.stdout.split("report: ", 1)[1].strip())
    assert page == tmp_path / "_runs" / f"{day2}_fp1.html"
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "http" not in text.replace("http://www.w3.org/2000/svg", "")
    titles = re.findall(r"<svg [^>]*><title>([^<]+)</title>", text)
    assert titles == ["failed videos by reason", "clips by sentiment", "distribution of clip valence",
                      "valence over time, b", "valence over time, a", "modality agreement, %"]
    assert "<td>inputs</td><td>4</td>" in text and "<td>scored</td><td>3</td>" in text
    assert "<td>failed</td><td>1</td>" in text and "decode: boom" in text
    assert "Change from the previous night (2026-11-27)" in text
    assert "<td>inputs</td><td>2</td><td>4</td><td>2</td>" in text  # 2 → 4 inputs
    assert "(mean valence -0.80)" in text and "(mean valence +0.60)" in text
    missing = subprocess.run([sys.executable, str(REPO / "jobs" / "report.py"), "--output", str(tmp_path),
                              "--run-date", "2020-01-01"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no committed run for 2020-01-01" in missing.stderr


def test_records_that_are_not_run_records_are_named_and_skipped(tmp_path, caplog):
    """A stray copy (`latest.json`), a record with the wrong fields and a name that is no run id:
    each is skipped with a warning naming it; the report of the night still reads."""
    import json
    import logging

    from mmbatch.readers.report import night_data

    Night(tmp_path, refs("a")).write(clip_rows("a", 1)).commit()
    runs = tmp_path / "_runs"
    (runs / "latest.json").write_text((runs / "2026-11-27_fp1.json").read_text())
    (runs / "2026-11-28_fp1.json").write_text(json.dumps({"run_id": "2026-11-28_fp1", "counts": {}}))
    (runs / "2026-11-26_fp1.json").write_text((runs / "2026-11-27_fp1.json").read_text())  # a copy under a run id
    with caplog.at_level(logging.WARNING):
        data = night_data(str(tmp_path))
    assert data["manifest"]["run_id"] == "2026-11-27_fp1" and data["previous"] is None
    for name, why in (("latest.json", "not a run record"), ("2026-11-28_fp1.json", "field 'run_date' missing"),
                      ("2026-11-26_fp1.json", "a stray copy")):
        assert any(name in r.getMessage() and why in r.getMessage() for r in caplog.records), (name, caplog.text)


def test_report_says_the_status_the_failed_and_slowest_videos_the_models_and_the_trend(tmp_path):
    """Night 2 fails 1 of 4 videos (25% > the default 20%): degraded, as the command's exit code
    says; its failed and slowest videos are listed, its models named, and both nights trended."""
    from mmbatch.readers.report import night_data, render

    def rows(vid, n, valence, **kw):
        b = clip_rows(vid, n, **kw)
        b["valence"] = np.full(n, valence, np.float32)
        return b

    Night(tmp_path, refs("a")).write(rows("a", 2, 0.5)).commit()
    day2 = DAY + dt.timedelta(days=1)
    night = Night(tmp_path, refs("a", "b", "c", "bad"), day=day2)
    night.write(rows("a", 3, 0.6), rows("b", 2, -0.8), rows("c", 4, 0.1), clip_rows("bad", 1, "error", first=-1))
    night.committer.commit(night.inputs, night.ledger.done, {}, {
        "config": {"models": {"text": {"task": "text_zero_shot", "source": "bundle:all-mpnet-base-v2",
                                       "revision": None}}, "run": {"max_failed_fraction": 0.2}},
        "model_identities": {"text": "bundle:all-mpnet-base-v2@e8c3b32e:abc"}})
    text = render(night_data(str(tmp_path)))
    assert "<b>committed, degraded</b> (exit code 3)" in text
    assert "1 of 4 videos failed (25% &gt; max-failed-fraction 20%)" in text
    assert "<h2>Failed videos</h2>" in text and "<td>bad</td><td>decode</td><td>boom</td>" in text
    assert "<h2>Slowest videos to decode</h2>" in text
    assert "<td>text</td><td>text_zero_shot</td><td>bundle:all-mpnet-base-v2</td>" in text
    assert "The last 2 nights" in text and "<td>2026-11-27</td><td>1</td><td>1</td>" in text
    assert ">0 s</text>" in text and ">10 s</text>" in text and ">15 s</text>" in text  # b's, a's last clip ends
    assert ">clips</text>" in text  # the histogram's count axis
    first = render(night_data(str(tmp_path), DAY))
    assert "committed (exit code 0)" in first and "The last" not in first
