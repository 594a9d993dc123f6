import numpy as np
import pytest

from mmbatch.config import FusionConfig
from mmbatch.fusion.stage import FusionStage, confidence, zero_shot_fuse
from mmbatch.schema import EmbeddingDims


def test_confidence_bounds():
    np.testing.assert_allclose(confidence(np.array([[1 / 3] * 3, [1.0, 0, 0]])), [0.0, 1.0], atol=1e-6)


def test_zero_shot_matches_formula():
    pv, pa, pt = np.array([[0.7, 0.2, 0.1]]), np.array([[0.2, 0.3, 0.5]]), np.array([[0.1, 0.1, 0.8]])
    present = {m: np.array([True]) for m in ("vision", "audio", "text")}
    fused, weights = zero_shot_fuse({"vision": pv, "audio": pa, "text": pt}, present)

    def conf(p):
        return 1 + (p * np.log(p)).sum() / np.log(3)

    c = np.array([conf(pv[0]), conf(pa[0]), conf(pt[0])])
    w = c / c.sum()
    np.testing.assert_allclose([weights["vision"][0], weights["audio"][0], weights["text"][0]], w, rtol=1e-9)
    np.testing.assert_allclose(fused[0], w[0] * pv[0] + w[1] * pa[0] + w[2] * pt[0], rtol=1e-9)
    assert sum(weights[m][0] for m in weights) == pytest.approx(1.0)


def test_missing_modality_gets_no_weight_and_uniform_falls_back_to_equal():
    p = {"vision": np.array([[1 / 3] * 3]), "audio": np.array([[np.nan] * 3]), "text": np.array([[1 / 3] * 3])}
    present = {"vision": np.array([True]), "audio": np.array([False]), "text": np.array([True])}
    fused, w = zero_shot_fuse(p, present)
    assert np.isnan(w["audio"][0]) and w["vision"][0] == pytest.approx(0.5) and w["text"][0] == pytest.approx(0.5)
    np.testing.assert_allclose(fused[0], [1 / 3] * 3)


def batch(n=3, status=("ok", "ok", "ok")):
    rng = np.random.default_rng(0)
    b = {"video_id": np.array(["v"] * n), "status": np.array(status), "error_stage": np.array([""] * n),
         "error": np.array([""] * n)}
    for m, dim in (("vision", 4), ("audio", 3), ("text", 2)):
        p = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
        b[f"{m}_probs"], b[f"{m}_embedding"] = p, rng.normal(size=(n, dim)).astype(np.float32)
        b[f"has_{m}"] = np.array([True] * n)
    return b


def test_stage_outputs_consistent_scores():
    out = FusionStage(FusionConfig(), EmbeddingDims(4, 3, 2))(batch())
    total = out["p_negative"] + out["p_neutral"] + out["p_positive"]
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["valence"], out["p_positive"] - out["p_negative"], rtol=1e-6)
    w = out["fusion_weight_vision"] + out["fusion_weight_audio"] + out["fusion_weight_text"]
    np.testing.assert_allclose(w, 1.0, rtol=1e-6)
    assert out["fused_embedding"].shape == (3, 9)
    np.testing.assert_allclose(np.linalg.norm(out["fused_embedding"][:, :4], axis=1), 1.0, rtol=1e-6)


def test_masking_a_modality_equals_omitting_it():
    b = batch()
    b["has_audio"] = np.array([False] * 3)
    masked = FusionStage(FusionConfig(), EmbeddingDims(4, 3, 2))(b)
    b2 = batch()
    b2["audio_probs"][:] = np.nan
    b2["has_audio"] = np.array([False] * 3)
    omitted = FusionStage(FusionConfig(), EmbeddingDims(4, 3, 2))(b2)
    np.testing.assert_allclose(masked["p_positive"], omitted["p_positive"])
    assert np.isnan(masked["audio_valence"]).all() and np.isnan(masked["fusion_weight_audio"]).all()
    assert (masked["fused_embedding"][:, 4:7] == 0).all()


