"""Discovery: turn an input URI (folder, prefix, glob or single file) into VideoRef rows.

Runs on the driver before any Ray work, so a missing bucket, denied access or an empty
prefix is reported at once with the URI and the cause. What is wrong with one input — a
manifest row outside the allowed roots, a row whose object cannot be read, a corrupt member
of a tar shard — becomes a VideoRef with `error` set: that input fails, with the reason, and
nothing is read from it; the rest of the night goes on.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from mmbatch import storage
from mmbatch.errors import InputError, first_line
from mmbatch.inputs import containers
from mmbatch.inputs.manifests import is_manifest, read_manifest
from mmbatch.trust import AllowedRoots, TrustError, redact_text, redact_uri

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
TRANSCRIPT_EXTENSIONS = (".vtt", ".srt", ".txt")


@dataclass(frozen=True)
class VideoRef:
    """One input video. Plain data: nothing is opened until a decoder asks."""

    video_id: str
    uri: str
    size_bytes: int
    etag: str
    sidecars: dict[str, str] = field(default_factory=dict)
    kind: str = "file"  # file | tar (a WebDataset sample) | hls (an .m3u8 media playlist)
    error: str = ""  # set: this input fails with this reason and is never read

    def same_content(self, etag: str, size_bytes: int) -> bool:
        """True when (etag, size) recorded for this video elsewhere (a staged attempt, the state
        table) describe the object as it is now: the one same-content rule of incremental runs."""
        return (etag, size_bytes) == (self.etag, self.size_bytes)

    @property
    def display_uri(self) -> str:
        """The URI as it may be stored and logged: credentials and signatures removed."""
        return redact_uri(self.uri)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        del row["error"]
        row["transcript_uri"] = self.sidecars.get("transcript", "")
        row["segments_uri"] = self.sidecars.get("segments", "")
        row["segments"] = self.sidecars.get("segments_json", "")  # inline, from a manifest
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


def _is_glob(fs, path: str) -> bool:
    """A pattern, unless a file or folder of exactly that name exists (`clips [x]/`, `why?/`)."""
    if not any(ch in path for ch in "*?["):
        return False
    try:
        return not fs.exists(path)
    except OSError:
        return True


def _list(fs, path: str, uri: str, has_glob: bool) -> dict[str, dict[str, Any]]:
    try:
        if has_glob:
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
    return first_line(err, 300)


INPUT_KINDS = {**{ext: "file" for ext in VIDEO_EXTENSIONS}, ".tar": "tar", ".m3u8": "hls"}


def unreadable_name(path: str) -> str:
    """Why a listed name cannot travel as an id (Arrow and Parquet hold UTF-8 only), or ''. Linux
    allows any bytes in a name; Python carries the undecodable ones as surrogates."""
    try:
        path.encode("utf-8")
        return ""
    except UnicodeEncodeError:
        return f"its name is not valid UTF-8 ({bytes_safe(posixpath.basename(path))}); rename the file to score it"


def bytes_safe(text: str) -> str:
    """A name with undecodable bytes written as \\xNN escapes: a stable, readable id."""
    import os

    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _not_a_file(info: dict[str, Any]) -> str:
    """Why a listed entry with an input's extension is not read, or '' for a regular file."""
    kind = info.get("type", "file")
    if kind in ("file", "directory"):
        return ""
    if info.get("islink"):
        return "a symbolic link that leads nowhere (broken, or a loop); nothing was read"
    return "not a regular file (a FIFO, socket or device); nothing was read"


def _sort_listing(listing: dict[str, dict]) -> tuple[list[tuple[str, dict, str]], dict[str, str], dict[str, str]]:
    """Inputs (path, info, file | tar | hls, or the reason it is refused), transcripts and segment
    files by stem. Every entry with an input's extension is an input: one that is not a regular
    file, or whose name is not UTF-8, is refused with the reason rather than left out."""
    transcripts: dict[str, str] = {}
    segment_files: dict[str, str] = {}
    found: list[tuple[str, dict[str, Any], str]] = []
    for p, info in sorted(listing.items()):
        stem, ext = _split_ext(p)
        if ext in INPUT_KINDS:
            refused = _not_a_file(info) or unreadable_name(p)
            if info.get("type", "file") != "directory":
                found.append((p, info, "refused: " + refused if refused else INPUT_KINDS[ext]))
        elif info.get("type", "file") != "file" or unreadable_name(p):
            continue
        elif ext in TRANSCRIPT_EXTENSIONS and (stem not in transcripts or ext != ".txt"):
            transcripts[stem] = p  # .vtt/.srt (timed) win over .txt
        elif ext == ".json":
            segment_files[stem] = p
    return found, transcripts, segment_files


