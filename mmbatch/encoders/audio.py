"""Audio classification (wav2vec2 / HuBERT / WavLM emotion models) on 16 kHz clip audio.

The feature extractor's work (per-utterance zero-mean unit-variance normalisation and the
attention mask) is done as tensor ops on the device. The embedding is the last hidden state
mean-pooled over the valid frames.
"""

from __future__ import annotations

import numpy as np

from mmbatch.encoders.base import EncoderStage, mean_pool, usable_audio
from mmbatch.encoders.labels import to_sentiment
from mmbatch.schema import AUDIO_COLUMNS


class AudioClassificationEncoder(EncoderStage):
    modality = "audio"
    input_columns = AUDIO_COLUMNS

    def load(self) -> None:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        cfg = self.config
        folder = self.load_classifier(AutoModelForAudioClassification)
        try:
            fe = AutoFeatureExtractor.from_pretrained(folder, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
            self.normalise = bool(getattr(fe, "do_normalize", True))
            self.use_mask = bool(getattr(fe, "return_attention_mask", True))
        except Exception:
            self.normalise, self.use_mask = True, True

    def active_rows(self, batch):
        return usable_audio(batch)

    def encode(self, batch, rows):
        torch = self.torch
        lengths = torch.as_tensor(np.asarray(batch["audio_len"])[rows], device=self.device)
        longest = int(lengths.max())
        wave = torch.from_numpy(np.ascontiguousarray(
            np.stack([np.asarray(batch["waveform"][i])[:longest] for i in rows]))).to(self.device)
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


DEFAULT_AUDIO_PROMPTS = {
    "negative": ["a person crying", "an angry voice shouting", "a sad, gloomy voice", "sad, melancholic music"],
    "neutral": ["a person speaking in a calm, neutral voice", "a neutral voice reading aloud",
                "ordinary background noise"],
    "positive": ["a person laughing happily", "a cheerful, excited voice", "happy, upbeat music"],
}


class AudioZeroShotEncoder(EncoderStage):
    """CLAP: clip audio vs. sentiment prompts in the joint audio-text space.

    The feature extractor's log-mel pipeline (resample to 48 kHz, repeat-pad to max_length_s,
    Hann STFT, the checkpoint's mel filters, power → dB) runs as tensor ops on the device.
    Clips longer than max_length_s use their first max_length_s (deterministic, unlike the
    extractor's random crop).
    """

    modality = "audio"
    input_columns = AUDIO_COLUMNS

    @classmethod
    def embedding_size(cls, model_config) -> int:
        return int(model_config.projection_dim)  # the joint audio-text space

    def load(self) -> None:
        from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

        from mmbatch.encoders.base import l2_normalise
        from mmbatch.models.loading import load_pretrained, resolve_source

        torch, cfg = self.torch, self.config
        folder = resolve_source(cfg.source, self.storage_options)
        self.model = load_pretrained(ClapModel, folder, cfg.revision, **self.load_policy).to(self.device).eval()
        fe = load_pretrained(AutoFeatureExtractor, folder, cfg.revision, **self.load_policy)
        self.fusion_input = fe.truncation == "fusion"
        filters = fe.mel_filters if self.fusion_input else fe.mel_filters_slaney
        self.mel_filters = torch.tensor(filters, dtype=torch.float32, device=self.device)  # (bins, mels)
        self.window = torch.hann_window(fe.fft_window_size, periodic=True, device=self.device)
        self.fe = fe
        tokenizer = load_pretrained(AutoTokenizer, folder, cfg.revision, **self.load_policy)
        prompts = cfg.prompts or DEFAULT_AUDIO_PROMPTS
        with torch.inference_mode():
            vectors = []
            for cls in ("negative", "neutral", "positive"):
                tok = tokenizer(prompts[cls], padding=True, truncation=True, return_tensors="pt").to(self.device)
                text = self.model.get_text_features(**tok)
                vectors.append(l2_normalise(l2_normalise(getattr(text, "pooler_output", text).float()).mean(0)))
            self.class_embeddings = torch.stack(vectors)
        self.logit_scale = self.model.logit_scale_a.exp().float().item()

    def active_rows(self, batch):
        return usable_audio(batch)

    def log_mel(self, waves: list) -> "torch.Tensor":  # noqa: F821 (torch is imported in setup)
        """(n, 1 or 4, frames, mels) input features for ClapModel, computed on the device."""
        import torchaudio.functional as AF

        torch, fe = self.torch, self.fe
        max_len = fe.nb_max_samples
        feats = []
        for w in waves:
            w = AF.resample(w, 16000, fe.sampling_rate)[:max_len]
            if fe.padding == "repeatpad" and len(w) < max_len:
                w = w.repeat(max_len // len(w))
            w = torch.nn.functional.pad(w, (0, max_len - len(w)))
            spec = torch.stft(w, fe.fft_window_size, fe.hop_length, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True).abs().pow(2)  # (bins, frames)
            mel = 10.0 * torch.log10(torch.clamp(self.mel_filters.T @ spec, min=1e-10))
            feats.append(mel.T)
        x = torch.stack(feats)[:, None]  # (n, 1, frames, mels)
        return x.repeat(1, 4, 1, 1) if self.fusion_input else x

    def encode(self, batch, rows):
        from mmbatch.encoders.base import l2_normalise

        torch = self.torch
        lengths = np.asarray(batch["audio_len"])[rows]
        waves = [torch.from_numpy(np.ascontiguousarray(batch["waveform"][i][: lengths[k]])).to(self.device)
                 for k, i in enumerate(rows)]
        feats = self.log_mel(waves).to(self.model.dtype)
        is_longer = torch.zeros((len(rows), 1), dtype=torch.bool, device=self.device)
        out = self.model.get_audio_features(input_features=feats, is_longer=is_longer)
        emb = l2_normalise(getattr(out, "pooler_output", out).float())
        probs = (self.logit_scale * emb @ self.class_embeddings.T).softmax(-1)
        self.store(batch, rows, self.to_numpy(probs), self.to_numpy(emb))
