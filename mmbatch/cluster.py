"""What a night needs from every node of a cluster: the environment that travels to the
workers, and the local folders that every node must see the same way.

No Ray here: `mmbatch/pipeline/ray_runtime.py` runs the checks on each node and builds the runtime_env
from what these functions decide. A local Ray started by the job is one machine, so none of
this applies to it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from mmbatch import allocator
from mmbatch.config import PipelineConfig
from mmbatch.models.loading import NAMED_SOURCES
from mmbatch.storage import is_local
from mmbatch.trust import AllowedRoots

# Settings workers read from their environment that carry no secret: they always travel with an
# attached run (the S3 endpoint and region for s3fs/botocore, the model cache, hub settings).
# Credentials travel only when the config names them in run.worker_env.
TRAVELLING_ENV = (
    "MMBATCH_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
)
# Entries of a folder's top level compared between nodes (enough to tell two disks apart).
SIGNATURE_ENTRIES = 200


def worker_env(config: PipelineConfig, environ: dict[str, str], already: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables that workers get: TRAVELLING_ENV and run.worker_env (those set on
    the driver only), and the allocator settings (run.malloc_tuning), minus what the job's own
    runtime_env already sets (`already`: Ray refuses a variable set twice)."""
    names = dict.fromkeys((*TRAVELLING_ENV, *config.run.worker_env))
    env = {n: environ[n] for n in names if n in environ}
    if config.run.malloc_tuning:  # the driver's own values, if it has them, travel instead
        env.update(allocator.malloc_env(environ))
    return {n: v for n, v in env.items() if n not in (already or {})}


def missing_worker_env(config: PipelineConfig, environ: dict[str, str]) -> list[str]:
    """Names listed in run.worker_env that the driver does not have (a typo, or a job without them)."""
    return [n for n in config.run.worker_env if n not in environ]


def job_runtime_env(environ: dict[str, str]) -> dict[str, Any]:
    """The runtime_env `ray job submit` gave this driver (empty when started otherwise)."""
    raw = environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def ships_code(runtime_env: dict[str, Any]) -> bool:
    """Whether a runtime_env already brings code to the workers (a working_dir or py_modules)."""
    return bool(runtime_env.get("working_dir") or runtime_env.get("py_modules"))


@dataclass(frozen=True)
class SharedPath:
    """A local folder or file the night reads or writes, which every node must see the same."""

    what: str  # "the output", "the input", "model folder of models.text", ...
    path: str
    signature: str  # what the driver sees there: path_signature, or the token of a probe file
    probe: bool = False  # a probe file the driver wrote (the output): nodes read its token


def local_paths(config: PipelineConfig, input_uri: str) -> list[tuple[str, str]]:
    """(what, path) of every local folder besides the output that workers read: the input's own
    root and local allowed roots (videos and sidecars), and local model folders."""
    out = []
    for scheme, path in AllowedRoots.for_input(input_uri, config.inputs.allowed_roots).roots:
        if scheme == "file":
            out.append(("the input" if not out else "inputs.allowed_roots", path))
    sources = {f"models.{m}": section.source for m, section in config.models.configured().items()}
    if config.fusion.checkpoint:
        sources["fusion.checkpoint"] = config.fusion.checkpoint
    for what, source in sources.items():
        if not source.startswith(NAMED_SOURCES) and is_local(source):
            local = source.removeprefix("file://")
            if os.path.exists(local):
                out.append((f"model folder of {what}", os.path.abspath(local)))
    return out


def packages(config: PipelineConfig) -> list[tuple[str, str]]:
    """(what, module) of every `package:` model source: installed on every node or refused."""
    return [(f"models.{m}", section.source.split(":", 1)[1]) for m, section in config.models.configured().items()
            if section.source.startswith("package:")]


def path_signature(path: str) -> str:
    """What this node sees at `path`: the names and sizes of a folder's first entries (or a
    file's size), hashed; "missing" where there is nothing. Two nodes that disagree do not
    share the folder."""
    path = path.removeprefix("file://")
    try:
        if os.path.isdir(path):
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)[:SIGNATURE_ENTRIES]
                seen = [(e.name, e.stat().st_size if e.is_file() else -1) for e in entries]
        elif os.path.isfile(path):
            seen = [("", os.path.getsize(path))]
        else:
            return "missing"
    except OSError as err:
        return f"unreadable: {type(err).__name__}"
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:16]


def read_token(path: str) -> str:
    """The probe token the driver wrote at `path`, as this node reads it ("missing" if absent)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(200)
    except OSError:
        return "missing"


def node_view(paths: list[SharedPath], modules: list[tuple[str, str]],
              output_probe: tuple[str, dict] | None = None) -> dict[str, Any]:
    """Run on each node: what it sees of every shared path, whether each package imports, and
    whether it can write to the (object storage) output with the workers' environment: a probe file
    `output_probe` = (uri, storage_options) written as clip files are, "" or why not."""
    import importlib.util

    seen = {p.path: (read_token(p.path) if p.probe else path_signature(p.path)) for p in paths}
    view = {"paths": seen, "modules": {m: importlib.util.find_spec(m) is not None for _, m in modules}}
    if output_probe is not None:
        view["output"] = write_probe(*output_probe)
    return view


def write_probe(uri: str, storage_options: dict | None) -> str:
    """Write a small file at `uri` as a worker writes clip files: "" or the reason it could not."""
    from mmbatch import storage
    from mmbatch.errors import short_reason

    try:
        fs, path = storage.filesystem(uri, storage_options)
        fs.pipe_file(path, b"probe")
        return ""
    except Exception as err:  # said to the driver, which names the night's error
        return short_reason(err, 300)


def shared_problems(paths: list[SharedPath], modules: list[tuple[str, str]], views: dict[str, dict]) -> list[str]:
    """Every (node, path) that a node sees differently from the driver, as one line each."""
    problems = []
    for node, view in sorted(views.items()):
        for p in paths:
            if view["paths"].get(p.path) != p.signature:
                problems.append(f"{p.what} {p.path} is not the same on node {node[:12]} "
                                f"({'missing there' if view['paths'].get(p.path) == 'missing' else 'other content'})")
        for what, module in modules:
            if not view["modules"].get(module):
                problems.append(f"{what}: package {module!r} is not installed on node {node[:12]}")
    return problems