def discover(uri: str, storage_options: dict[str, Any] | None = None, *, trust: AllowedRoots | None = None,
             max_manifest_rows: int = 1_000_000, max_manifest_bytes: int = 256 << 20,
             watch: Callable[[str], None] | None = None) -> list[VideoRef]:
    """List the videos under `uri`, sorted by video_id.

    `uri` may be a folder/prefix, a glob, a single video, a manifest (.csv/.jsonl/.parquet),
    a WebDataset shard (.tar) or an HLS media playlist (.m3u8); a prefix may mix videos,
    shards and playlists. Same-stem .vtt/.srt/.txt files are attached as transcripts.
    Manifest rows are checked against `trust` (default: the input's own folder) before they
    are touched. `watch(what)` is told what is being read (for the plan's deadline).
    """
    watch = watch or (lambda what: None)
    trust = trust or AllowedRoots.for_input(uri)
    fs, path = storage.filesystem(uri, storage_options)
    if is_manifest(path):
        watch(f"reading the manifest {redact_uri(uri)}")
        rows = read_manifest(fs, path, uri, max_rows=max_manifest_rows, max_bytes=max_manifest_bytes)
        return _from_manifest(fs, path, uri, rows, _Reach(storage_options, trust, watch))
    watch(f"listing {redact_uri(uri)}")
    has_glob = _is_glob(fs, path)
    listing = _list(fs, path, uri, has_glob)
    single_file = not has_glob and len(listing) == 1 and next(iter(listing)) == path.rstrip("/")
    root = path.split("*", 1)[0].rsplit("/", 1)[0] if has_glob else path
    if single_file:
        root = posixpath.dirname(path)
    root = root.rstrip("/")

    found, transcripts, segment_files = _sort_listing(listing)
    if single_file and found:
        stem = _split_ext(path)[0]
        for ext in TRANSCRIPT_EXTENSIONS:
            if stem not in transcripts and fs.exists(stem + ext):
                transcripts[stem] = stem + ext
    if not found:
        raise InputError(
            f"no videos found under {uri} (looked for {', '.join(VIDEO_EXTENSIONS)}, .tar shards and "
            ".m3u8 playlists, case-insensitive)"
        )

    refs: list[VideoRef] = []
    for p, info, kind in found:
        stem = _split_ext(p)[0]
        rel = posixpath.relpath(stem, root or "/") if root else stem
        if kind.startswith("refused: "):
            refs.append(VideoRef(video_id=bytes_safe(rel), uri=bytes_safe(full_uri(fs, p)), size_bytes=0, etag="",
                                 error=kind.removeprefix("refused: ")))
            continue
        if kind == "tar":
            watch(f"scanning the tar shard {redact_uri(full_uri(fs, p))}")
            refs.extend(_tar_refs(fs, p, rel, info))
            continue
        sidecars = {"transcript": full_uri(fs, transcripts[stem])} if stem in transcripts else {}
        if stem in segment_files:
            sidecars["segments"] = full_uri(fs, segment_files[stem])
        refs.append(VideoRef(video_id=rel, uri=full_uri(fs, p), size_bytes=int(info.get("size") or 0),
                             etag=_etag(info), sidecars=sidecars, kind=kind))
    return _unique(refs)


