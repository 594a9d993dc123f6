"""Where models come from, and on which device and dtype they run.

A model source is one of:
  - a Hugging Face hub id (with an optional revision), loaded by `from_pretrained`;
  - a local folder in Hugging Face layout;
  - an fsspec folder (`s3://bucket/models/x/`), fetched once per node into a local cache;
  - `package:<module>`: a model folder bundled inside an installed Python package;
  - `tiny:<name>`: a randomly initialised checkpoint of a real `transformers` class, built
    locally once (deterministically) and loaded through the same `from_pretrained` path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path

from mmbatch.errors import ModelLoadError

TINY_VERSION = "v1"


def cache_root() -> Path:
    return Path(os.environ.get("MMBATCH_CACHE", Path.home() / ".cache" / "mmbatch"))


@contextmanager
def _file_lock(path: Path):
    """Serialise builders/downloaders on one node (several actors may start at once)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve_source(source: str, storage_options: dict | None = None) -> str:
    """Turn a configured source into something `from_pretrained` accepts (path or hub id)."""
    if source.startswith("tiny:"):
        from mmbatch import tiny

        name = source.split(":", 1)[1]
        if name not in tiny.BUILDERS:
            raise ModelLoadError(f"unknown tiny model {name!r}; known: {sorted(tiny.BUILDERS)}")
        target = cache_root() / "tiny" / f"{name}-{TINY_VERSION}"
        if not (target / "config.json").exists():
            with _file_lock(target.with_suffix(".lock")):
                if not (target / "config.json").exists():
                    tiny.build(name, target)
        return str(target)
    if source.startswith("package:"):
        module = source.split(":", 1)[1]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"model source {source!r}: Python package {module!r} is not installed")
        pkg_dir = Path(next(iter(spec.submodule_search_locations)))
        for candidate in (pkg_dir / "model", pkg_dir):
            if (candidate / "config.json").exists():
                return str(candidate)
        raise ModelLoadError(f"model source {source!r}: no config.json in {pkg_dir} or {pkg_dir / 'model'}")
    if "://" in source and not source.startswith("file://"):
        return _fetch_remote_folder(source, storage_options)
    local = source.removeprefix("file://")
    if os.path.isdir(local):
        return local
    if local.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder not found: {source}")
    return source  # a hub id


def _fetch_remote_folder(uri: str, storage_options: dict | None) -> str:
    from mmbatch import storage

    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    target = cache_root() / "remote" / key
    marker = target / ".complete"
    if marker.exists():
        return str(target)
    with _file_lock(target.with_suffix(".lock")):
        if not marker.exists():
            fs, path = storage.filesystem(uri, storage_options)
            try:
                fs.get(path.rstrip("/") + "/", str(target) + "/", recursive=True)
            except Exception as err:
                raise ModelLoadError(f"cannot fetch model folder {uri}: {str(err).splitlines()[0][:200]}") from None
            if not (target / "config.json").exists():
                raise ModelLoadError(f"model folder {uri} has no config.json")
            marker.touch()
    return str(target)


def pick_device(wants_gpu: bool):
    """CUDA when the worker was given a GPU and torch can see one, else CPU (CI)."""
    import torch

    if wants_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(requested: str, device):
    import torch

    if requested == "float32" or device.type != "cuda":
        return torch.float32
    if requested == "float16":
        return torch.float16
    if requested == "bfloat16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load_pretrained(auto_class, source: str, revision: str | None, storage_options: dict | None = None, **kwargs):
    """`auto_class.from_pretrained` with a clear error naming the source on failure."""
    path = resolve_source(source, storage_options)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per actor per model drowns the job log
    try:
        return auto_class.from_pretrained(path, revision=revision, **kwargs)
    except Exception as err:
        raise ModelLoadError(
            f"cannot load {auto_class.__name__} from {source!r}"
            + (f" (revision {revision})" if revision else "")
            + f": {str(err).splitlines()[0][:300]}"
        ) from None
