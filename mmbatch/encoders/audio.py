"""Audio classification (wav2vec2 / HuBERT / WavLM emotion models) on 16 kHz clip audio.

The feature extractor's work (per-utterance zero-mean unit-variance normalisation and the
attention mask) is done as tensor ops on the device. The embedding is the last hidden state
mean-pooled over the valid frames.
"""

from __future__ import annotations

import numpy as np

from mmbatch.encoders.base import EncoderStage, is_ok, mean_pool
from mmbatch.encoders.labels import label_matrix, to_sentiment

MIN_SAMPLES = 1600  # 0.1 s at 16 kHz: shorter clips carry no usable audio


class AudioClassificationEncoder(EncoderStage):
    modality = "audio"
    input_columns = ("waveform",)

    def load(self) -> None:
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

        from mmbatch.models import load_pretrained, resolve_source

        cfg = self.config
        folder = resolve_source(cfg.source, self.storage_options)
        model_config = load_pretrained(AutoConfig, folder, cfg.revision)
        self.matrix = label_matrix(model_config.id2label, cfg.label_map, cfg.source)
        self.model = load_pretrained(AutoModelForAudioClassification, folder, cfg.revision).to(self.device).eval()
        try:
            fe = AutoFeatureExtractor.from_pretrained(folder, revision=cfg.revision)
            self.normalise = bool(getattr(fe, "do_normalize", True))
            self.use_mask = bool(getattr(fe, "return_attention_mask", True))
        except Exception:
            self.normalise, self.use_mask = True, True

    def active_rows(self, batch):
        return is_ok(batch) & np.asarray(batch["has_audio"], dtype=bool) & (np.asarray(batch["audio_len"]) >= MIN_SAMPLES)

    def encode(self, batch, rows):
        torch = self.torch
        lengths = torch.as_tensor(np.asarray(batch["audio_len"])[rows], device=self.device)
        longest = int(lengths.max())
        wave = torch.from_numpy(np.ascontiguousarray(batch["waveform"][rows, :longest])).to(self.device)
        mask = (torch.arange(longest, device=self.device)[None, :] < lengths[:, None]).to(wave.dtype)
        if self.normalise:
            count = mask.sum(1, keepdim=True)
            mean = (wave * mask).sum(1, keepdim=True) / count
            var = (((wave - mean) * mask) ** 2).sum(1, keepdim=True) / count
            wave = (wave - mean) / torch.sqrt(var + 1e-7) * mask
        kwargs = {"attention_mask": mask.long()} if self.use_mask else {}
        out = self.model(input_values=wave, output_hidden_states=True, **kwargs)
        probs = to_sentiment(self.to_numpy(out.logits.float().softmax(-1)), self.matrix)
        hidden = out.hidden_states[-1]
        frame_lengths = self.model._get_feat_extract_output_lengths(lengths).clamp(max=hidden.shape[1])
        frame_mask = torch.arange(hidden.shape[1], device=self.device)[None, :] < frame_lengths[:, None]
        self.store(batch, rows, probs, self.to_numpy(mean_pool(hidden.float(), frame_mask)))
