"""Timed transcripts through the whole job, scored by the real packaged sentence-embedding model."""

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq

from mmbatch.config import load_config
from mmbatch.pipeline.run import run_pipeline
from mmbatch.schema import partitioning
from mmbatch.synth import write_video, write_vtt

REPO = Path(__file__).resolve().parent.parent


def test_vtt_cues_change_sentiment_clip_by_clip(ray_cluster, tmp_path):
    src = tmp_path / "in"
    write_video(src / "talk.mp4", seconds=16.0)
    write_vtt(src / "talk.vtt", [
        (0.5, 3.5, "I absolutely love this, what a wonderful surprise."),
        (4.5, 7.5, "The report lists the quarterly figures by region."),
        (8.5, 11.5, "This is awful, I am so angry and disappointed."),
        (11.8, 13.5, "Thank you, this made me really happy!"),  # crosses the 12 s boundary
    ])
    config = load_config(REPO / "pipelines" / "demo.yaml")  # 4 s clips
    run_pipeline(config, str(src), str(tmp_path / "out"), dt.date(2026, 11, 27))
    clips = pq.read_table(tmp_path / "out" / "clips", partitioning=partitioning()).to_pandas()
    clips = clips.sort_values("clip_index").set_index("clip_index")
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


def test_clip_without_cue_has_no_text(ray_cluster, tmp_path):
    src = tmp_path / "in"
    write_video(src / "quiet.mp4", seconds=8.0)
    write_vtt(src / "quiet.vtt", [(0.5, 3.0, "Just one line at the start.")])
    config = load_config(REPO / "pipelines" / "demo.yaml")
    run_pipeline(config, str(src), str(tmp_path / "out"), dt.date(2026, 11, 27))
    clips = pq.read_table(tmp_path / "out" / "clips", partitioning=partitioning()).to_pandas().sort_values("clip_index")
    assert clips["has_text"].tolist() == [True, False]
    assert clips["transcript"].isna().tolist() == [False, True] and clips["text_valence"].isna().tolist() == [False, True]
    assert clips["text_embedding"].iloc[1] is None
