"""Sidecar transcripts: WebVTT / SubRip cues by time, or plain text for the whole video.

A clip gets the text of every cue that overlaps it, so a sentence crossing a clip boundary
reaches both clips. A `.txt` sidecar applies to every clip of its video.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_ARROW = re.compile(r"(\S+)\s*-->\s*(\S+)")
_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def _seconds(stamp: str) -> float:
    m = _TIME.fullmatch(stamp.strip())
    if not m:
        raise ValueError(f"bad timestamp {stamp!r}")
    h, mnt, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_cues(text: str) -> list[Cue]:
    """Cues of a .vtt or .srt file (both: blocks separated by blank lines, a `-->` line)."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\ufeff", "")):
        lines = [ln.strip() for ln in block.strip().split("\n")]
        for k, line in enumerate(lines):
            if m := _ARROW.search(line):
                body = " ".join(_TAGS.sub("", ln) for ln in lines[k + 1 :] if ln).strip()
                if body:
                    cues.append(Cue(_seconds(m.group(1)), _seconds(m.group(2)), body))
                break
    return sorted(cues, key=lambda c: c.start_s)


def text_in_span(cues: list[Cue], start_s: float, end_s: float) -> str:
    return " ".join(c.text for c in cues if c.start_s < end_s and c.end_s > start_s)


class TranscriptCache:
    """Reads each sidecar once per worker (a video's clips usually share a batch)."""

    def __init__(self, storage_options: dict | None = None, size: int = 256):
        self.storage_options = storage_options or {}
        self._cache: OrderedDict[str, list[Cue] | str] = OrderedDict()
        self.size = size

    def _load(self, uri: str) -> list[Cue] | str:
        from mmbatch import storage

        if uri in self._cache:
            self._cache.move_to_end(uri)
            return self._cache[uri]
        fs, path = storage.filesystem(uri, self.storage_options)
        with fs.open(path, "rb") as fh:
            raw = fh.read().decode("utf-8", errors="replace")
        parsed: list[Cue] | str = raw.strip() if uri.lower().endswith(".txt") else parse_cues(raw)
        self._cache[uri] = parsed
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return parsed

    def text_for(self, uri: str, start_s: float, end_s: float) -> str:
        parsed = self._load(uri)
        return parsed if isinstance(parsed, str) else text_in_span(parsed, start_s, end_s)
