"""Inputs that hold more than a file: WebDataset tar shards and HLS recordings.

- A WebDataset shard (`*.tar`) holds samples; files sharing a key (`clip7.mp4`, `clip7.vtt`)
  form one sample. Each sample with a video becomes one VideoRef whose uri is an fsspec
  chained URL, `tar://clip7.mp4::s3://bucket/shard-000.tar`, read member by member.
- An HLS media playlist (`*.m3u8`) is one video: its segments (`.ts`, or `.m4s`/`.mp4` after an
  `#EXT-X-MAP` init segment) are concatenated in playlist order into one local spool file,
  which keeps the stream's own timestamps continuous across segment boundaries.
"""

from __future__ import annotations

import functools
import io
import math
import posixpath
import shutil
from dataclasses import dataclass

from mmbatch.errors import InputError
from mmbatch.inputs.tar_scan import CorruptRegion, TarMember, scan_tar

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
SIDECAR_EXTS = (".vtt", ".srt", ".txt")
_COPY_CHUNK = 4 << 20  # bounded memory while spooling: 4 MiB at a time
MAX_PLAYLIST_BYTES = 4 << 20


@dataclass(frozen=True)
class TarSample:
    key: str
    video_member: str
    size: int
    transcript_member: str | None


def list_tar_samples(fs, shard_path: str) -> tuple[list[TarSample], list[CorruptRegion]]:
    """Scan a tar shard's headers, seeking over member data (nothing else is read).

    A damaged member header, or one whose data would run past the end of the shard, does not end
    the scan: it goes on at the next readable header (tar_scan.scan_tar, linear in the shard's
    bytes), and the skipped span is returned as a corrupt region, so one bad member fails only
    itself.
    """
    members: dict[str, dict[str, tuple[str, int]]] = {}
    try:
        found, corrupt = _scan(fs, shard_path)
    except OSError as err:
        raise InputError(f"unreadable tar shard {shard_path}: {err}") from None
    for m in found:
        base = posixpath.basename(m.name)
        key, dot, ext = base.partition(".")
        prefix = posixpath.join(posixpath.dirname(m.name), key)
        members.setdefault(prefix, {})["." + ext.lower() if dot else ""] = (m.name, m.size)
    samples = []
    for key, files in sorted(members.items()):
        video = next(((files[e][0], files[e][1]) for e in VIDEO_EXTS if e in files), None)
        if video is None:
            continue
        transcript = next((files[e][0] for e in SIDECAR_EXTS if e in files), None)
        samples.append(TarSample(key, video[0], video[1], transcript))
    return samples, corrupt


def tar_member_uri(member: str, shard_uri: str) -> str:
    return f"tar://{member}::{shard_uri}"


class _Range(io.RawIOBase):
    """Read-only view of `size` bytes of a file object from `start` (one tar member)."""

    def __init__(self, fh, start: int, size: int):
        self._fh, self._start, self._size, self._pos = fh, start, size, 0
        fh.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._fh.read(n)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


def _scan(fs, shard_path: str) -> tuple[list[TarMember], list[CorruptRegion]]:
    size = int(fs.info(shard_path)["size"])
    with fs.open(shard_path, "rb") as fh:
        members, corrupt, _ = scan_tar(fh, size)
    return members, corrupt


