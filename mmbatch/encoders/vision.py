"""Image zero-shot (CLIP, SigLIP and other dual encoders): frames vs. sentiment prompts.

Frames arrive as uint8 (n, F, S, S, 3). Scaling, resizing and normalisation run as tensor
ops on the device with the checkpoint's own mean/std (preprocessor_config.json), so no
per-image PIL processor runs in Python. Class scores are averaged over the clip's frames;
the clip embedding is the mean of the L2-normalised frame embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmbatch.encoders.base import EncoderStage, is_ok, l2_normalise, stacked
from mmbatch.schema import FRAME_COLUMNS

DEFAULT_IMAGE_PROMPTS = {
    "negative": ["a photo of a sad person", "a photo of an angry person", "a photo of a frightened person",
                 "a photo of a disgusted face", "a gloomy, depressing scene"],
    "neutral": ["a photo of a person with a neutral expression", "a photo of a calm, ordinary scene",
                "a photo of an everyday object"],
    "positive": ["a photo of a happy person", "a photo of a smiling person", "a photo of people laughing",
                 "a cheerful, joyful scene"],
}
_DEFAULT_MEAN = [0.5, 0.5, 0.5]
_DEFAULT_STD = [0.5, 0.5, 0.5]


def image_embedding_dim(model_config) -> int:
    if not hasattr(model_config, "vision_config"):  # an image classifier
        sizes = getattr(model_config, "hidden_sizes", None)  # conv nets (ResNet, ConvNeXt)
        return int(sizes[-1]) if sizes else int(model_config.hidden_size)
    if getattr(model_config, "projection_dim", None):
        return int(model_config.projection_dim)
    return int(model_config.vision_config.hidden_size)  # SigLIP: no projection


def load_image_preprocessing(encoder, folder: str, default_size: int) -> None:
    """`size`, `mean` and `std` (on its device) for an image encoder, from its checkpoint."""
    mean, std, size = preprocessing_from(folder, encoder.config.revision)
    encoder.size = int(size or default_size)
    encoder.mean = encoder.torch.tensor(mean, device=encoder.device).view(1, 3, 1, 1)
    encoder.std = encoder.torch.tensor(std, device=encoder.device).view(1, 3, 1, 1)


def preprocessing_from(source: str, revision: str | None = None) -> tuple[list[float], list[float], int | None]:
    """Mean, std and input size from a checkpoint's preprocessor_config.json (folder or hub)."""
    from transformers.utils import cached_file

    path = cached_file(source, "preprocessor_config.json", revision=revision,
                       _raise_exceptions_for_missing_entries=False)
    if not path:
        return _DEFAULT_MEAN, _DEFAULT_STD, None
    cfg = json.loads(Path(path).read_text())
    size = cfg.get("crop_size") or cfg.get("size") or {}
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return cfg.get("image_mean", _DEFAULT_MEAN), cfg.get("image_std", _DEFAULT_STD), size


class _FrameEncoder(EncoderStage):
    """Frames (n, F, S, S, 3) uint8 → normalised (n*F, 3, size, size) on the device."""

    modality = "vision"
    input_columns = FRAME_COLUMNS

    @classmethod
    def embedding_size(cls, model_config) -> int:
        return image_embedding_dim(model_config)

    load_preprocessing = load_image_preprocessing

    def active_rows(self, batch):
        if "has_frames" not in batch:
            return np.zeros(len(batch["video_id"]), dtype=bool)
        return is_ok(batch) & np.asarray(batch["has_frames"], dtype=bool)

    def pixels(self, batch, rows):
        torch = self.torch
        frames = torch.from_numpy(stacked(batch["frames"], rows)).to(self.device, non_blocking=True)
        n, f, h, w, _ = frames.shape
        x = frames.view(n * f, h, w, 3).permute(0, 3, 1, 2).float().div_(255.0)
        if (h, w) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                antialias=True, align_corners=False)
        return ((x - self.mean) / self.std).to(self.model.dtype), n, f

    def frame_weights(self, batch, rows, n: int, f: int):
        """(n, f, 1) weights that average over each clip's real frames (target_fps clips may
        fill fewer than frames_per_clip slots)."""
        torch = self.torch
        if "n_frames" not in batch:
            return torch.full((n, f, 1), 1.0 / f, device=self.device)
        counts = torch.as_tensor(np.asarray(batch["n_frames"])[rows], device=self.device).clamp(min=1)
        mask = (torch.arange(f, device=self.device)[None, :] < counts[:, None]).float()
        return (mask / mask.sum(1, keepdim=True)).unsqueeze(-1)


