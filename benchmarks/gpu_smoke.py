#!/usr/bin/env python
"""GPU smoke check: every encoder adapter and the fusion model at real architecture sizes.

Builds random-init checkpoints from the real classes' default (base-size) configs — CLIP
ViT-B/32, Wav2Vec2-base, Whisper (base dims), RoBERTa-base, the fusion model — runs each
adapter on synthetic clips on CUDA with bf16 autocast, asserts finite outputs (and bf16 use
on CUDA), and prints clips/s per stage as JSON. No download.

    python benchmarks/gpu_smoke.py                    # on a GPU machine
    python benchmarks/gpu_smoke.py --device cpu --clips 4 --repeats 1   # sanity run anywhere
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_real_size(root: Path) -> dict[str, str]:
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        RobertaConfig,
        RobertaForSequenceClassification,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    from mmbatch.models import tiny

    torch.manual_seed(0)
    paths = {}
    tok = tiny._tokenizer(tiny._SPECIALS, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                          mask_token="<mask>")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    p = root / "clip"
    CLIPModel(CLIPConfig(text_config=ids, projection_dim=512)).save_pretrained(p)  # ViT-B/32 defaults
    tok.save_pretrained(p)
    (p / "preprocessor_config.json").write_text(json.dumps({"image_mean": tiny._CLIP_MEAN, "image_std": tiny._CLIP_STD,
                                                            "crop_size": {"height": 224, "width": 224}}))
    paths["vision"] = str(p)

    p = root / "wav2vec2"
    labels = ["neu", "hap", "ang", "sad"]
    Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=4, id2label=dict(enumerate(labels)),
                                                     label2id={name: i for i, name in enumerate(labels)})).save_pretrained(p)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(p)
    paths["audio"] = str(p)

    p = root / "whisper"
    wtok = tiny._tokenizer(tiny._SPECIALS + tiny._WHISPER_SPECIALS, bos_token="<|endoftext|>",
                           eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<unk>")
    eot, sot = wtok.convert_tokens_to_ids("<|endoftext|>"), wtok.convert_tokens_to_ids("<|startoftranscript|>")
    model = WhisperForConditionalGeneration(WhisperConfig(  # whisper-base dimensions
        vocab_size=len(wtok), d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, pad_token_id=eot, bos_token_id=eot,
        eos_token_id=eot, decoder_start_token_id=sot))
    model.generation_config.decoder_start_token_id, model.generation_config.eos_token_id = sot, eot
    model.generation_config.pad_token_id = eot
    model.save_pretrained(p)
    wtok.save_pretrained(p)
    WhisperFeatureExtractor().save_pretrained(p)
    paths["speech"] = str(p)

    p = root / "roberta"
    labels = ["negative", "neutral", "positive"]
    RobertaForSequenceClassification(RobertaConfig(vocab_size=len(tok), num_labels=3, id2label=dict(enumerate(labels)),
                                                   label2id={name: i for i, name in enumerate(labels)}, **ids)).save_pretrained(p)
    tok.model_max_length = 512
    tok.save_pretrained(p)
    paths["text"] = str(p)
    return paths


def synthetic_batch(n: int, frames: int, size: int, seconds: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    samples = int(seconds * 16000)
    return {
        "video_id": np.array([f"v{i}" for i in range(n)]), "clip_index": np.arange(n, dtype=np.int32),
        "start_s": np.zeros(n), "end_s": np.full(n, seconds), "status": np.array(["ok"] * n),
        "frames": rng.integers(0, 255, size=(n, frames, size, size, 3), dtype=np.uint8),
        "has_frames": np.ones(n, bool), "waveform": (0.1 * rng.normal(size=(n, samples))).astype(np.float32),
        "audio_len": np.full(n, samples, np.int32), "has_waveform": np.ones(n, bool),
        "transcript": np.array(["this is a wonderful day and I am happy to be here"] * n),
        "transcript_uri": np.array([""] * n), "error_stage": np.array([""] * n), "error": np.array([""] * n),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto")
    ap.add_argument("--clips", type=int, default=64, help="clips per batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    args = ap.parse_args()

    import torch

    from mmbatch.config import EncoderConfig, FusionConfig, PoolConfig
    from mmbatch.encoders import encoder_class
    from mmbatch.encoders.speech import SpeechRecognitionStage
    from mmbatch.fusion.model import MultimodalFusionConfig, MultimodalFusionModel
    from mmbatch.fusion.stage import FusionStage
    from mmbatch.schema import EmbeddingDims

    gpu = args.device == "auto" and torch.cuda.is_available()
    pool = PoolConfig(num_gpus=1.0 if gpu else 0.0, batch_size=args.clips)
    report: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "clips_per_batch": args.clips,
                    "clip_seconds": args.seconds, "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_real_size(Path(tmp))
        dims = EmbeddingDims(vision=512, audio=768, text=768, joint=256)
        MultimodalFusionModel(MultimodalFusionConfig(vision_dim=512, audio_dim=768, text_dim=768,
                                                     joint_dim=256, num_heads=8)).save_pretrained(Path(tmp) / "fusion")
        stages = {
            "vision": encoder_class("image_zero_shot")(EncoderConfig(task="image_zero_shot", source=paths["vision"],
                                                                     pool=pool), dim=512),
            "speech": SpeechRecognitionStage(EncoderConfig(task="speech_recognition", source=paths["speech"],
                                                           max_new_tokens=32, pool=pool)),
            "audio": encoder_class("audio_classification")(EncoderConfig(task="audio_classification",
                                                                         source=paths["audio"], pool=pool), dim=768),
            "text": encoder_class("text_classification")(EncoderConfig(task="text_classification",
                                                                       source=paths["text"], pool=pool), dim=768),
            "fusion": FusionStage(FusionConfig(mode="trained", checkpoint=str(Path(tmp) / "fusion"), pool=pool), dims),
        }
        batch = synthetic_batch(args.clips, 8, 224, args.seconds)
        for name, stage in stages.items():
            stage.setup()
            if gpu and name != "fusion":
                assert stage.device.type == "cuda", f"{name} is not on CUDA"
                assert stage.dtype == torch.bfloat16 or not torch.cuda.is_bf16_supported(), f"{name} not bf16"
            stage(dict(batch))  # warm-up (CUDA kernels, autotuning)
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                out = stage(dict(batch))
            if gpu:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - t0) / args.repeats
            for key, value in out.items():
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and key.endswith(("_probs", "_embedding")):
                    assert np.isfinite(value).all(), f"{name}: non-finite {key}"
            report["stages"][name] = {"clips_per_s": round(args.clips / seconds, 2), "seconds_per_batch": round(seconds, 4)}
            if name != "fusion":  # feed the next stages like the pipeline does
                batch.update({k: v for k, v in out.items() if k not in ("frames", "waveform")})
        if gpu:
            report["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        report["bf16_autocast"] = bool(gpu and torch.cuda.is_bf16_supported())
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