def _tar_refs(fs, shard: str, shard_id: str, info: dict[str, Any]) -> list[VideoRef]:
    shard_uri = full_uri(fs, shard)
    if "://" not in shard_uri:
        shard_uri = "file://" + shard_uri
    try:
        samples, corrupt = containers.list_tar_samples(fs, shard)
    except InputError as err:  # the shard cannot be opened at all: it fails, the night goes on
        return [VideoRef(video_id=shard_id, uri=shard_uri, size_bytes=int(info.get("size") or 0), etag=_etag(info),
                         kind="tar", error=redact_text(str(err)))]
    refs = [VideoRef(video_id=f"{shard_id}/corrupt-at-{c.offset}", uri=shard_uri, size_bytes=c.length,
                     etag=f"{_etag(info)}:{c.offset}", kind="tar",
                     error=f"corrupt tar member header at byte {c.offset} of the shard ({c.length} bytes skipped)")
            for c in corrupt]
    if not samples and not corrupt:
        refs.append(VideoRef(video_id=shard_id, uri=shard_uri, size_bytes=int(info.get("size") or 0), etag=_etag(info),
                             kind="tar", error="tar shard holds no video member"))
    for sample in samples:
        sidecars = ({"transcript": containers.tar_member_uri(sample.transcript_member, shard_uri)}
                    if sample.transcript_member else {})
        refs.append(VideoRef(video_id=f"{shard_id}/{sample.key}",
                             uri=containers.tar_member_uri(sample.video_member, shard_uri), size_bytes=sample.size,
                             etag=f"{_etag(info)}:{sample.video_member}", sidecars=sidecars, kind="tar"))
    return refs


@dataclass(frozen=True)
class _Reach:
    """How discovery reaches a manifest's rows: the stores' options, the roots it may read, and
    who is told what is being read."""

    storage_options: dict | None
    trust: AllowedRoots
    watch: Callable[[str], None]


def _from_manifest(fs, path: str, uri: str, rows, reach: _Reach) -> list[VideoRef]:
    refs = []
    storage_options, trust, watch = reach.storage_options, reach.trust, reach.watch
    for number, row in enumerate(rows, 1):
        target = row["uri"] if "://" in row["uri"] else full_uri(fs, row["uri"])  # relative rows: the manifest's store
        watch(f"checking {redact_uri(target)} (video {number} of the manifest {redact_uri(uri)})")
        stem, ext = _split_ext(target.split("?", 1)[0])
        video_id = str(row["video_id"] or posixpath.relpath(stem.split("://", 1)[-1],
                                                              posixpath.dirname(path)))
        kind = "hls" if ext == ".m3u8" else "file"
        try:
            trust.check(target)  # before anything is read from it, a stat included
            tfs, tpath = (fs, row["uri"]) if "://" not in row["uri"] else storage.filesystem(target, storage_options)
            info = tfs.info(tpath)
        except TrustError as err:
            refs.append(VideoRef(video_id=video_id, uri=target, size_bytes=0, etag="", kind=kind, error=str(err)))
            continue
        except Exception as err:  # missing, denied, or a store that cannot be reached: this row fails
            refs.append(VideoRef(video_id=video_id, uri=target, size_bytes=0, etag="", kind=kind,
                                 error=f"cannot read {redact_uri(target)}: {_reason(err)}"))
            continue
        tstem = _split_ext(tpath)[0]
        sidecars = {}
        for side in (".vtt", ".srt", ".txt"):
            if tfs.exists(tstem + side):
                sidecars = {"transcript": full_uri(tfs, tstem + side)}
                break
        if row["segments"]:
            sidecars["segments_json"] = json.dumps(sorted(row["segments"]))
        refs.append(VideoRef(video_id=video_id, uri=full_uri(tfs, tpath), size_bytes=int(info.get("size") or 0),
                             etag=_etag(info), sidecars=sidecars, kind=kind))
    return _unique(refs)


def _unique(refs: list[VideoRef]) -> list[VideoRef]:
    seen: dict[str, str] = {}
    for r in refs:
        if r.video_id in seen:
            raise InputError(f"two inputs map to video_id {r.video_id!r}: {redact_uri(seen[r.video_id])} and "
                             f"{r.display_uri}; rename one")
        seen[r.video_id] = r.uri
    return sorted(refs, key=lambda r: r.video_id)


def full_uri(fs, path: str) -> str:
    """The URI to reopen `path` later: plain path locally, scheme://path elsewhere."""
    return path if storage.is_local_fs(fs) else fs.unstrip_protocol(path)
