import numpy as np
import pytest

from mmbatch.config import FusionConfig
from mmbatch.fusion import FusionStage, confidence, zero_shot_fuse
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
