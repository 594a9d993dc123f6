"""Inputs that hold more than a file: WebDataset tar shards and HLS recordings.

- A WebDataset shard (`*.tar`) holds samples; files sharing a key (`clip7.mp4`, `clip7.vtt`)
  form one sample. Each sample with a video becomes one VideoRef whose uri is an fsspec
  chained URL, `tar://clip7.mp4::s3://bucket/shard-000.tar`, read member by member.
- An HLS media playlist (`*.m3u8`) is one video: its segments (`.ts`, or `.m4s`/`.mp4` after an
  `#EXT-X-MAP` init segment) are concatenated in playlist order into one local spool file,
  which keeps the stream's own timestamps continuous across segment boundaries.
"""

from __future__ import annotations

import posixpath
import shutil
import tarfile
from dataclasses import dataclass
from typing import Any

from mmbatch.errors import InputError

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
SIDECAR_EXTS = (".vtt", ".srt", ".txt")
_COPY_CHUNK = 4 << 20  # bounded memory while spooling: 4 MiB at a time


@dataclass(frozen=True)
class TarSample:
    key: str
    video_member: str
    size: int
    transcript_member: str | None


def list_tar_samples(fs, shard_path: str) -> list[TarSample]:
    """Scan a tar shard's headers (streaming; member data is skipped, not read)."""
    members: dict[str, dict[str, tuple[str, int]]] = {}
    try:
        with fs.open(shard_path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base = posixpath.basename(info.name)
                key, dot, ext = base.partition(".")
                prefix = posixpath.join(posixpath.dirname(info.name), key)
                members.setdefault(prefix, {})["." + ext.lower() if dot else ""] = (info.name, info.size)
    except tarfile.TarError as err:
        raise InputError(f"unreadable tar shard {shard_path}: {err}") from None
    samples = []
    for key, files in sorted(members.items()):
        video = next(((files[e][0], files[e][1]) for e in VIDEO_EXTS if e in files), None)
        if video is None:
            continue
        transcript = next((files[e][0] for e in SIDECAR_EXTS if e in files), None)
        samples.append(TarSample(key, video[0], video[1], transcript))
    return samples


def tar_member_uri(member: str, shard_uri: str) -> str:
    return f"tar://{member}::{shard_uri}"


# -- HLS ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Playlist:
    init: str | None
    segments: list[str]
    duration_s: float


def parse_m3u8(text: str, base: str) -> Playlist:
    """A media playlist's init segment, segment URIs (resolved against `base`) and duration."""
    if not text.lstrip().startswith("#EXTM3U"):
        raise InputError(f"not an HLS playlist (no #EXTM3U header): {base}")
    init, segments, duration = None, [], 0.0
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-STREAM-INF"):
            raise InputError(f"{base} is a master playlist; point the input at a media playlist")
        if line.startswith("#EXT-X-MAP:"):
            attrs = dict(part.split("=", 1) for part in line.split(":", 1)[1].split(",") if "=" in part)
            init = _resolve(base, attrs["URI"].strip('"'))
        elif line.startswith("#EXTINF:"):
            duration += float(line.split(":", 1)[1].split(",", 1)[0])
        elif line and not line.startswith("#"):
            segments.append(_resolve(base, line))
    if not segments:
        raise InputError(f"HLS playlist without segments: {base}")
    return Playlist(init, segments, duration)


def _resolve(base: str, ref: str) -> str:
    if "://" in ref or ref.startswith("/"):
        return ref
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), ref))


def spool_hls(fs, playlist_path: str, local_path: str) -> None:
    """Concatenate init + segments into one local file, streaming in bounded chunks."""
    with fs.open(playlist_path, "rb") as fh:
        pl = parse_m3u8(fh.read().decode("utf-8", errors="replace"), playlist_path)
    with open(local_path, "wb") as out:
        for part in ([pl.init] if pl.init else []) + pl.segments:
            with fs.open(part, "rb", block_size=_COPY_CHUNK) as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)


def spool_stream(fs, path: str, local_path: str, **open_kwargs: Any) -> None:
    # block_size bounds the client's read-ahead buffer (s3fs would otherwise pick its default).
    with fs.open(path, "rb", block_size=_COPY_CHUNK, **open_kwargs) as src, open(local_path, "wb") as out:
        shutil.copyfileobj(src, out, _COPY_CHUNK)
