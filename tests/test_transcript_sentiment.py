"""Timed transcripts through the whole job, scored by the real packaged sentence-embedding model."""

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmbatch.config import load_config
from mmbatch.pipeline.run import run_pipeline
from mmbatch.schema import partitioning
from mmbatch.synth import write_video, write_vtt

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def night(ray_cluster, tmp_path_factory):
    """One night of demo.yaml (4 s clips) over both videos and their cues; its clips by video."""
    src = tmp_path_factory.mktemp("in")
    write_video(src / "talk.mp4", seconds=16.0)
    write_vtt(src / "talk.vtt", [
        (0.5, 3.5, "I absolutely love this, what a wonderful surprise."),
        (4.5, 7.5, "The report lists the quarterly figures by region."),
        (8.5, 11.5, "This is awful, I am so angry and disappointed."),
        (11.8, 13.5, "Thank you, this made me really happy!"),  # crosses the 12 s boundary
    ])
    write_video(src / "quiet.mp4", seconds=8.0)
    write_vtt(src / "quiet.vtt", [(0.5, 3.0, "Just one line at the start.")])
    out = src.parent / "out"
    run_pipeline(load_config(REPO / "pipelines" / "demo.yaml"), str(src), str(out), dt.date(2026, 11, 27))
    clips = pq.read_table(out / "clips", partitioning=partitioning()).to_pandas()
    return {vid: group.sort_values("clip_index") for vid, group in clips.groupby("video_id")}


def test_vtt_cues_change_sentiment_clip_by_clip(night):
    clips = night["talk"].set_index("clip_index")
    assert clips["transcript"].tolist() == [
        "I absolutely love this, what a wonderful surprise.",
        "The report lists the quarterly figures by region.",
        "This is awful, I am so angry and disappointed. Thank you, this made me really happy!",
        "Thank you, this made me really happy!",
    ]
    tv = clips["text_valence"]
    assert tv[0] > 0.3 and abs(tv[1]) < 0.3 and tv[3] > 0.3
    assert clips["has_text"].all()
    assert clips.loc[0, "sentiment"] == "positive" and clips.loc[1, "sentiment"] == "neutral"


def test_clip_without_cue_has_no_text(night):
    clips = night["quiet"]
    assert clips["has_text"].tolist() == [True, False]
    assert clips["transcript"].isna().tolist() == [False, True] and clips["text_valence"].isna().tolist() == [False, True]
    assert clips["text_embedding"].iloc[1] is None
