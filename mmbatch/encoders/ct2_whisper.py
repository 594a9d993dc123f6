"""Whisper on CTranslate2 (faster-whisper's runtime): the `ctranslate2` speech engine.

Batched across clips: each clip's log-mel features are padded to Whisper's 30 s window, the
batch is encoded once and decoded without timestamps, one prompt per clip, greedily or with
`beam_size` beams and the `no_repeat_ngram_size` guard (as the transformers engine decodes).
int8 on CPU and float16 on GPU unless `compute_type` says otherwise. The source is a CTranslate2
folder, or a transformers Whisper (hub id, folder, s3://, tiny:) that is converted once per node
and cached under the model cache.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mmbatch.errors import ModelLoadError

INSTALL_HINT = "models.speech.engine ctranslate2 needs faster-whisper: pip install 'mmbatch[ctranslate2]'"


def is_ct2_folder(folder: str) -> bool:
    """A CTranslate2 model folder: model.bin plus a config.json that is not a transformers config
    (those name their model_type)."""
    p = Path(folder)
    try:
        return (p / "model.bin").is_file() and "model_type" not in json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return False


def check_installed() -> None:
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        raise ModelLoadError(INSTALL_HINT) from None


def check_ct2_folder(folder: str, source: str) -> None:
    """What faster-whisper needs offline: without tokenizer.json it would download one."""
    if not (Path(folder) / "tokenizer.json").is_file():
        raise ModelLoadError(f"models.speech: CTranslate2 folder {source!r} has no tokenizer.json "
                             "(faster-whisper would download one); add the model's tokenizer.json")


def ct2_source_folder(source: str, revision: str | None, storage_options: dict | None = None) -> str | None:
    """The folder of `source` when it is a CTranslate2 model (a hub repo such as
    Systran/faster-whisper-base is fetched); None for a transformers model."""
    from mmbatch.models.loading import resolve_source

    resolved = resolve_source(source, storage_options)
    if os.path.isdir(resolved):
        return resolved if is_ct2_folder(resolved) else None
    try:  # a hub id: its config says which kind it is
        from huggingface_hub import hf_hub_download, snapshot_download

        config = json.loads(Path(hf_hub_download(resolved, "config.json", revision=revision)).read_text())
        return None if "model_type" in config else snapshot_download(resolved, revision=revision)
    except Exception:  # offline or unknown: the transformers checks report it
        return None


def ct2_folder(source: str, revision: str | None, storage_options: dict | None = None) -> str:
    """A CTranslate2 folder for `source`: itself, or its conversion, cached by content."""
    from mmbatch.models.loading import cache_root, folder_digest, resolve_source
    from mmbatch.storage import file_lock

    ready = ct2_source_folder(source, revision, storage_options)
    if ready is not None:
        return ready
    resolved = resolve_source(source, storage_options)
    if not os.path.isdir(resolved):  # a transformers Whisper on the hub: its files
        from huggingface_hub import snapshot_download

        resolved = snapshot_download(resolved, revision=revision)
    target = cache_root() / "ct2" / folder_digest(resolved)[:16]
    if not (target / "model.bin").is_file():
        with file_lock(target.with_suffix(".lock")):
            if not (target / "model.bin").is_file():
                _convert(resolved, target)
    return str(target)


def _convert(folder: str, target: Path) -> None:
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoTokenizer

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    copy = [f for f in ("preprocessor_config.json", "tokenizer.json") if (Path(folder) / f).is_file()]
    try:
        TransformersConverter(folder, copy_files=copy, load_as_float16=False).convert(str(tmp), force=True)
    except Exception as err:
        raise ModelLoadError(f"cannot convert {folder} to CTranslate2: {err}") from None
    if not (tmp / "tokenizer.json").is_file():  # faster-whisper reads the fast tokenizer's file
        AutoTokenizer.from_pretrained(folder).backend_tokenizer.save(str(tmp / "tokenizer.json"))
    os.replace(tmp, target)


class CT2Whisper:
    def __init__(self, folder: str, *, device: str, compute_type: str, language: str | None, max_new_tokens: int,
                 beam_size: int = 1, no_repeat_ngram_size: int = 0, hypotheses: int = 1):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        # CPU threads: what the worker was given (Ray sets OMP_NUM_THREADS from the actor's CPUs).
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        self.model = WhisperModel(folder, device=device, compute_type=compute_type, cpu_threads=threads)
        self.multilingual = self.model.model.is_multilingual
        # A multilingual model without a configured language detects each clip's; English-only: "en".
        self.language = language if self.multilingual else "en"
        self._tokenizers = {lang: Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe",
                                            language=lang if self.multilingual else None)
                            for lang in {self.language or "en"}}
        self.tokenizer = next(iter(self._tokenizers.values()))
        self.max_new_tokens = max_new_tokens
        self.compute_type = compute_type
        self.decoding = {"beam_size": beam_size, "no_repeat_ngram_size": no_repeat_ngram_size}
        if hypotheses > 1:  # the beam's best transcripts with their length-normalised log-probabilities
            self.decoding.update(num_hypotheses=hypotheses, return_scores=True)

    def transcribe(self, waves: list[np.ndarray]) -> list[str]:
        return self.transcribe_with_language(waves)[0]

    def transcribe_with_language(self, waves: list[np.ndarray]) -> tuple[list[str], list[str]]:
        """Each clip's text and the language it was decoded as (configured, or detected)."""
        texts, _, languages = self.transcribe_hypotheses(waves)
        return [t[0] for t in texts], languages

    def transcribe_hypotheses(self, waves: list[np.ndarray]) -> tuple[list[list[str]], list[list[float]], list[str]]:
        """Each clip's best transcripts, best first, their scores (length-normalised log-probabilities;
        empty unless hypotheses > 1) and the clip's language."""
        eot = self.tokenizer.eot
        results, languages = self._generate(waves)
        texts = [[self.tokenizer.decode([t for t in one if t < eot]).strip() for one in r.sequences_ids] for r in results]
        return texts, [list(r.scores) for r in results], languages

    def token_ids(self, waves: list[np.ndarray]) -> list[list[int]]:
        """The tokens decoded for each clip, after its prompt."""
        return self.decode(waves)[0]

    def decode(self, waves: list[np.ndarray]) -> tuple[list[list[int]], list[str]]:
        """The tokens decoded for each clip after its prompt, and the clip's language."""
        results, languages = self._generate(waves)
        return [r.sequences_ids[0] for r in results], languages

    def _generate(self, waves: list[np.ndarray]):
        from faster_whisper.audio import pad_or_trim

        fe = self.model.feature_extractor
        feats = np.stack([pad_or_trim(fe(w)[:, : fe.nb_max_frames]) for w in waves]).astype(np.float32)
        encoded = self.model.encode(feats)
        if self.language:
            languages = [self.language] * len(waves)
        else:  # the most likely language token of each clip ("<|de|>" → "de")
            languages = [found[0][0][2:-2] for found in self.model.model.detect_language(encoded)]
        prompts = [self.prompt_for(lang) for lang in languages]
        results = self.model.model.generate(encoded, prompts, **self.decoding,
                                            max_length=max(len(p) for p in prompts) + self.max_new_tokens,
                                            suppress_blank=True, suppress_tokens=[-1])
        return results, languages

    def prompt_for(self, language: str) -> list[int]:
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(self.model.hf_tokenizer, True, task="transcribe", language=language)
        return self.model.get_prompt(self._tokenizers[language], [], without_timestamps=True)