def test_clip_without_any_modality_is_an_error_row():
    b = batch(status=("ok", "ok", "error"))
    for m in ("vision", "audio", "text"):
        b[f"has_{m}"] = np.array([True, False, False])
    out = FusionStage(FusionConfig(), EmbeddingDims(4, 3, 2))(b)
    assert list(out["status"]) == ["ok", "error", "error"]
    assert out["error_stage"][1] == "fusion" and "no modality" in out["error"][1]
    assert np.isnan(out["valence"][1]) and out["sentiment"][1] == ""


# -- the trainable fusion model -------------------------------------------------------------
import torch  # noqa: E402

from mmbatch.fusion.model import MultimodalFusionConfig, MultimodalFusionModel  # noqa: E402


def fusion_model(**kw):
    torch.manual_seed(0)
    cfg = MultimodalFusionConfig(vision_dim=4, audio_dim=3, text_dim=2, joint_dim=8, num_heads=2, dropout=0.0, **kw)
    return MultimodalFusionModel(cfg).eval()


def inputs(n=5):
    g = torch.Generator().manual_seed(1)
    return {"vision": torch.randn(n, 4, generator=g), "audio": torch.randn(n, 3, generator=g),
            "text": torch.randn(n, 2, generator=g)}


def test_saved_and_reloaded_model_gives_identical_outputs(tmp_path):
    model = fusion_model()
    model.save_pretrained(tmp_path)
    again = MultimodalFusionModel.from_pretrained(tmp_path).eval()
    a, b = model(**inputs()), again(**inputs())
    for field in ("logits", "valence", "fused_embedding", "modality_weights"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert again.config.joint_dim == 8 and again.config.model_type == "mmbatch_fusion"


def test_masking_equals_omitting_and_weights_sum_to_one():
    model = fusion_model()
    x = inputs()
    present = torch.tensor([[True, False, True]] * 5)
    masked = model(**x, present=present)
    omitted = model(vision=x["vision"], text=x["text"])
    torch.testing.assert_close(masked.logits, omitted.logits)
    torch.testing.assert_close(masked.modality_weights.sum(1), torch.ones(5))
    assert (masked.modality_weights[:, 1] == 0).all()
    assert (masked.valence.abs() <= 1).all()
    torch.testing.assert_close(masked.probs.sum(1), torch.ones(5))


def test_pooling_over_frames_respects_the_mask():
    model = fusion_model(pooling="max")
    frames = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]] * 2, dtype=torch.bool)
    garbage = frames.clone()
    garbage[:, 3:] = 100.0
    a = model(vision=frames, vision_mask=mask)
    b = model(vision=garbage, vision_mask=mask)
    torch.testing.assert_close(a.logits, b.logits)


def test_stage_uses_trained_checkpoint(tmp_path):
    fusion_model().save_pretrained(tmp_path)
    cfg = FusionConfig(mode="trained", checkpoint=str(tmp_path))
    out = FusionStage(cfg, EmbeddingDims(4, 3, 2, joint=8))(batch())
    assert out["fused_embedding"].shape == (3, 8)
    np.testing.assert_allclose(out["p_negative"] + out["p_neutral"] + out["p_positive"], 1.0, rtol=1e-5)
    w = out["fusion_weight_vision"] + out["fusion_weight_audio"] + out["fusion_weight_text"]
    np.testing.assert_allclose(w, 1.0, rtol=1e-5)


def test_trained_mode_needs_a_checkpoint():
    from mmbatch.config import parse_config
    from mmbatch.errors import ConfigError

    with pytest.raises(ConfigError, match="fusion.checkpoint is required"):
        parse_config({"models": {"text": {"task": "text_classification", "source": "x"}}, "fusion": {"mode": "trained"}})


