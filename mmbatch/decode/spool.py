"""A path FFmpeg can open for any input. Local files are used in place; remote objects, tar
members and HLS segment lists are streamed (bounded chunks) to node-local disk first, since
decord copies a file-like object wholly into memory."""

from __future__ import annotations

import os
import shutil
import tempfile

from mmbatch.errors import DecodeError, first_line
from mmbatch.storage import is_local


def local_path(uri: str, kind: str, storage_options: dict | None, trust=None) -> tuple[str, str | None]:
    """(path, spool folder to remove afterwards, or None). `trust`: the run's AllowedRoots."""
    if kind == "file" and is_local(uri):
        path = uri.removeprefix("file://")
        if not os.path.exists(path):
            raise DecodeError(f"file not found: {uri}")
        if os.path.getsize(path) == 0:
            raise DecodeError("empty file (0 bytes)")
        return path, None
    from mmbatch import storage
    from mmbatch.inputs import containers
    from mmbatch.trust import TrustError, redact_uri

    if trust is not None and not trust.allows(uri):
        raise DecodeError(f"refused {redact_uri(uri)}: outside the allowed input roots")
    spool = tempfile.mkdtemp(prefix="mmbatch-spool-")
    try:
        if kind == "hls":
            fs, remote = storage.filesystem(uri, storage_options)
            local = os.path.join(spool, "stream.ts")
            containers.spool_hls(fs, remote, local, check=_segment_check(fs, trust))
        else:  # an object or a tar member (read by range from its shard)
            name = uri.split("::", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            local = os.path.join(spool, name or "video")
            containers.spool_stream(uri, storage_options, local)
    except Exception as err:
        shutil.rmtree(spool, ignore_errors=True)
        if isinstance(err, TrustError):
            raise DecodeError(str(err)) from None
        if isinstance(err, FileNotFoundError):
            raise DecodeError(f"file not found: {redact_uri(uri)}") from None
        raise DecodeError(f"cannot read {redact_uri(uri)}: {first_line(err, 200)}") from None
    if os.path.getsize(local) == 0:
        shutil.rmtree(spool, ignore_errors=True)
        raise DecodeError("empty file (0 bytes)")
    return local, spool


def remove_spool(spool_dir: str | None) -> None:
    if spool_dir:
        shutil.rmtree(spool_dir, ignore_errors=True)


def _segment_check(fs, trust):
    """A check for each playlist segment: its full URI must lie under the allowed roots."""
    from mmbatch.inputs.sources import full_uri

    def check(path: str) -> None:
        if trust is not None:
            trust.check(path if "://" in path else full_uri(fs, path))

    return check