class ImageZeroShotEncoder(_FrameEncoder):
    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        from mmbatch.models.loading import load_pretrained, resolve_source

        torch, cfg = self.torch, self.config
        folder = resolve_source(cfg.source, self.storage_options)
        self.model = load_pretrained(AutoModel, folder, cfg.revision, **self.load_policy).to(self.device).eval()
        tokenizer = load_pretrained(AutoTokenizer, folder, cfg.revision, **self.load_policy)
        self.load_preprocessing(folder, self.model.config.vision_config.image_size)
        prompts = cfg.prompts or DEFAULT_IMAGE_PROMPTS
        # SigLIP was trained on max-length padded text; CLIP on dynamic padding.
        padding = "max_length" if self.model.config.model_type == "siglip" else True
        with torch.inference_mode():
            class_vectors = []
            for cls in ("negative", "neutral", "positive"):
                tok = tokenizer(prompts[cls], padding=padding, truncation=True, return_tensors="pt").to(self.device)
                text = self.model.get_text_features(**tok)
                text = getattr(text, "pooler_output", text)  # transformers 5 returns model outputs
                class_vectors.append(l2_normalise(l2_normalise(text.float()).mean(0)))
            self.class_embeddings = torch.stack(class_vectors)  # (3, d)
        self.logit_scale = self.model.logit_scale.exp().float().item()
        bias = getattr(self.model, "logit_bias", None)
        self.logit_bias = float(bias.item()) if bias is not None else 0.0

    def encode(self, batch, rows):
        x, n, f = self.pixels(batch, rows)
        out = self.model.get_image_features(pixel_values=x)
        emb = l2_normalise(getattr(out, "pooler_output", out).float())  # (n*f, d)
        logits = self.logit_scale * emb @ self.class_embeddings.T + self.logit_bias
        w = self.frame_weights(batch, rows, n, f)
        probs = (logits.softmax(-1).view(n, f, 3) * w).sum(1)
        clip_emb = (emb.view(n, f, -1) * w).sum(1)
        self.store(batch, rows, self.to_numpy(probs), self.to_numpy(clip_emb))


class ImageClassificationEncoder(_FrameEncoder):
    """Image classifiers (e.g. facial-expression ViTs): label probabilities averaged over frames."""

    def load(self) -> None:
        from transformers import AutoModelForImageClassification

        folder = self.load_classifier(AutoModelForImageClassification)
        self.load_preprocessing(folder, int(getattr(self.model.config, "image_size", 224)))

    def encode(self, batch, rows):
        from mmbatch.encoders.labels import to_sentiment

        x, n, f = self.pixels(batch, rows)
        out = self.model(pixel_values=x, output_hidden_states=True)
        w = self.frame_weights(batch, rows, n, f)
        probs = (out.logits.float().softmax(-1).view(n, f, -1) * w).sum(1)
        hidden = out.hidden_states[-1].float()  # (n*f, tokens, d), or (n*f, d, h, w) for conv nets
        pooled = hidden.mean(1) if hidden.dim() == 3 else hidden.mean((2, 3))
        clip_emb = (pooled.view(n, f, -1) * w).sum(1)
        self.store(batch, rows, to_sentiment(self.to_numpy(probs), self.matrix), self.to_numpy(clip_emb))
