"""Training the fusion head on labels: it beats zero-shot when the labels are learnable, it is
saved with what it was trained on, a pipeline scores with it, and a mismatched head is refused."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from nights import DAY, Night, clip_rows, refs

from mmbatch.config import FusionConfig
from mmbatch.fusion.training import (
    TrainConfig,
    evaluate,
    join_labels,
    load_clips,
    metrics,
    predict,
    read_labels,
    split_by_video,
    train_fusion,
)
from mmbatch.schema import EmbeddingDims

REPO = Path(__file__).resolve().parent.parent
DIMS = EmbeddingDims(8, 0, 16)
METRIC_KEYS = {"n", "acc2_has0", "acc2_non0", "f1", "acc3", "acc7", "mae", "corr"}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """60 videos x 5 clips: the label is a function of the text embedding plus noise; vision is noise,
    and the pipeline's zero-shot valence knows nothing of it."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    w = rng.normal(size=16)
    ids = [f"v{i:02d}" for i in range(60)]
    night = Night(root, refs(*ids), dims=DIMS)
    labels = []
    for vid in ids:
        b = clip_rows(vid, 5, dims=DIMS)
        text = rng.normal(size=(5, 16)).astype(np.float32)
        b["text_embedding"] = text
        b["vision_embedding"] = rng.normal(size=(5, 8)).astype(np.float32)
        b["valence"] = rng.uniform(-1, 1, 5).astype(np.float32)  # zero-shot: uninformative
        night.write(b)
        score = np.tanh(text @ w / 2) * 3 + rng.normal(scale=0.3, size=5)
        labels += [{"video_id": vid, "clip_id": f"{vid}-{i}", "label": float(np.clip(s, -3, 3))} for i, s in enumerate(score)]
    night.commit()
    pd.DataFrame(labels).to_csv(root / "labels.csv", index=False)
    return root


def test_training_beats_zero_shot_on_held_out_videos(labelled):
    clips = load_clips(str(labelled))
    labels = read_labels(str(labelled / "labels.csv"), (-3, 3))
    joined, report = join_labels(clips, labels)
    assert report == {"labels": 300, "matched": 300, "unmatched": 0, "videos": 60}
    joined["split"] = split_by_video(joined, seed=1)
    sides = joined.groupby("video_id")["split"].nunique()
    assert (sides == 1).all() and set(joined["split"]) == {"train", "val", "test"}  # no video on two sides
    dims = {"vision": 8, "audio": 0, "text": 16}
    model, history = train_fusion(joined, dims, TrainConfig(epochs=80, patience=15, seed=1))
    result = evaluate(model, joined, dims)
    for key in ("trained", "zero_shot"):
        assert set(result[key]) == METRIC_KEYS
    assert set(result["ablations"]) == {"vision", "text"}
    trained, zero = result["trained"], result["zero_shot"]
    assert trained["acc2_has0"] > zero["acc2_has0"] + 0.15 and trained["corr"] > 0.6 > zero["corr"] + 0.4
    assert trained["mae"] < zero["mae"]
    assert result["ablations"]["text"]["corr"] > result["ablations"]["vision"]["corr"] + 0.3  # text carries it
    test = joined[joined["split"] == "test"]
    valence, probs = predict(model, test, dims)  # what evaluate scored, per clip
    assert metrics(valence, probs, test["valence"].to_numpy(), test["target"].to_numpy()) == trained


def test_labels_by_time_overlap_and_bad_labels(labelled, tmp_path):
    clips = load_clips(str(labelled))
    pd.DataFrame({"video_id": ["v00", "v00", "v01"], "start_s": [0.5, 11.0, 100.0], "end_s": [4.0, 14.0, 101.0],
                  "label": ["positive", "negative", "neutral"]}).to_csv(tmp_path / "timed.csv", index=False)
    joined, report = join_labels(clips, read_labels(str(tmp_path / "timed.csv")))
    assert sorted(joined["clip_id"]) == ["v00-0", "v00-2"] and report["unmatched"] == 1
    assert joined.set_index("clip_id")["target"].to_dict() == {"v00-0": 2, "v00-2": 0}
    pd.DataFrame({"video_id": ["v00"], "clip_id": ["v00-0"], "label": ["meh"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"labels must be negative\|neutral\|positive or numbers; found \['meh'\]"):
        read_labels(str(tmp_path / "bad.csv"))
    assert metrics(np.array([0.5, -0.5]), np.array([[0, 0, 1], [1, 0, 0]]), np.array([1.0, -1.0]),
                   np.array([2, 0]))["acc3"] == 1.0


def test_train_save_score_and_refuse_a_mismatched_head(colocated_night, tiny_config, sample_videos, tmp_path):


    import pyarrow.parquet as pq

    from mmbatch.encoders.inspect import inspect_models
    from mmbatch.errors import ModelLoadError
    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.schema import partitioning

    out = colocated_night[0]  # tiny.yaml's night of the sample videos (and an unreadable file: no clips)
    clips = pq.read_table(out / "clips", partitioning=partitioning()).to_pandas()
    rng = np.random.default_rng(0)
    pd.DataFrame({"video_id": clips["video_id"], "clip_id": clips["clip_id"],
                  "label": rng.choice(["negative", "neutral", "positive"], len(clips))}).to_csv(tmp_path / "l.csv",
                                                                                                  index=False)
    head = tmp_path / "head"
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "train_fusion.py"), "--clips", str(out), "--labels",
                        str(tmp_path / "l.csv"), "--out", str(head), "--epochs", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"labels: {len(clips)} of {len(clips)} matched clips of 3 videos" in r.stdout
    saved = json.loads((head / "config.json").read_text())
    assert saved["encoders"] == {"vision": "tiny:clip@v3", "audio": "tiny:wav2vec2-er@v3", "text": "tiny:roberta-sentiment@v3"}
    assert set(json.loads((head / "metrics.json").read_text())) >= {"trained", "zero_shot", "ablations", "labels"}
    assert "| trained |" in (head / "metrics.md").read_text()
    fitted = yaml.safe_load((head / "reliability.yaml").read_text())  # zero-shot fusion's fitted trust
    assert set(FusionConfig(**fitted["fusion"]).reliability) == {"vision", "audio", "text"}
    assert "zero-shot alternative" in r.stdout and "reliability:" in r.stdout

    trained = tiny_config.model_copy(update={"fusion": tiny_config.fusion.model_copy(
        update={"mode": "trained", "checkpoint": str(head)})})
    result = run_pipeline(trained, str(sample_videos), str(tmp_path / "scores2"), DAY)
    rescored = pq.read_table(tmp_path / "scores2" / "clips", partitioning=partitioning()).to_pandas()
    assert result.scored == 3 and not np.allclose(np.sort(rescored["valence"]), np.sort(clips["valence"]))

    saved["encoders"]["text"] = "content:0123456789abcdef"
    (head / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ModelLoadError, match=r"was trained on other encoders \(text: trained on content:0123456789abcdef, "
                                             r"configured tiny:roberta-sentiment@v3\)"):
        inspect_models(trained)

