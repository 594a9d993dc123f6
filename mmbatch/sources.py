"""Discovery: turn an input URI (folder, prefix, glob or single file) into VideoRef rows.

Runs on the driver before any Ray work, so a missing bucket, denied access or an empty
prefix is reported at once with the URI and the cause.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

from mmbatch import storage
from mmbatch.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
TRANSCRIPT_EXTENSIONS = (".vtt", ".srt", ".txt")


@dataclass(frozen=True)
class VideoRef:
    """One input video. Plain data: nothing is opened until a decoder asks."""

    video_id: str
    uri: str
    size: int
    etag: str
    sidecars: dict[str, str] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["transcript_uri"] = self.sidecars.get("transcript", "")
        del row["sidecars"]
        return row


def _split_ext(path: str) -> tuple[str, str]:
    stem, ext = posixpath.splitext(path)
    return stem, ext.lower()


def _etag(info: dict[str, Any]) -> str:
    """Content identity from listing metadata: ETag on object stores, size+mtime locally."""
    for key in ("ETag", "etag", "md5Hash", "content_md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    return f"{info.get('size', 0)}-{mtime}"


def _list(fs, path: str, uri: str) -> dict[str, dict[str, Any]]:
    try:
        if any(ch in path for ch in "*?["):
            return fs.glob(path, detail=True)
        if fs.isfile(path):
            return {path: fs.info(path)}
        if not fs.exists(path):
            raise InputError(f"input not found: {uri} (no such file, folder, bucket or prefix)")
        return fs.find(path, detail=True)
    except InputError:
        raise
    except FileNotFoundError as err:
        raise InputError(f"input not found: {uri} ({_reason(err)})") from None
    except PermissionError as err:
        raise InputError(f"access denied listing {uri} ({_reason(err)})") from None
    except OSError as err:
        raise InputError(f"cannot list {uri}: {_reason(err)}") from None


def _reason(err: BaseException) -> str:
    # Exceptions from botocore never carry credentials, but keep the message short anyway.
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def discover(uri: str, storage_options: dict[str, Any] | None = None) -> list[VideoRef]:
    """List the videos under `uri`, sorted by video_id, with same-stem sidecars attached."""
    fs, path = storage.filesystem(uri, storage_options)
    listing = _list(fs, path, uri)
    has_glob = any(ch in path for ch in "*?[")
    root = path.split("*", 1)[0].rsplit("/", 1)[0] if has_glob else path
    single_file = not has_glob and len(listing) == 1 and next(iter(listing)) == path.rstrip("/")
    if single_file:
        root = posixpath.dirname(path)

    transcripts: dict[str, str] = {}
    videos: list[tuple[str, dict[str, Any]]] = []
    for p, info in sorted(listing.items()):
        if info.get("type", "file") != "file":
            continue
        stem, ext = _split_ext(p)
        if ext in VIDEO_EXTENSIONS:
            videos.append((p, info))
        elif ext in TRANSCRIPT_EXTENSIONS:
            # .vtt/.srt (timed) win over .txt when a video has several.
            if stem not in transcripts or ext != ".txt":
                transcripts[stem] = p

    if single_file and videos:
        # A single video: look for its sidecar beside it.
        stem = _split_ext(path)[0]
        for ext in TRANSCRIPT_EXTENSIONS:
            if fs.exists(stem + ext):
                transcripts.setdefault(stem, stem + ext)

    if not videos:
        raise InputError(
            f"no videos found under {uri} (looked for {', '.join(VIDEO_EXTENSIONS)}, case-insensitive)"
        )

    refs: list[VideoRef] = []
    seen: dict[str, str] = {}
    for p, info in videos:
        stem = _split_ext(p)[0]
        rel = posixpath.relpath(stem, root.rstrip("/") or "/") if root else stem
        video_id = rel.lstrip("./") if rel.startswith("./") else rel
        if video_id in seen:
            raise InputError(
                f"two inputs map to video_id {video_id!r}: {seen[video_id]} and {p}; rename one"
            )
        seen[video_id] = p
        sidecars = {"transcript": full_uri(fs, transcripts[stem])} if stem in transcripts else {}
        refs.append(
            VideoRef(video_id=video_id, uri=full_uri(fs, p), size=int(info.get("size") or 0),
                     etag=_etag(info), sidecars=sidecars)
        )
    return sorted(refs, key=lambda r: r.video_id)


def full_uri(fs, path: str) -> str:
    """The URI to reopen `path` later: plain path locally, scheme://path elsewhere."""
    from fsspec.implementations.local import LocalFileSystem

    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
