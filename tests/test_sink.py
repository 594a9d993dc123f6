"""RunWriter without Ray: deterministic files, the ledger, reconciliation, stale-file pruning."""

import datetime as dt
import json

import numpy as np
import pyarrow.parquet as pq

from mmbatch.schema import EmbeddingDims, clips_schema, partitioning
from mmbatch.sink import RunWriter, clip_file_name
from mmbatch.sources import VideoRef

DIMS = EmbeddingDims(4, 3, 2)
DAY = dt.date(2026, 11, 27)


def rows(video_id, n, status="ok", clip_index=None):
    idx = np.arange(n, dtype=np.int32) if clip_index is None else np.array(clip_index, dtype=np.int32)
    b = {
        "video_id": np.array([video_id] * n), "uri": np.array([f"/in/{video_id}.mp4"] * n),
        "etag": np.array(["e"] * n), "size_bytes": np.array([10] * n), "clip_index": idx,
        "clip_id": np.array([f"{video_id}-{i}" for i in idx]), "start_s": idx * 5.0, "end_s": idx * 5.0 + 5,
        "n_rows": np.array([n] * n, dtype=np.int32), "duration_s": np.array([5.0 * n] * n),
        "status": np.array([status] * n), "error_stage": np.array(["" if status == "ok" else "decode"] * n),
        "error": np.array(["" if status == "ok" else "boom"] * n), "decode_seconds": np.array([0.5] * n),
        "transcript": np.array(["hi"] * n), "sentiment": np.array(["positive" if status == "ok" else ""] * n),
        "p_negative": np.full(n, 0.1, np.float32), "p_neutral": np.full(n, 0.2, np.float32),
        "p_positive": np.full(n, 0.7, np.float32), "valence": np.full(n, 0.6, np.float32),
        "fused_embedding": np.ones((n, 9), np.float32),
    }
    for m, d in (("vision", 4), ("audio", 3), ("text", 2)):
        b[f"has_{m}"] = np.array([m != "audio"] * n)
        b[f"{m}_valence"] = np.full(n, 0.5 if m != "audio" else np.nan, np.float32)
        b[f"fusion_weight_{m}"] = np.full(n, 0.5 if m != "audio" else np.nan, np.float32)
        b[f"{m}_embedding"] = np.ones((n, d), np.float32)
    return b


def writer(out, fp="fp1"):
    return RunWriter(str(out), None, DAY, fp, DIMS, "{}", ledger_flush_videos=1)


def refs(*ids):
    return [VideoRef(i, f"/in/{i}.mp4", 10, "e") for i in ids]


def test_video_written_when_complete_and_nulls_for_missing(tmp_path):
    w = writer(tmp_path)
    b = rows("a", 2)
    w.add_batch({k: v[:1] for k, v in b.items()})
    assert not (tmp_path / "clips").exists()  # incomplete video: nothing written yet
    w.add_batch({k: v[1:] for k, v in b.items()})
    path = tmp_path / "clips" / "run_date=2026-11-27" / clip_file_name("a", "fp1")
    t = pq.read_table(tmp_path / "clips", partitioning=partitioning())
    assert t.schema.remove_metadata() == clips_schema(DIMS)
    assert pq.read_schema(path).names == [n for n in clips_schema(DIMS).names if n != "run_date"]
    rec = t.to_pylist()[0]
    assert rec["audio_embedding"] is None and rec["audio_valence"] is None and rec["fusion_weight_audio"] is None
    assert rec["vision_embedding"] == [1.0] * 4 and rec["run_date"] == DAY


def test_commit_reconciles_and_marks_lost_videos(tmp_path):
    w = writer(tmp_path)
    w.add_batch(rows("a", 2))
    w.add_batch(rows("bad", 1, status="error", clip_index=[-1]))
    manifest = w.commit(refs("a", "bad", "lost"), {}, {})
    videos = pq.read_table(tmp_path / "videos", partitioning=partitioning()).to_pylist()
    by_id = {v["video_id"]: v for v in videos}
    assert [v["video_id"] for v in videos] == ["a", "bad", "lost"]
    assert by_id["a"]["status"] == "ok" and by_id["a"]["n_clips"] == 2 and by_id["a"]["decode_seconds"] == 1.0
    assert (by_id["bad"]["status"], by_id["bad"]["error_stage"], by_id["bad"]["error"]) == ("error", "decode", "boom")
    assert by_id["lost"]["status"] == "error" and by_id["lost"]["error_stage"] == "reconcile"
    assert manifest["counts"] == {"inputs": 3, "scored": 1, "failed": 2, "skipped": 0, "clips": 2,
                                  "stale_clip_files_removed": 0}
    assert json.loads((tmp_path / "_runs" / f"{w.run_id}.json").read_text())["run_id"] == w.run_id
    assert not (tmp_path / "_staging" / w.run_id).exists()


def test_all_clips_failed_means_video_failed_without_clip_rows(tmp_path):
    w = writer(tmp_path)
    w.add_batch(rows("x", 2, status="error"))
    w.commit(refs("x"), {}, {})
    assert not list((tmp_path / "clips").rglob("*.parquet"))
    v = pq.read_table(tmp_path / "videos").to_pylist()[0]
    assert (v["status"], v["n_clips"], v["error"]) == ("error", 0, "boom")


def test_ledger_resumes_and_rerun_overwrites(tmp_path):
    w = writer(tmp_path)
    w.add_batch(rows("a", 2))  # flushed to the ledger (flush every video); then the "crash"
    resumed = writer(tmp_path)
    assert set(resumed.load_ledger()) == {"a"}
    resumed.add_batch(rows("b", 1))
    resumed.commit(refs("a", "b"), {}, {})
    files = sorted(p.name for p in (tmp_path / "clips").rglob("*.parquet"))
    assert files == sorted([clip_file_name("a", "fp1"), clip_file_name("b", "fp1")])
    assert pq.read_table(tmp_path / "videos").num_rows == 2


def test_new_fingerprint_prunes_old_clip_files(tmp_path):
    w = writer(tmp_path, "fp1")
    w.add_batch(rows("a", 2))
    w.commit(refs("a"), {}, {})
    w2 = writer(tmp_path, "fp2")
    w2.add_batch(rows("a", 2))
    manifest = w2.commit(refs("a"), {}, {})
    assert [p.name for p in (tmp_path / "clips").rglob("*.parquet")] == [clip_file_name("a", "fp2")]
    assert manifest["counts"]["stale_clip_files_removed"] == 1