@functools.lru_cache(maxsize=32)
def _member_index(fs, shard_path: str) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size), from the same header scan as discovery."""
    return {m.name: (m.offset_data, m.size) for m in _scan(fs, shard_path)[0]}


def open_tar_member(fs, shard_path: str, member: str, block_size: int = _COPY_CHUNK):
    """A member's bytes straight from the shard by range (fsspec's tar filesystem would give up
    on the whole shard at its first corrupt header)."""
    try:
        start, size = _member_index(fs, shard_path)[member]
    except KeyError:
        raise FileNotFoundError(f"no member {member} in the tar shard") from None
    return io.BufferedReader(_Range(fs.open(shard_path, "rb", block_size=block_size), start, size), _COPY_CHUNK)


# -- HLS ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Playlist:
    init: str | None
    segments: list[str]
    duration_s: float


def parse_m3u8(text: str, base: str) -> Playlist:
    """A media playlist's init segment, segment URIs (resolved against `base`) and duration.
    One pass over the lines: linear in the text. Anything malformed is an InputError."""
    if not text.lstrip().startswith("#EXTM3U"):
        raise InputError(f"not an HLS playlist (no #EXTM3U header): {base}")
    init, segments, duration = None, [], 0.0
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line.startswith("#EXT-X-STREAM-INF"):
            raise InputError(f"{base} is a master playlist; point the input at a media playlist")
        if line.startswith("#EXT-X-MAP:"):
            attrs = dict(part.split("=", 1) for part in line.split(":", 1)[1].split(",") if "=" in part)
            if "URI" not in attrs:
                raise InputError(f"HLS playlist {base}, line {number}: #EXT-X-MAP without a URI")
            init = _resolve(base, attrs["URI"].strip('"'))
        elif line.startswith("#EXTINF:"):
            duration += _extinf_seconds(line, base, number)
        elif line and not line.startswith("#"):
            segments.append(_resolve(base, line))
    if not segments:
        raise InputError(f"HLS playlist without segments: {base}")
    return Playlist(init, segments, duration)


def _extinf_seconds(line: str, base: str, number: int) -> float:
    value = line.split(":", 1)[1].split(",", 1)[0].strip()
    try:
        seconds = float(value) if len(value) <= 32 else math.nan
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < 86400:  # NaN fails too
        raise InputError(f"HLS playlist {base}, line {number}: bad segment duration {value[:32]!r}")
    return seconds


def read_playlist(fs, playlist_path: str) -> Playlist:
    """Read (at most MAX_PLAYLIST_BYTES) and parse a playlist."""
    with fs.open(playlist_path, "rb") as fh:
        data = fh.read(MAX_PLAYLIST_BYTES + 1)
    if len(data) > MAX_PLAYLIST_BYTES:
        raise InputError(f"HLS playlist larger than {MAX_PLAYLIST_BYTES} bytes: {playlist_path}")
    return parse_m3u8(data.decode("utf-8", errors="replace"), playlist_path)


def _resolve(base: str, ref: str) -> str:
    if "://" in ref or ref.startswith("/"):
        return ref
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), ref))



def spool_hls(fs, playlist_path: str, local_path: str, check=None) -> None:
    """Concatenate init + segments into one local file, streaming in bounded chunks.

    `check(uri)` is called for every segment before anything is read (the trust boundary); a
    segment on another scheme is refused too (its filesystem is not this night's).
    """
    pl = read_playlist(fs, playlist_path)
    parts = ([pl.init] if pl.init else []) + pl.segments
    for part in parts:
        if check is not None:
            check(part)
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        if "://" in part and part.split("://", 1)[0].lower() not in protocols:
            raise InputError(f"HLS segment on another kind of store than its playlist: {part.split('?', 1)[0]}")
    with open(local_path, "wb") as out:
        for part in parts:
            with fs.open(part, "rb", block_size=_COPY_CHUNK) as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)


def spool_stream(uri: str, storage_options: dict | None, local_path: str) -> None:
    with open_input(uri, storage_options) as src, open(local_path, "wb") as out:
        shutil.copyfileobj(src, out, _COPY_CHUNK)


def open_input(uri: str, storage_options: dict | None):
    """Open an input for reading: a file or object, or a tar member (`tar://m::<shard uri>`).
    block_size bounds the client's read-ahead buffer (s3fs would otherwise pick its default)."""
    from mmbatch import storage

    if uri.startswith("tar://") and "::" in uri:
        member, shard = uri[len("tar://"):].split("::", 1)
        fs, shard_path = storage.filesystem(shard, storage_options)
        return open_tar_member(fs, shard_path, member)
    fs, path = storage.filesystem(uri, storage_options)
    return fs.open(path, "rb", block_size=_COPY_CHUNK)
