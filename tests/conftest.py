"""Shared fixtures: a hermetic model cache, generated videos, and one local Ray per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import av  # noqa: F401  (load PyAV's FFmpeg before decord's: the other order breaks libvpx encoding)
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Fuzz profiles (tests/test_fuzz.py): "ci" is lean and derandomized, the same examples every run;
# "night" is a long random search: MMBATCH_FUZZ_PROFILE=night python -m pytest tests/test_fuzz.py
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("night", max_examples=20_000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("MMBATCH_FUZZ_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Tiny checkpoints are built into a per-session cache (workers inherit the env var)."""
    cache = os.environ.get("MMBATCH_TEST_CACHE") or str(tmp_path_factory.mktemp("mmbatch-cache"))
    os.environ["MMBATCH_CACHE"] = cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Path(cache)


@pytest.fixture(scope="session")
def ray_cluster(model_cache):
    """One local Ray for the session: 2 CPUs and a (fake) GPU, so GPU-pool scheduling is exercised."""
    import ray

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "MMBATCH_CACHE": str(model_cache),
                                       "HF_HUB_OFFLINE": "1"}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_config():
    from mmbatch.config import load_config

    return load_config(REPO / "pipelines" / "tiny.yaml")


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory):
    """Three good videos of known length: 12 s, 7 s, 3.5 s (window 5 s, min 1 s)."""
    from mmbatch.synth import write_video

    root = tmp_path_factory.mktemp("videos")
    write_video(root / "a" / "long one.mp4", seconds=12.0, seed=1)
    write_video(root / "b" / "médio.MP4", seconds=7.0, seed=2, tone_hz=330)
    write_video(root / "short.mkv", seconds=3.5, seed=3, audio=False)
    return root


@pytest.fixture(scope="session")
def colocated_night(ray_cluster, tiny_config, sample_videos, tmp_path_factory):
    """tiny.yaml (every model in one actor) over the sample videos and an empty broken.mp4, on
    2026-11-27: (output folder, RunResult). One night for two modules: test_pipeline compares it
    with the per-model pools, test_training trains a head on its clips."""
    import datetime as dt
    import shutil

    from mmbatch.pipeline.run import run_pipeline

    src, out = tmp_path_factory.mktemp("colocated-in"), tmp_path_factory.mktemp("colocated-out")
    shutil.copytree(sample_videos, src, dirs_exist_ok=True)
    (src / "broken.mp4").write_bytes(b"")
    return out, run_pipeline(tiny_config, str(src), str(out), dt.date(2026, 11, 27))


def ref_batch(ref) -> dict[str, np.ndarray]:
    return {k: np.array([v]) for k, v in ref.as_row().items()}


@pytest.fixture(autouse=True)
def sigterm_restored():
    """The job's main() takes SIGTERM over (it raises Terminated); tests that call it get it back."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)
