"""Speech recognition (Whisper) → `transcript`, unless the video has a sidecar transcript.

Log-mel features are computed by the feature extractor's torch path on the actor's device, over
each clip's own length rather than Whisper's whole 30 s window (`whisper_features`).
Silence or no audio gives an empty transcript (the text modality is then missing, not failed).
Without a speech model, `SidecarTranscriptStage` fills `transcript` from sidecars alone.
"""

from __future__ import annotations

import logging

import numpy as np

from mmbatch.config import InputsConfig
from mmbatch.encoders.base import is_ok, run_isolated, text_column, usable_audio
from mmbatch.errors import short_reason
from mmbatch.inputs.transcripts import SidecarError, TranscriptCache
from mmbatch.modalities import BY_NAME
from mmbatch.schema import AUDIO_COLUMNS, HYPOTHESIS_COLUMNS, TRANSCRIPT_COLUMNS
from mmbatch.stage import Batch

log = logging.getLogger(__name__)
(LANGUAGE_COLUMN, _), = BY_NAME["speech"].columns  # the speech modality's own column: transcript_language


class _PerBatchGenerateWarning(logging.Filter):
    """Notices that Whisper's own `generate` causes and no caller can act on: it sets max_length
    on every call, so transformers warns on every batch that max_new_tokens takes precedence (one
    identical line per batch in the job log), and it passes suppress_tokens beside its generation
    config, which transformers calls deprecated (once per process); and `output_scores`, which beam
    search needs for the hypotheses' scores, is called "not valid" by Whisper's generation config."""

    NOTICES = ("Both `max_new_tokens`", "Passing `generation_config` together with generation-related",
               "The following generation flags are not valid and may be ignored: ['output_scores']")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOTICES)


def quiet_per_batch_warnings() -> None:
    # transformers logs through its own handler on the library's root logger (get_logger makes
    # it); a filter on a child logger would not see records from its siblings.
    from transformers.utils import logging as hf_logging

    for handler in hf_logging.get_logger("transformers").handlers:
        if not any(isinstance(f, _PerBatchGenerateWarning) for f in handler.filters):
            handler.addFilter(_PerBatchGenerateWarning())


