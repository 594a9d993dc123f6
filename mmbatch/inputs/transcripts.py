"""Sidecar transcripts: WebVTT / SubRip cues by time, or plain text for the whole video.

A clip gets the text of every cue that overlaps it, so a sentence crossing a clip boundary
reaches both clips. A `.txt` sidecar applies to every clip of its video.

Sidecars are bounded: one larger than `max_bytes` is refused without being read whole, and one
that is not UTF-8 text, or a .vtt/.srt without a single cue, is an error with that reason
(never a silent empty transcript).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

_TIME = re.compile(r"(?:(\d{1,6}):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_TAGS = re.compile(r"<[^<>]*>")  # [^<>]: a run of "<" without ">" is scanned once, not once a "<"


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def _seconds(stamp: str) -> float:
    m = _TIME.fullmatch(stamp.strip()) if len(stamp) <= 32 else None
    if not m:
        raise ValueError(f"bad timestamp {stamp!r}")
    h, mnt, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_cues(text: str) -> list[Cue]:
    """Cues of a .vtt or .srt file (both: blocks separated by blank lines, a `-->` line).

    Linear in the text: lines are split and grouped with string methods, and no pattern can
    backtrack over a long line (the sidecar's bytes are capped before this runs). A malformed
    timestamp raises ValueError."""
    cues = []
    for lines in _blocks(text.replace("\r\n", "\n").replace("\ufeff", "")):
        for k, line in enumerate(lines):
            if "-->" not in line:
                continue
            left, _, right = line.partition("-->")
            start, end = left.split()[-1:], right.split()[:1]
            if not (start and end):
                continue
            body = " ".join(_TAGS.sub("", ln) for ln in lines[k + 1:] if ln).strip()
            if body:
                cues.append(Cue(_seconds(start[0]), _seconds(end[0]), body))
            break
    return sorted(cues, key=lambda c: c.start_s)


def _blocks(text: str) -> list[list[str]]:
    """Runs of non-blank lines (stripped)."""
    blocks, current = [], []
    for line in text.split("\n"):
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def text_in_span(cues: list[Cue], start_s: float, end_s: float) -> str:
    return " ".join(c.text for c in cues if c.start_s < end_s and c.end_s > start_s)


class SidecarError(Exception):
    """A transcript sidecar that cannot be used; the message is the reason."""


def decode_sidecar(data: bytes, name: str) -> str:
    if b"\x00" in data:
        raise SidecarError(f"transcript sidecar {name} is binary, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SidecarError(f"transcript sidecar {name} is not UTF-8 text (byte {err.start})") from None


class TranscriptCache:
    """Reads each sidecar once per worker (a video's clips usually share a batch)."""

    def __init__(self, storage_options: dict | None = None, size: int = 256, max_bytes: int = 1 << 20):
        self.storage_options = storage_options or {}
        self._cache: OrderedDict[str, list[Cue] | str | SidecarError] = OrderedDict()
        self.size = size
        self.max_bytes = max_bytes

    def _read(self, uri: str) -> list[Cue] | str:
        from mmbatch.inputs.containers import open_input

        name = uri.rsplit("/", 1)[-1]
        with open_input(uri, self.storage_options) as fh:
            data = fh.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise SidecarError(f"transcript sidecar {name} is larger than inputs.max_sidecar_bytes ({self.max_bytes})")
        raw = decode_sidecar(data, name)
        if uri.lower().endswith(".txt"):
            return raw.strip()
        cues = parse_cues(raw)
        if not cues and raw.strip():
            raise SidecarError(f"transcript sidecar {name} has no readable cues")
        return cues

    def _load(self, uri: str) -> list[Cue] | str:
        if uri in self._cache:
            self._cache.move_to_end(uri)
            cached = self._cache[uri]
            if isinstance(cached, SidecarError):
                raise cached
            return cached
        try:
            parsed: list[Cue] | str | SidecarError = self._read(uri)
        except SidecarError as err:
            parsed = err
        except ValueError as err:  # a malformed timestamp
            parsed = SidecarError(f"transcript sidecar {uri.rsplit('/', 1)[-1]} is malformed: {err}")
        self._cache[uri] = parsed
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        if isinstance(parsed, SidecarError):
            raise parsed
        return parsed

    def text_for(self, uri: str, start_s: float, end_s: float) -> str:
        parsed = self._load(uri)
        return parsed if isinstance(parsed, str) else text_in_span(parsed, start_s, end_s)
