#!/usr/bin/env python
"""Is it the recogniser or the voice? The spoken benchmark's sentences (quality.py --spoken: the
same sample, order and 12 s windows, a sentence LEAD_S into its clip) read by a synthetic voice,
straight into the CTranslate2 Whisper (no video, no job: the words alone) and scored by the text
model of --config. Prints JSON: WER and the fresh-vs-rotten text AUC, against the sentences as said.

    python benchmarks/spoken_voices.py --voice espeak          # the benchmark's own voice (espeak-ng)
    python benchmarks/spoken_voices.py --voice flite-slt       # flite's slt voice: apt-get install flite
    python benchmarks/spoken_voices.py --compute-type float32  # the recogniser unquantised

Defaults: 300 a class (seed 2), Whisper base int8 with 5 beams, pipelines/quality.yaml's text model.
~12 min a voice on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import quality as Q  # noqa: E402
from metrics import auc, word_errors  # noqa: E402

RATE = Q.SPOKEN_RATE


def flite(text: str, voice: str) -> np.ndarray:
    """`text` read by flite's `voice`, as float32 at RATE (flite writes 16-bit PCM)."""
    import torch
    import torchaudio.functional as AF

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", f"{tmp}/said.wav"], check=True)
        with wave.open(f"{tmp}/said.wav") as w:
            rate, raw = w.getframerate(), w.readframes(w.getnframes())
    samples = torch.from_numpy(np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0)
    return AF.resample(samples, rate, RATE).numpy()


def clip_of(speech: np.ndarray) -> np.ndarray:
    """A SPOKEN_WINDOW_S clip with the sentence LEAD_S in, cut where the next one would start."""
    clip = np.zeros(int(Q.SPOKEN_WINDOW_S * RATE), np.float32)
    lead = int(Q.LEAD_S * RATE)
    said = speech[: len(clip) - lead]
    clip[lead: lead + len(said)] = said
    return clip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voice", default="espeak", help="espeak (the benchmark's), or flite-<voice> (e.g. flite-slt)")
    ap.add_argument("--speech-source", default="bundle:whisper-base")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--config", default=str(REPO / "pipelines" / "quality.yaml"), help="its text model scores")
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--seed", type=int, default=Q.DEFAULT_SEED)
    ap.add_argument("--limit", type=int, help="only the first N clips (a smoke run)")
    args = ap.parse_args()

    from mmbatch.encoders.ct2_whisper import CT2Whisper, ct2_folder
    from mmbatch.synth import spoken

    sample = Q.draw(Q.load_corpus(), "test", args.per_class, args.seed)
    rows = Q.clip_order(sample, args.seed, spoken=True)
    rows = rows.iloc[: (len(rows) // Q.CLIPS_PER_VIDEO) * Q.CLIPS_PER_VIDEO][: args.limit]  # whole videos, as quality.py
    said, cat = list(rows["text"]), rows["category"].to_numpy()
    speak = (lambda t: spoken(t, RATE)) if args.voice == "espeak" else (lambda t: flite(t, args.voice.removeprefix("flite-")))
    speech = [speak(t) for t in said]
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # CT2Whisper's CPU threads
    model = CT2Whisper(ct2_folder(args.speech_source, None), device="cpu", compute_type=args.compute_type,
                       language="en", max_new_tokens=Q.SPOKEN_SPEECH["max_new_tokens"], beam_size=args.beam_size)
    t0 = time.perf_counter()
    heard = []
    for i in range(0, len(speech), 16):
        heard += model.transcribe([clip_of(s) for s in speech[i:i + 16]])
    seconds = time.perf_counter() - t0
    errors = np.array([word_errors(s, h) for s, h in zip(said, heard)])
    fresh, rotten = cat == "fresh", cat == "rotten"
    report = {"voice": args.voice, "speech_model": args.speech_source, "compute_type": args.compute_type,
              "beam_size": args.beam_size, "clips": len(said), "per_class": args.per_class, "seed": args.seed,
              "median_sentence_s": round(float(np.median([len(s) / RATE for s in speech])), 2),
              "sentences_cut_at_clip_end": int(sum(len(s) / RATE > Q.SPOKEN_WINDOW_S - Q.LEAD_S for s in speech)),
              "recognition_seconds": round(seconds, 1),
              "word_error_rate": round(float(errors[:, 0].sum() / max(1, errors[:, 1].sum())), 4)}
    text_probs = Q.text_scorer(args.config)
    for name, texts in (("said", said), ("heard", heard)):
        p = text_probs(texts)
        v = p[:, 2] - p[:, 0]
        report[f"text_valence_auc_{name}"] = round(auc(v[fresh], v[rotten]), 4) if fresh.any() and rotten.any() else None
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