def test_a_head_trained_before_the_face_modality_still_loads_and_leaves_faces_out(tmp_path):
    """A config.json of before (no `modalities`, no face_dim) keeps its three tokens; faces present
    in the clips get no weight from it."""
    import json

    from mmbatch.fusion.model import MultimodalFusionModel

    fusion_model().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in saved.items()
                                                      if k not in ("modalities", "face_dim")}))
    assert MultimodalFusionModel.from_pretrained(tmp_path).modality_embedding.shape == (3, 8)
    b = batch()
    b["face_probs"], b["face_embedding"] = np.full((3, 3), 1 / 3, np.float32), np.ones((3, 5), np.float32)
    b["has_face"] = np.ones(3, bool)
    out = FusionStage(FusionConfig(mode="trained", checkpoint=str(tmp_path)), EmbeddingDims(4, 3, 2, 5, joint=8))(b)
    assert np.isnan(out["fusion_weight_face"]).all() and list(out["status"]) == ["ok"] * 3
    np.testing.assert_allclose(out["fusion_weight_vision"] + out["fusion_weight_audio"] + out["fusion_weight_text"], 1.0,
                               rtol=1e-5)
    assert out["face_valence"] == pytest.approx([0.0] * 3, abs=1e-6)  # its own valence is still reported


def test_reliability_scales_each_confidence_and_zero_leaves_a_modality_out():
    pv, pt = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]), np.array([[0.1, 0.2, 0.7], [np.nan] * 3])
    present = {"vision": np.array([True, True]), "text": np.array([True, False])}
    fused, w = zero_shot_fuse({"vision": pv, "text": pt}, present, {"vision": 0.0})
    assert (w["vision"][0], w["text"][0]) == (0.0, 1.0)
    np.testing.assert_allclose(fused[0], pt[0])
    # a clip with only untrusted modalities keeps what it has rather than no score
    assert w["vision"][1] == 1.0 and np.isnan(w["text"][1])
    np.testing.assert_allclose(fused[1], pv[1])
    _, half = zero_shot_fuse({"vision": pv, "text": pt}, present, {"vision": 0.5})
    c_v, c_t = confidence(pv[:1])[0], confidence(pt[:1])[0]
    assert half["vision"][0] == pytest.approx(0.5 * c_v / (0.5 * c_v + c_t))
    with pytest.raises(ValueError, match="not scored modalities"):
        FusionConfig(reliability={"speech": 1.0})


def test_fitted_reliability_drops_a_confident_random_modality_and_the_stage_applies_it_exactly():
    """A text modality that tracks the labels and a vision modality that is confident and random:
    confidence weighting alone lets vision drown text; the fitted reliability gives it 0, and the
    stage's fused valence under it equals the offline re-weighting of what the stage wrote."""
    from mmbatch.fusion.reliability import correlation, fit_reliability, fused_valence

    rng = np.random.default_rng(3)
    n = 400
    truth = rng.choice([-1.0, 1.0], n)
    b = {"video_id": np.array(["v"] * n), "status": np.array(["ok"] * n), "error_stage": np.array([""] * n),
         "error": np.array([""] * n)}
    lean = 0.25 * truth + 0.1 * rng.normal(size=n)  # text: mild, right
    b["text_probs"] = np.stack([0.35 - lean / 2, np.full(n, 0.3), 0.35 + lean / 2], 1).clip(0.01).astype(np.float32)
    b["vision_probs"] = rng.dirichlet([0.1, 0.1, 0.1], size=n).astype(np.float32)  # confident, random
    for m, dim in (("vision", 4), ("audio", 3), ("text", 2)):
        b[f"{m}_embedding"] = rng.normal(size=(n, dim)).astype(np.float32)
        b[f"has_{m}"] = np.array([m != "audio"] * n)
    b["audio_probs"] = np.full((n, 3), np.nan, dtype=np.float32)
    scored = FusionStage(FusionConfig(), EmbeddingDims(4, 3, 2))({k: v.copy() for k, v in b.items()})
    valences = {m: scored[f"{m}_valence"].astype(float) for m in ("vision", "text")}
    weights = {m: scored[f"fusion_weight_{m}"].astype(float) for m in ("vision", "text")}
    reliability, corr = fit_reliability(valences, weights, truth)
    assert reliability == {"vision": 0.0, "text": 1.0}
    assert corr["fitted"] == pytest.approx(corr["text_only"]) and corr["text_only"] > 0.9
    assert correlation(scored["valence"].astype(float), truth) < 0.5 < corr["fitted"]  # what confidence alone gives
    refit = FusionStage(FusionConfig(reliability={"vision": 0.25}), EmbeddingDims(4, 3, 2))(b)
    np.testing.assert_allclose(refit["valence"], fused_valence(valences, weights, {"vision": 0.25}), atol=1e-6)
