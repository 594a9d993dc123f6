#!/usr/bin/env python
"""Whole sentences or cut ones: fixed clip windows against windows snapped to pauses, on speech
that runs on from clip to clip.

Rated sentences (Rotten Tomatoes fresh / rotten, drawn as `quality.py` draws its reported sample)
are spoken by espeak-ng back to back into generated videos, one kind a video, with pauses of
0.3-0.9 s between them over a faint noise floor, the first starting at a random moment: speech in a
real video does not wait for a clip to begin. The job (the quality preset's mpnet text model,
production's 10 s clips, the real Whisper tiny.en on CTranslate2 with 5 beams) scores the same
videos once a --snaps value: windows on the grid (`clips.snap_to_pause_s: 0`) and snapped to pauses.
Per run: sentences a clip boundary cuts, word error rate of each video's transcripts (clips in
order) against what it says, and the clips' text-valence AUC, fresh against rotten.

    python benchmarks/speech_windows.py                 # 300 a class (~15 min on 2 cores)
    python benchmarks/speech_windows.py --per-class 60 --snaps 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from metrics import auc, word_errors  # noqa: E402
from quality import SPOKEN_RATE, draw, load_corpus, score_videos, spoken_config  # noqa: E402

WINDOW_S = 10.0  # production's clips (pipelines/video_sentiment.yaml)
SPEECH_S = 40.0  # a video's sentences run on until they pass this
PAUSE_S = (0.3, 0.9)  # between two sentences
NOISE = 0.003  # the noise floor's standard deviation (about -50 dB under full scale)


def voiced(samples: np.ndarray) -> tuple[float, float]:
    """First and last moment (s) of a spoken sentence louder than 2% of its peak: espeak-ng pads each
    utterance with silence."""
    loud = np.flatnonzero(np.abs(samples) > 0.02 * np.abs(samples).max())
    return loud[0] / SPOKEN_RATE, (loud[-1] + 1) / SPOKEN_RATE


def write_videos(sample, src: Path, seed: int) -> list[dict]:
    """One video per run of same-kind sentences; each video's (start, end, text) of what it says."""
    from mmbatch.synth import spoken, write_video

    rng = np.random.default_rng(seed)
    videos = []
    for category in ("fresh", "rotten"):
        texts = [" ".join(t.split()) for t in sample[sample["category"] == category]["text"]]
        while texts:
            t, speech, said = float(rng.uniform(0.3, 2.5)), [], []
            while texts and t < SPEECH_S:
                text = texts.pop(0)
                samples = spoken(text, SPOKEN_RATE)
                a, b = voiced(samples)
                speech.append((t, samples + rng.normal(0, NOISE, len(samples)).astype(np.float32)))
                said.append((t + a, t + b, text))
                t += len(samples) / SPOKEN_RATE + float(rng.uniform(*PAUSE_S))
            seconds = t + 0.5
            floor = rng.normal(0, NOISE, int(seconds * SPOKEN_RATE) + 1).astype(np.float32)  # under it all
            name = f"{category}{len(videos):04d}"
            write_video(src / f"{name}.mp4", seconds=seconds, fps=5, width=64, height=48, seed=len(videos),
                        sample_rate=SPOKEN_RATE, speech=[(0.0, floor), *speech])
            videos.append({"video_id": name, "category": category, "said": said})
    return videos


def measure(clips, videos: list[dict]) -> dict:
    """Cut sentences, word error rate and text-valence AUC of one run's clips."""
    by_video = {v: g.sort_values("clip_index") for v, g in clips.groupby("video_id")}
    cut = sentences = errors = words = 0
    for video in videos:
        rows = by_video[video["video_id"]]
        bounds = rows["end_s"].to_numpy()[:-1]  # inner boundaries: each clip's end but the last
        for a, b, _ in video["said"]:
            sentences += 1
            cut += bool(np.any((bounds > a + 0.05) & (bounds < b - 0.05)))
        e, n = word_errors(" ".join(t for _, _, t in video["said"]), " ".join(rows["transcript"].fillna("")))
        errors, words = errors + e, words + n
    kind = {v["video_id"]: v["category"] for v in videos}
    cat = clips["video_id"].map(kind).to_numpy()
    valence = clips["text_valence"].fillna(0.0).to_numpy()
    length = (clips["end_s"] - clips["start_s"]).to_numpy()
    return {"clips": len(clips), "clip_s": {"min": round(float(length.min()), 2), "median": round(float(np.median(length)), 2),
                                          "max": round(float(length.max()), 2)},
            "sentences": sentences, "sentences_cut": cut, "sentences_cut_fraction": round(cut / sentences, 4),
            "word_error_rate": round(errors / max(1, words), 4),
            "text_valence_auc_fresh_vs_rotten": round(auc(valence[cat == "fresh"], valence[cat == "rotten"]), 4)}


def run(config, src: Path, out: Path):
    """The job over `src`: (its clips, seconds); a run that lost work is no measure."""
    result, seconds, clips = score_videos(config, src, out, columns=(
        "video_id", "clip_index", "start_s", "end_s", "status", "transcript", "text_valence"))
    if result.failed:
        raise RuntimeError(f"the job lost work: {result}")
    return clips, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=300, help="fresh and rotten sentences each")
    ap.add_argument("--snaps", default="0,3", help="clips.snap_to_pause_s of each run, comma-separated (0: the grid)")
    ap.add_argument("--config", default=str(REPO / "pipelines" / "quality.yaml"))
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()

    from mmbatch.config import load_config, parse_config

    sample = draw(load_corpus(), "test", args.per_class, args.seed)
    sample = sample[sample["category"] != "plot"]
    base = spoken_config(load_config(args.config)).model_dump(mode="json")
    report = {"data": f"Rotten Tomatoes: {args.per_class} fresh, {args.per_class} rotten (seed {args.seed}), "
                      "spoken back to back", "window_s": WINDOW_S, "speech_model": base["models"]["speech"]["source"],
              "beam_size": base["models"]["speech"]["beam_size"], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        videos = write_videos(sample, Path(tmp) / "videos", args.seed)
        report["videos"] = len(videos)
        for snap in map(float, args.snaps.split(",")):
            label = f"snapped_{snap:g}s" if snap else "grid"
            raw = {**base, "clips": {**base["clips"], "window_s": WINDOW_S, "stride_s": WINDOW_S, "snap_to_pause_s": snap}}
            clips, seconds = run(parse_config(raw, label), Path(tmp) / "videos", Path(tmp) / f"out-{label}")
            report["runs"][label] = {"snap_to_pause_s": snap, "job_seconds": round(seconds, 1), **measure(clips, videos)}
            print(json.dumps({label: report["runs"][label]}), flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
