"""End to end on a local Ray: the whole graph on the tiny preset, written to Parquet, rerun."""

import datetime as dt
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmbatch.decode.backend import probe
from mmbatch.decode.planner import plan_fixed_windows
from mmbatch.encoders.inspect import inspect_models
from mmbatch.pipeline.run import run_pipeline
from mmbatch.schema import CLIPS_SCHEMA, VIDEOS_SCHEMA, partitioning
from mmbatch.synth import write_video

DAY1, DAY2 = dt.date(2026, 11, 27), dt.date(2026, 11, 28)


def read(root, table, day=None):
    t = pq.read_table(root / table, partitioning=partitioning())
    if day is not None:
        t = t.filter(t["run_date"] == np.datetime64(day.isoformat()))
    return t


@pytest.fixture(scope="module")
def inputs(sample_videos, tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    shutil.copytree(sample_videos, root, dirs_exist_ok=True)
    (root / "broken.mp4").write_bytes(b"")
    return root


def placed(config, placement: str):
    return config.model_copy(update={"encoders": config.encoders.model_copy(update={"placement": placement})})


def with_pools(config, names: tuple[str, ...], **pool):
    """`config` with the pools of the models `names` changed by `pool` (e.g. num_gpus=0.5)."""
    models = config.models
    changed = {n: getattr(models, n).model_copy(update={"pool": getattr(models, n).pool.model_copy(update=pool)})
               for n in names}
    return config.model_copy(update={"models": models.model_copy(update=changed)})


def gpu_shared(config, share: float):
    """Vision and audio pools each asking for `share` of a GPU (the session's Ray declares one)."""
    return with_pools(config, ("vision", "audio"), num_gpus=share)


@pytest.fixture(scope="module")
def first_run(ray_cluster, tiny_config, inputs, tmp_path_factory):
    """One pool per model (the production default; tiny.yaml itself colocates them), vision and
    audio sharing the one GPU Ray is told it has, half each: the GPU pool path, with shared fractions."""
    out = tmp_path_factory.mktemp("out")
    result = run_pipeline(gpu_shared(placed(tiny_config, "per_modality"), 0.5), str(inputs), str(out), DAY1)
    return out, result


def test_schema_counts_and_scores(first_run, tiny_config, inputs):
    out, result = first_run
    clips = read(out, "clips")
    dims = inspect_models(tiny_config)
    assert clips.schema.remove_metadata() == CLIPS_SCHEMA
    assert read(out, "videos").schema.remove_metadata() == VIDEOS_SCHEMA

    c = tiny_config.clips
    expected = {}
    for vid, name in (("a/long one", "a/long one.mp4"), ("b/médio", "b/médio.MP4"), ("short", "short.mkv")):
        expected[vid] = len(plan_fixed_windows(probe(str(inputs / name)).duration_s, c.window_s, c.stride_s, c.min_clip_s))
    assert expected == {"a/long one": 3, "b/médio": 2, "short": 1}
    df = clips.to_pandas()
    assert df.groupby("video_id").size().to_dict() == expected
    assert df["clip_id"].is_unique and (df["status"] == "ok").all()

    p = df[["p_negative", "p_neutral", "p_positive"]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(df["valence"], df["p_positive"] - df["p_negative"], atol=1e-6)
    assert set(df["sentiment"]) <= {"negative", "neutral", "positive"}
    for col, dim in (("vision_embedding", dims.vision), ("text_embedding", dims.text), ("fused_embedding", dims.fused)):
        assert {len(e) for e in df[col] if e is not None} == {dim}
    # "short" has no audio track: scored without audio, null audio columns.
    short = df[df["video_id"] == "short"].iloc[0]
    assert not short["has_audio"] and short["audio_embedding"] is None and np.isnan(short["audio_valence"])
    assert df[df["video_id"] != "short"]["has_audio"].all() and df["has_video"].all()
    w = df[["fusion_weight_vision", "fusion_weight_audio", "fusion_weight_text"]].fillna(0).sum(1)
    np.testing.assert_allclose(w, 1.0, rtol=1e-5)


def test_videos_table_has_every_input_once(first_run):
    out, result = first_run
    videos = read(out, "videos").to_pandas().set_index("video_id")
    assert sorted(videos.index) == ["a/long one", "b/médio", "broken", "short"]
    assert videos.loc["broken", ["status", "error_stage", "error"]].tolist() == ["error", "decode", "empty file (0 bytes)"]
    assert videos.loc["a/long one", "n_clips"] == 3 and videos.loc["a/long one", "status"] == "ok"
    assert (result.inputs, result.scored, result.failed, result.skipped, result.clips) == (4, 3, 1, 0, 6)
    assert result.manifest["counts"]["inputs"] == 4
    timings = result.manifest["timings"]
    operators = [s["operator"] for s in timings["stages"]]
    for stage in ("split", "decode", "vision", "speech", "audio", "text", "fusion"):  # each named after its stage
        assert any(f"MapBatches({stage})" in o for o in operators), operators
    assert operators[-1] == "Write" and all(s["wall_seconds"] is not None for s in timings["stages"])
    report = (out / "_runs" / f"{result.run_id}.html").read_text()  # written with every commit
    assert result.manifest["report"].endswith(f"{result.run_id}.html") and "busy seconds by stage" in report
    assert timings["decode_seconds"] > 0
    # each actor pool's busy share over the graph's run, the busiest named in the report
    shares = timings["pool_busy_share"]
    assert sorted(shares) == ["audio", "decode", "fusion", "speech", "text", "vision"] and shares["decode"] > 0
    assert 0 < timings["execution_seconds"] < timings["wall_seconds"]
    assert f"<b>{max(shares, key=shares.get)}</b> was the busiest" in report
    assert result.manifest["versions"]["ray"].startswith("2.60")


def test_colocated_encoders_score_the_same(first_run, colocated_night):
    """One actor running every model (tiny.yaml's placement) gives the per-modality pools' scores,
    under the same fingerprint (placement is operational), as one operator named after it."""
    out, per_modality = first_run
    colocated_out, result = colocated_night
    assert result.run_id == per_modality.run_id
    operators = [s["operator"] for s in result.manifest["timings"]["stages"]]
    assert "MapBatches(encoders)" in operators and not any("vision" in o for o in operators), operators
    cols = ["clip_id", "valence", "vision_valence", "audio_valence", "text_valence", "transcript", "sentiment"]
    a = read(out, "clips", DAY1).to_pandas()[cols].sort_values("clip_id").reset_index(drop=True)
    b = read(colocated_out, "clips", DAY1).to_pandas()[cols].sort_values("clip_id").reset_index(drop=True)
    assert a["clip_id"].tolist() == b["clip_id"].tolist() and a["transcript"].tolist() == b["transcript"].tolist()
    for col in ("valence", "vision_valence", "audio_valence", "text_valence"):
        np.testing.assert_allclose(a[col], b[col], atol=1e-5, equal_nan=True)


def test_rerun_same_date_is_exactly_once(first_run, tiny_config, inputs):
    out, _ = first_run
    before = sorted(read(out, "clips", DAY1)["clip_id"].to_pylist())
    again = run_pipeline(tiny_config, str(inputs), str(out), DAY1)
    assert sorted(read(out, "clips", DAY1)["clip_id"].to_pylist()) == before
    assert read(out, "videos", DAY1).num_rows == 4
    assert (again.scored, again.failed, again.skipped) == (3, 1, 0)


def test_next_night_skips_scored_and_scores_new(first_run, tiny_config, inputs):
    out, _ = first_run
    write_video(inputs / "new.webm", seconds=2.0, codec="libvpx-vp9", audio_codec="libopus")
    result = run_pipeline(tiny_config, str(inputs), str(out), DAY2)
    videos = read(out, "videos", DAY2).to_pandas().set_index("video_id")
    assert videos["status"].to_dict() == {"a/long one": "skipped", "b/médio": "skipped", "broken": "error",
                                          "new": "ok", "short": "skipped"}
    assert read(out, "clips", DAY2)["video_id"].to_pylist() == ["new"]
    assert (result.scored, result.failed, result.skipped) == (1, 1, 3)


def test_pools_that_cannot_fit_fail_fast(ray_cluster, tiny_config, sample_videos, tmp_path):
    from mmbatch.errors import ConfigError

    cfg = with_pools(tiny_config, ("vision",), num_gpus=2)
    with pytest.raises(ConfigError, match="need at least 2 GPU .* cluster has 1"):
        run_pipeline(placed(cfg, "per_modality"), str(sample_videos), str(tmp_path), DAY1)
    enc = tiny_config.encoders  # colocated: the shared pool's resources are what count
    cfg = tiny_config.model_copy(update={"encoders": enc.model_copy(update={"pool": enc.pool.model_copy(
        update={"num_gpus": 2})})})
    with pytest.raises(ConfigError, match="need at least 2 GPU .* cluster has 1"):
        run_pipeline(cfg, str(sample_videos), str(tmp_path), DAY1)


def test_a_trained_head_scores_a_night_in_which_a_hung_decoder_fails_only_its_video(ray_cluster, tiny_config,
                                                                                     sample_videos, tmp_path):
    """One night serves both: the fusion head from a checkpoint scores every clip (its joint size,
    weights summing to 1), and a decoder stuck on one video is killed after decode.timeout_s, that
    video failed with the reason and the other scored."""
    from mmbatch.fusion.model import MultimodalFusionConfig, MultimodalFusionModel

    ckpt = tmp_path / "fusion"
    MultimodalFusionModel(MultimodalFusionConfig(vision_dim=32, audio_dim=32, text_dim=32, joint_dim=16,
                                                 num_heads=2)).save_pretrained(ckpt)
    src = tmp_path / "in"
    shutil.copytree(sample_videos / "b", src)  # médio: 7 s, two clips
    write_video(src / "stuck.mp4", seconds=2.0)
    cfg = tiny_config.model_copy(update={
        "fusion": tiny_config.fusion.model_copy(update={"mode": "trained", "checkpoint": str(ckpt)}),
        "decode": tiny_config.decode.model_copy(update={
            "backend": "mmbatch.decode.faults:StuckVideo", "fallback_backend": None, "timeout_s": 5.0})})
    result = run_pipeline(cfg, str(src), str(tmp_path / "out"), DAY1)
    assert (result.scored, result.failed, result.clips) == (1, 1, 2)
    videos = read(tmp_path / "out", "videos").to_pandas().set_index("video_id")
    assert videos.loc["médio", "status"] == "ok"
    assert videos.loc["stuck", ["status", "error_stage", "error"]].tolist() == [
        "error", "decode", "decode timed out after 5 s (decoder stuck)"]
    df = read(tmp_path / "out", "clips").to_pandas()
    df = df[df["status"] == "ok"]
    assert len(df) == 2 and {len(e) for e in df["fused_embedding"]} == {16}
    assert df["valence"].between(-1, 1).all()
    w = df[["fusion_weight_vision", "fusion_weight_audio", "fusion_weight_text"]].fillna(0).sum(1)
    np.testing.assert_allclose(w, 1.0, rtol=1e-5)


def test_columns_travel_only_to_the_stages_that_read_them(tiny_config):
    from mmbatch.config import ModelsConfig
    from mmbatch.output.writer import WriterArgs
    from mmbatch.pipeline.graph import stage_specs
    from mmbatch.schema import EmbeddingDims
    from mmbatch.stage import keep_after

    dims = EmbeddingDims(32, 32, 32)
    writer = WriterArgs("/tmp/x", None, "/tmp/x/s", "r", "f", dims, "{}")
    colocated = stage_specs(tiny_config, dims, writer)
    assert [s.name for s in colocated] == ["split", "decode", "encoders", "write"]
    after = keep_after(colocated)[2]
    assert {"frames", "waveform", "vision_probs"}.isdisjoint(after) and {"valence", "transcript"} <= after
    specs = stage_specs(placed(tiny_config, "per_modality"), dims, writer)
    names = [s.name for s in specs]
    assert names == ["split", "decode", "vision", "speech", "audio", "text", "fusion", "write"]
    after = dict(zip(names, keep_after(specs)))
    assert "frames" in after["decode"] and "frames" not in after["vision"]
    assert "waveform" in after["speech"] and "waveform" not in after["audio"]  # audio is its last reader
    assert "transcript" in after["speech"] and "vision_probs" in after["text"] and "vision_probs" not in after["fusion"]
    assert not {"uri", "etag", "size_bytes", "transcript_uri"} & after["text"]  # video-level fields stay with the driver
    assert after["write"] is None

    text_only = placed(tiny_config, "per_modality").model_copy(update={"models": ModelsConfig(text=tiny_config.models.text)})
    specs = stage_specs(text_only, EmbeddingDims(0, 0, 32), writer)
    assert [s.name for s in specs] == ["split", "decode", "transcripts", "text", "fusion", "write"]
    assert not {"frames", "waveform"} & keep_after(specs)[1]


def test_the_graph_refuses_a_stage_that_reads_what_nothing_upstream_writes(tiny_config, monkeypatch):
    """Declarations are checked at assembly: a broken one is a ConfigError naming the stage and
    the column, before any Ray work (and no stage is built to learn them)."""
    from mmbatch.errors import ConfigError
    from mmbatch.fusion.stage import FusionStage
    from mmbatch.pipeline.graph import stage_specs
    from mmbatch.schema import EmbeddingDims
    from mmbatch.stage import StageSpec

    dims = EmbeddingDims(32, 32, 32)
    monkeypatch.setattr(StageSpec, "build", lambda self: pytest.fail("a stage was built to read its declarations"))
    assert [s.name for s in stage_specs(placed(tiny_config, "per_modality"), dims)][-1] == "fusion"
    monkeypatch.setattr(FusionStage, "reads", (*FusionStage.reads, "mood_probs"))
    with pytest.raises(ConfigError, match=r"stage 'fusion' reads mood_probs, which no stage before it writes"):
        stage_specs(placed(tiny_config, "per_modality"), dims)
    with pytest.raises(ConfigError, match=r"stage 'encoders' reads mood_probs"):  # colocated: the members' union
        stage_specs(tiny_config, dims)


def test_progress_moves_before_the_nights_one_write(ray_cluster, tiny_config, tmp_path, monkeypatch):
    """Six one-clip videos: the write stage bundles them all into one file at the end, yet the
    progress line counts videos as fusion scores them."""
    from mmbatch.night import progress

    for i in range(6):
        write_video(tmp_path / "in" / f"v{i}.mp4", seconds=1.5, width=32, height=32, seed=i)
    reporters = []

    class Recorded(progress.ProgressReporter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            reporters.append(self)

    monkeypatch.setattr(progress, "ProgressReporter", Recorded)
    config = tiny_config.model_copy(update={
        "run": tiny_config.run.model_copy(update={"progress_interval_s": 0.05}),
        "fusion": tiny_config.fusion.model_copy(update={"pool": tiny_config.fusion.pool.model_copy(
            update={"batch_size": 1})})})
    result = run_pipeline(config, str(tmp_path / "in"), str(tmp_path / "out"), DAY1)
    assert result.scored == 6 and len(result.manifest["outputs"]["clip_files"]) == 1
    early = [line for line in reporters[0].lines if line.endswith("; 0 written") and not line.startswith("progress: 0/")]
    assert early, reporters[0].lines[-5:]
