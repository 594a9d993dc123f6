"""The `tiny` preset: small random-init checkpoints of the real `transformers` classes.

They exercise exactly the code path of real models (save_pretrained -> from_pretrained,
tokenizers, preprocessor configs, label tables) with no download, in about a second each.
Weights are seeded, so every node that builds one gets the same bytes and the same scores.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_CORPUS = [
    "I love this, it is wonderful and great.",
    "This is terrible, awful and sad.",
    "The meeting is at noon in the main room.",
    "What a happy day, thank you so much!",
    "I hate waiting, this makes me angry.",
    "the quick brown fox jumps over the lazy dog",
    "numbers one two three four five six seven eight nine ten",
]
_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
_WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _tokenizer(specials: list[str], vocab_size: int = 320, **names):
    """A byte-level BPE trained on a few sentences, wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its bar prints blank lines on a non-terminal
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def _seed():
    import torch

    torch.manual_seed(0)


def _build_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    tok = _tokenizer(_SPECIALS, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>")}
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64,
                bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=64, patch_size=16)
    _seed()
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # Written by hand: instantiating CLIPImageProcessor needs torchvision; the encoder only
    # reads mean/std/size from this file and normalises on the device.
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD,
        "size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64},
    }, indent=2))


def _build_wav2vec2_er(out: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    labels = ["neu", "hap", "ang", "sad"]  # the label set of superb/wav2vec2-base-superb-er
    cfg = Wav2Vec2Config(
        vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        # The real models' total conv stride (320 samples: 50 frames a second), so attention runs over
        # as many frames as in wav2vec2-base (stride 80 made it 4x the frames, 16x the attention work).
        conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4), num_feat_extract_layers=4,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, classifier_proj_size=16,
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
    )
    _seed()
    Wav2Vec2ForSequenceClassification(cfg).save_pretrained(out)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out)


def _build_whisper(out: Path) -> None:
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    tok = _tokenizer(_SPECIALS + _WHISPER_SPECIALS, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                     pad_token="<|endoftext|>", unk_token="<unk>")
    # Whisper reads every id above <|notimestamps|> as a timestamp, so it is the last id, as in
    # the real vocabulary: ids after it would turn text into timestamps and make generate
    # re-decode each clip in many short "segments" (9x the work a real model does).
    tok.add_special_tokens({"additional_special_tokens": ["<|notimestamps|>"]})
    tid = tok.convert_tokens_to_ids
    cfg = WhisperConfig(
        vocab_size=len(tok), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=64,
        pad_token_id=tid("<|endoftext|>"), bos_token_id=tid("<|endoftext|>"), eos_token_id=tid("<|endoftext|>"),
        decoder_start_token_id=tid("<|startoftranscript|>"),
    )
    _seed()
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tid("<|startoftranscript|>"), eos_token_id=tid("<|endoftext|>"),
        pad_token_id=tid("<|endoftext|>"), bos_token_id=tid("<|endoftext|>"),
        no_timestamps_token_id=tid("<|notimestamps|>"),
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80, sampling_rate=16000).save_pretrained(out)


def _build_roberta_sentiment(out: Path) -> None:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    tok = _tokenizer(_SPECIALS, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                     mask_token="<mask>")
    labels = ["negative", "neutral", "positive"]  # cardiffnlp/twitter-roberta-base-sentiment-latest
    cfg = RobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=130, pad_token_id=tok.convert_tokens_to_ids("<pad>"),
        bos_token_id=tok.convert_tokens_to_ids("<s>"), eos_token_id=tok.convert_tokens_to_ids("</s>"),
        num_labels=3, id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
    )
    _seed()
    RobertaForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "clip": _build_clip,
    "wav2vec2-er": _build_wav2vec2_er,
    "whisper": _build_whisper,
    "roberta-sentiment": _build_roberta_sentiment,
}


def build(name: str, target: Path) -> None:
    """Build into a temp folder, then rename: a crashed build never leaves a half checkpoint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" for checkpoints of a few KB
    try:
        BUILDERS[name](tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        shutil.rmtree(tmp, ignore_errors=True)


def _build_clap(out: Path) -> None:
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    tok = _tokenizer(_SPECIALS, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                     mask_token="<mask>")
    text = ClapTextConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=66, pad_token_id=tok.pad_token_id,
                          projection_dim=32)
    # spec_size 256 is what a 10 s, 64-mel input folds into (1001 frames <= 256 * 256 // 64).
    audio = ClapAudioConfig(spec_size=256, window_size=8, num_mel_bins=64, hidden_size=32, patch_embeds_hidden_size=16,
                            depths=[1, 1], num_attention_heads=[2, 2], enable_fusion=False, projection_dim=32,
                            patch_stride=(4, 4), patch_size=4)
    _seed()
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=32)).save_pretrained(out)
    tok.model_max_length = 64
    tok.save_pretrained(out)
    ClapFeatureExtractor(feature_size=64, truncation="rand_trunc", max_length_s=10).save_pretrained(out)


def _build_vit_expression(out: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    labels = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]  # FER-2013 label set
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64,
                    patch_size=16, num_labels=len(labels), id2label=dict(enumerate(labels)),
                    label2id={name: i for i, name in enumerate(labels)})
    _seed()
    ViTForImageClassification(cfg).save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "size": {"height": 64, "width": 64}}, indent=2))


BUILDERS["clap"] = _build_clap
BUILDERS["vit-expression"] = _build_vit_expression
