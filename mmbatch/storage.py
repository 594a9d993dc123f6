"""fsspec filesystems from URIs + storage options.

Local paths, s3:// and any other fsspec protocol go through the same calls. For S3, retries
and timeouts are configured in botocore (adaptive retry mode), never by hand-written loops;
credentials come from the standard AWS chain unless storage_options say otherwise.
"""

from __future__ import annotations

import copy
import os
import posixpath
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from mmbatch.errors import InputError

TEMP_INFIX = ".tmp-"  # <file>.tmp-<pid>: an atomic write in flight on a local disk
ABANDONED_TEMP_S = 3600.0  # a temporary file untouched this long was left by a killed process
_S3_DEFAULT_CONFIG = {
    "retries": {"max_attempts": 8, "mode": "adaptive"},
    "connect_timeout": 20,
    "read_timeout": 120,
}


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def is_local(uri: str) -> bool:
    """A path on this machine's disk: no scheme, or file://."""
    return "://" not in uri or uri.startswith("file://")


def is_local_fs(fs) -> bool:
    """A filesystem on this machine's disk (renames are atomic, paths are plain)."""
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


# storage_options are for the object store of the night; a local or web URI gets none
# (s3fs options given to the HTTP filesystem raise TypeError).
_NO_OPTIONS = ("file", "local", "http", "https")


def _options_for(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    if protocol_of(uri) in _NO_OPTIONS:
        return {}
    opts = copy.deepcopy(storage_options or {})
    if protocol_of(uri) in ("s3", "s3a"):
        cfg = opts.setdefault("config_kwargs", {})
        for key, value in _S3_DEFAULT_CONFIG.items():
            cfg.setdefault(key, value)
    return opts


def s3_settings(storage_options: dict[str, Any] | None) -> dict[str, str]:
    """The S3 settings inside s3fs-style storage options (`key`, `secret`, `token`, `endpoint_url`,
    `client_kwargs.region_name`), by plain names, for libraries with their own option names
    (delta-rs, pyiceberg, Lance). Only what is given: otherwise the standard AWS chain decides."""
    so = storage_options or {}
    client = so.get("client_kwargs") or {}
    found = {"key": so.get("key"), "secret": so.get("secret"), "token": so.get("token"),
             "endpoint": so.get("endpoint_url") or client.get("endpoint_url"),
             "region": client.get("region_name") or so.get("region_name")}
    return {k: str(v) for k, v in found.items() if v}


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a URI; raises InputError for an unknown scheme."""
    options = _options_for(uri.rsplit("::", 1)[-1], storage_options)
    if "::" in uri:  # chained URL (tar://member::s3://bucket/shard.tar): options go to the innermost store
        options = {protocol_of(uri.rsplit("::", 1)[-1]): options} if options else {}
    try:
        fs, path = url_to_fs(uri, **options)
    except (ValueError, ImportError) as err:
        raise InputError(f"unsupported URI scheme in {uri!r}: {err}") from None
    return fs, path


def join(root: str, *parts: str) -> str:
    """Join path parts onto a URI or local path, keeping the scheme."""
    if "://" in root:
        scheme, rest = root.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest.rstrip("/") or "/", *parts)
    return posixpath.join(root, *parts)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a whole object so readers never see a partial one.

    Object stores make a PUT atomic already; on local disks write a temp file and rename.
    """
    if is_local_fs(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}{TEMP_INFIX}{os.getpid()}"
        try:
            with fs.open(tmp, "wb") as f:
                f.write(data)
            fs.mv(tmp, path)
        except BaseException:  # a full disk or a denied rename: no half-written file left behind
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def remove_abandoned_temps(fs: fsspec.AbstractFileSystem, folders: list[str],
                           older_than_s: float = ABANDONED_TEMP_S) -> list[str]:
    """Remove the temporary files of atomic writes (local disks only) that a killed process left:
    untouched for `older_than_s`, far longer than any write takes. Returns what was removed."""
    import time

    if not is_local_fs(fs):
        return []
    removed = []
    for folder in folders:
        for path in fs.glob(posixpath.join(folder, f"*{TEMP_INFIX}*")) if fs.exists(folder) else []:
            try:
                if time.time() - os.stat(path).st_mtime > older_than_s:
                    os.unlink(path)
                    removed.append(path)
            except OSError:  # gone meanwhile, or not ours to remove: left alone
                pass
    return removed


def unreadable_parquet(fs: fsspec.AbstractFileSystem, paths: list[str]) -> list[str]:
    """Those of `paths` whose Parquet footer does not parse (garbled, truncated, emptied) or that
    are gone: two small reads a file, in parallel. A store that fails to answer raises as it is (a
    retry may pass): only what was read and is wrong counts as damage."""
    import io
    import struct
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    def readable(path: str) -> bool:
        try:
            size = fs.size(path)
            tail = fs.cat_file(path, start=max(0, size - 8), end=size) if size >= 12 else b""
            if len(tail) < 8 or tail[4:] != b"PAR1":
                return False
            length = struct.unpack("<I", tail[:4])[0]
            if length + 12 > size:
                return False
            footer = fs.cat_file(path, start=size - 8 - length, end=size)
        except FileNotFoundError:
            return False
        try:  # the footer alone, behind the leading magic: what pyarrow checks when it opens the file
            pq.read_metadata(io.BytesIO(b"PAR1" + footer))
            return True
        except Exception:
            return False

    with ThreadPoolExecutor(max_workers=min(16, len(paths) or 1)) as pool:
        ok = list(pool.map(readable, paths))
    return [p for p, good in zip(paths, ok) if not good]


def read_parquet(fs: fsspec.AbstractFileSystem, path: str, **kwargs):
    """One Parquet object as a pyarrow Table (one GET; pyarrow's reader options in kwargs)."""
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(fs.cat_file(path)), **kwargs)


def write_parquet(fs: fsspec.AbstractFileSystem, path: str, table, **kwargs) -> None:
    """One Parquet object, written whole (see write_bytes_atomic); pyarrow's writer options in kwargs."""
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, **{"compression": "zstd", **kwargs})
    write_bytes_atomic(fs, path, buf.getvalue())


@contextmanager
def file_lock(path: Path):
    """Serialise builders and downloaders of one local folder on a node (several actors may start
    at once): an exclusive `flock` on `path`."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