def whisper_features(extractor, waves: list[np.ndarray], device: str):
    """Whisper's log-mel features and frame mask for clips, as `extractor(waves)` gives them for
    its 30 s window, at the cost of the clips' own length (a third of the work for 10 s clips).

    The extractor runs on the clips plus one FFT window of silence; the window's remaining frames
    are silent, and a silent frame's value follows from the clip's maximum (Whisper floors each
    frame at max - 8 in log10 units, then maps x to (x + 4) / 4). Exact, not approximate; clips
    as long as the window, dither, or another extractor take the library's own path."""
    import torch
    from transformers import WhisperFeatureExtractor

    rate = extractor.sampling_rate
    lengths = np.array([len(w) for w in waves])
    if isinstance(extractor, WhisperFeatureExtractor) and not extractor.dither:
        hop, frames = extractor.hop_length, extractor.nb_max_frames
        span = -(-(int(lengths.max()) + extractor.n_fft) // hop) * hop  # whole hops
        if span < extractor.n_samples:
            batch = np.zeros((len(waves), span), np.float32)
            for i, wave in enumerate(waves):
                batch[i, : len(wave)] = wave
            part = extractor(list(batch), sampling_rate=rate, padding="longest", return_tensors="pt",
                             device=device)["input_features"]
            silent = torch.clamp(part.amax(dim=(1, 2), keepdim=True) - 2.0, min=-1.5)
            features = silent.expand(len(waves), part.shape[1], frames).clone()
            features[:, :, : part.shape[2]] = part
            mask = (torch.arange(frames)[None, :] * hop < torch.as_tensor(lengths)[:, None]).to(torch.int32)
            return features, mask
    feats = extractor(waves, sampling_rate=rate, return_tensors="pt", return_attention_mask=True, device=device)
    return feats["input_features"], feats["attention_mask"]


SIDECAR_INPUTS = ("video_id", "clip_index", "status", "transcript_uri", "start_s", "end_s")


def sidecar_transcripts(sidecars: TranscriptCache, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transcripts, has_sidecar, text errors) for the batch: each ok row's text from its sidecar."""
    n = len(batch["video_id"])
    transcripts = np.array([""] * n, dtype=object)
    errors = np.array([""] * n, dtype=object)
    sidecar = text_column(batch, "transcript_uri")
    for i in np.flatnonzero(is_ok(batch) & (sidecar != "")):
        try:
            transcripts[i] = sidecars.text_for(sidecar[i], float(batch["start_s"][i]), float(batch["end_s"][i]))
        except SidecarError as err:  # a bad sidecar loses this clip's text, with the reason
            errors[i] = str(err)
        except Exception as err:
            errors[i] = f"transcript sidecar unreadable: {short_reason(err)}"
    return transcripts, sidecar != "", errors


def hypothesis_weights(texts: list[str], scores: list[float], max_chars: int) -> tuple[list[str], list[float]]:
    """A clip's distinct non-empty transcripts (cut like `transcript`) and how likely the recogniser
    finds each, summing to 1: a softmax of their length-normalised log-probabilities."""
    z = np.exp(np.asarray(scores, dtype=np.float64) - max(scores))
    merged: dict[str, float] = {}
    for text, p in zip(texts, z):
        if text:  # transcripts that differ only past the cut are one
            merged[text[:max_chars]] = merged.get(text[:max_chars], 0.0) + float(p)
    total = sum(merged.values())
    return list(merged), [p / total for p in merged.values()]


def store_transcripts(batch: Batch, transcripts: np.ndarray, errors: np.ndarray, max_chars: int) -> Batch:
    """`transcript` and `text_error` columns; text beyond max_chars is cut, and the cut recorded."""
    long = np.flatnonzero(np.array([len(t) > max_chars for t in transcripts], dtype=bool))
    for i in long:
        errors[i] = errors[i] or f"transcript cut to inputs.max_transcript_chars ({max_chars} of {len(transcripts[i])})"
        transcripts[i] = transcripts[i][:max_chars]
    transcript, text_error = TRANSCRIPT_COLUMNS
    batch[transcript] = transcripts.astype(str)
    batch[text_error] = errors.astype(str)
    return batch


class SidecarTranscriptStage:
    """`transcript` from .vtt/.srt/.txt sidecars, for configs with a text model but no speech model."""

    name = "transcripts"
    reads = SIDECAR_INPUTS
    may_read = ()
    writes = TRANSCRIPT_COLUMNS

    def __init__(self, *, storage_options: dict | None = None, limits: InputsConfig | None = None):
        self.storage_options = storage_options or {}
        self.limits = limits or InputsConfig()
        self.sidecars = None

    def setup(self) -> None:
        self.sidecars = TranscriptCache(self.storage_options, max_bytes=self.limits.max_sidecar_bytes)

    def __call__(self, batch: Batch) -> Batch:
        if self.sidecars is None:
            self.setup()
        transcripts, _, errors = sidecar_transcripts(self.sidecars, batch)
        return store_transcripts(batch, transcripts, errors, self.limits.max_transcript_chars)


class SpeechRecognitionStage:
    """Whisper on the clips without a sidecar transcript; `transcript_language` says the language
    each was decoded as: models.speech.language when set, else (a multilingual model) detected per
    clip, "en" for an English-only Whisper; empty (null) for sidecar text and clips without speech.
    With hypotheses > 1 it also hands the text encoder each clip's best transcripts and their
    weights (HYPOTHESIS_COLUMNS); `transcript` is the best."""

    name = "speech"
    reads = (*SIDECAR_INPUTS, *AUDIO_COLUMNS)
    may_read = ()
    writes = (*TRANSCRIPT_COLUMNS, LANGUAGE_COLUMN, *HYPOTHESIS_COLUMNS)

    def __init__(self, config, *, storage_options: dict | None = None, limits: InputsConfig | None = None):
        self.config = config
        self.storage_options = storage_options or {}
        self.limits = limits or InputsConfig()
        self.load_policy = {"trust_remote_code": config.trust_remote_code, "allow_pickle": config.allow_pickle}
        self._ready = False

    def setup(self) -> None:
        from mmbatch.models.loading import pick_device

        self.device = pick_device(self.config.pool.num_gpus > 0)
        self.ct2 = None
        if self.config.engine == "ctranslate2":
            from mmbatch.encoders.ct2_whisper import CT2Whisper, ct2_folder

            cfg = self.config
            self.ct2 = CT2Whisper(ct2_folder(cfg.source, cfg.revision, self.storage_options), device=self.device.type,
                                  compute_type=cfg.compute_type, language=cfg.language, max_new_tokens=cfg.max_new_tokens,
                                  beam_size=cfg.beam_size, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                                  hypotheses=cfg.hypotheses)
        else:
            self._load_transformers()
        self.sidecars = TranscriptCache(self.storage_options, max_bytes=self.limits.max_sidecar_bytes)
        self._ready = True

    def _load_transformers(self) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoProcessor

        from mmbatch.models.loading import load_pretrained, pick_dtype, resolve_source

        cfg = self.config
        self.torch = torch
        self.dtype = pick_dtype(cfg.dtype, self.device)
        folder = resolve_source(cfg.source, self.storage_options)
        self.model = load_pretrained(AutoModelForSpeechSeq2Seq, folder, cfg.revision, dtype=self.dtype, **self.load_policy)
        self.model = self.model.to(self.device).eval()
        self.features = load_pretrained(AutoFeatureExtractor, folder, cfg.revision, **self.load_policy)
        try:
            self.tokenizer = AutoProcessor.from_pretrained(folder, revision=cfg.revision,
                                                           trust_remote_code=cfg.trust_remote_code).tokenizer
        except Exception:
            from transformers import AutoTokenizer

            self.tokenizer = load_pretrained(AutoTokenizer, folder, cfg.revision, **self.load_policy)
        quiet_per_batch_warnings()
        gen = self.model.generation_config
        self.generate_kwargs = {"max_new_tokens": cfg.max_new_tokens}
        if cfg.beam_size > 1:  # passed only when set: the defaults decode as before
            self.generate_kwargs["num_beams"] = cfg.beam_size
        if cfg.no_repeat_ngram_size:
            self.generate_kwargs["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size
        if cfg.hypotheses > 1:  # the beam's best, with their length-normalised log-probabilities
            self.generate_kwargs.update(num_return_sequences=cfg.hypotheses, return_dict_in_generate=True,
                                        output_scores=True)
        if getattr(gen, "lang_to_id", None):  # multilingual Whisper: pin language and task
            self.generate_kwargs["task"] = "transcribe"
            if cfg.language:
                self.generate_kwargs["language"] = cfg.language

    def __call__(self, batch: Batch) -> Batch:
        if not self._ready:
            self.setup()
        transcripts, has_sidecar, errors = sidecar_transcripts(self.sidecars, batch)
        usable = usable_audio(batch)
        lost = text_column(batch, "audio_error")
        for i in np.flatnonzero(is_ok(batch) & ~has_sidecar & ~usable & (lost != "")):
            errors[i] = f"no speech to recognise: {lost[i]}"  # the text is missing because the audio is
        asr_rows = np.flatnonzero(~has_sidecar & usable)
        languages = np.array([""] * len(transcripts), dtype=object)
        heard, weights = np.empty(len(transcripts), dtype=object), np.empty(len(transcripts), dtype=object)
        heard[:], weights[:] = [[] for _ in heard], [[] for _ in weights]  # a sidecar's text: no alternatives
        if len(asr_rows):

            def transcribe(rows):
                texts, scores, langs = self._transcribe(batch, rows)
                transcripts[rows] = [t[0] for t in texts]
                languages[rows] = [lang if t[0] else "" for t, lang in zip(texts, langs)]
                for i, alternatives, likelihood in zip(rows, texts, scores):
                    if likelihood:
                        heard[i], weights[i] = hypothesis_weights(alternatives, likelihood, self.limits.max_transcript_chars)

            def failed(i, err):  # no text for this clip, and why
                errors[i] = f"speech recognition failed: {short_reason(err)}"

            run_isolated("speech_recognition", batch, asr_rows, transcribe, failed)
        batch[LANGUAGE_COLUMN] = languages.astype(str)
        if self.config.hypotheses > 1:
            batch[HYPOTHESIS_COLUMNS[0]], batch[HYPOTHESIS_COLUMNS[1]] = heard, weights
        return store_transcripts(batch, transcripts, errors, self.limits.max_transcript_chars)

    def _transcribe(self, batch: Batch, rows: np.ndarray) -> tuple[list[list[str]], list[list[float]], list[str]]:
        """Each row's transcripts (the best first; more with hypotheses > 1), their scores (empty
        with one) and the language it was decoded as."""
        lengths = np.asarray(batch["audio_len"])[rows]
        waves = [np.asarray(batch["waveform"][i][: lengths[k]], dtype=np.float32) for k, i in enumerate(rows)]
        if self.ct2 is not None:
            return self.ct2.transcribe_hypotheses(waves)
        features, mask = whisper_features(self.features, waves, str(self.device))
        with self.torch.inference_mode():  # the mask marks each clip's real frames (the rest is padding)
            out = self.model.generate(features.to(self.device, self.model.dtype), attention_mask=mask.to(self.device),
                                      **self.generate_kwargs)
        ids, n = (out, 1) if self.config.hypotheses == 1 else (out.sequences, self.config.hypotheses)
        texts = [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        scores = out.sequences_scores.float().cpu().numpy().tolist() if n > 1 else []  # none with one
        return ([texts[k:k + n] for k in range(0, len(texts), n)], [scores[k:k + n] for k in range(0, len(texts), n)],
                [self._language_of(one) for one in ids.tolist()[::n]])

    def _language_of(self, ids: list[int]) -> str:
        """The language token a multilingual Whisper decoded (configured or chosen), "" if none."""
        if self.config.language:
            return self.config.language
        by_id = getattr(self, "_languages", None)
        if by_id is None:
            lang_to_id = getattr(self.model.generation_config, "lang_to_id", None) or {}
            by_id = self._languages = {i: tok.strip("<|>") for tok, i in lang_to_id.items()}
        return next((by_id[i] for i in ids[:4] if i in by_id), "")
