"""Clip planning: pure functions from a video's duration and timestamps to clips and frames."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

# Fixed namespace so clip ids are the same on every machine and every rerun.
CLIP_NAMESPACE = uuid.UUID("6f1c2a52-3b1e-4f0e-9a59-0c6d5b1f7a10")


@dataclass(frozen=True)
class ClipSpan:
    index: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def clip_id(video_id: str, start_s: float, end_s: float) -> str:
    """Deterministic clip id: uuid5 of video id and span (millisecond precision)."""
    return str(uuid.uuid5(CLIP_NAMESPACE, f"{video_id}|{start_s:.3f}|{end_s:.3f}"))


def plan_fixed_windows(duration_s: float, window_s: float, stride_s: float, min_clip_s: float) -> list[ClipSpan]:
    """Windows of `window_s` every `stride_s` seconds.

    The last window is cut at the end of the video and kept only if it is at least
    `min_clip_s` long; windows stop once one reaches the end, so overlapping windows do not
    add tails already covered. A video shorter than `min_clip_s` (but not empty) is one clip:
    a short video still deserves a score.
    """
    if duration_s <= 0:
        return []
    if duration_s < min_clip_s:
        return [ClipSpan(0, 0.0, round(duration_s, 6))]
    spans: list[ClipSpan] = []
    k = 0
    while True:
        start = round(k * stride_s, 6)
        if start >= duration_s:
            break
        end = round(min(start + window_s, duration_s), 6)
        if end - start + 1e-9 < min_clip_s:
            break
        spans.append(ClipSpan(len(spans), start, end))
        if end >= duration_s:
            break
        k += 1
    return spans


# A pause is found on the audio's loudness in 20 ms frames, averaged over 200 ms (a short word
# break, not the gap between two syllables). Moments within 1 dB of the quietest are quiet; the
# longest quiet stretch wins (a pause between sentences outlasts one at a comma), and in it the
# moment nearest the window's own boundary, so steady noise or silence leaves the grid alone.
PAUSE_FRAME_S, PAUSE_SPAN_S, PAUSE_TOLERANCE_DB = 0.02, 0.2, 1.0


def quietest_time(samples: np.ndarray, rate: int, start_s: float, nominal_s: float, lo_s: float, hi_s: float) -> float:
    """The moment in [lo_s, hi_s] inside the longest stretch whose PAUSE_SPAN_S loudness stays within
    PAUSE_TOLERANCE_DB of the quietest, nearest `nominal_s` (of equally long stretches, the one
    nearest too); `samples` begin at `start_s`. `nominal_s` when the audio holds no such moment.
    Millisecond precision (as clip ids)."""
    hop = max(1, int(round(PAUSE_FRAME_S * rate)))
    n = len(samples) // hop
    width = max(1, int(round(PAUSE_SPAN_S / PAUSE_FRAME_S)))
    if n < width:
        return nominal_s
    power = np.square(samples[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    level = 10 * np.log10(np.convolve(power, np.ones(width) / width, mode="valid") + 1e-10)
    centres = start_s + (np.arange(len(level)) * hop + width * hop / 2) / rate
    inside = (centres >= lo_s) & (centres <= hi_s)
    if not inside.any():
        return nominal_s
    quiet = np.flatnonzero(inside & (level <= level[inside].min() + PAUSE_TOLERANCE_DB))
    stretches = np.split(quiet, np.flatnonzero(np.diff(quiet) > 1) + 1)  # runs of adjacent quiet moments
    longest = max(len(run) for run in stretches)
    candidates = np.concatenate([run for run in stretches if len(run) == longest])
    best = centres[candidates][np.argmin(np.abs(centres[candidates] - nominal_s))]
    return round(float(best), 3)


def snap_to_pauses(spans: list[ClipSpan], quiet_point, reach_s: float, min_clip_s: float) -> list[ClipSpan]:
    """`spans` with each inner boundary moved to `quiet_point(t, lo, hi)`, a moment within `reach_s`
    of it. The first start and last end stay (a video's ends, or a split chunk's edges, which the
    neighbouring chunk plans too), and no clip gets shorter than `min_clip_s` (0.1 s at least), so
    windows that met still meet and the clips stay in order."""
    bounds = sorted({s.start_s for s in spans} | {s.end_s for s in spans})
    gap = max(min_clip_s, 0.1)
    moved = {bounds[0]: bounds[0], bounds[-1]: bounds[-1]}
    for i in range(1, len(bounds) - 1):
        t = bounds[i]
        lo, hi = max(t - reach_s, moved[bounds[i - 1]] + gap), min(t + reach_s, bounds[i + 1] - gap)
        moved[t] = quiet_point(t, lo, hi) if hi > lo else t
    return [ClipSpan(s.index, moved[s.start_s], moved[s.end_s]) for s in spans]


def plan_segments(duration_s: float, segments: list[tuple[float, float]]) -> list[ClipSpan]:
    """Given start/end pairs, clamped to the video and ordered by start; empty ones dropped."""
    spans = []
    for start, end in sorted(segments):
        start, end = max(0.0, float(start)), min(float(end), duration_s)
        if end > start:
            spans.append(ClipSpan(len(spans), round(start, 6), round(end, 6)))
    return spans


def plan_clips(duration_s: float, clips, segments: list[tuple[float, float]] | None = None) -> list[ClipSpan]:
    """Spans for a ClipConfig's policy."""
    if clips.policy == "whole":
        return [ClipSpan(0, 0.0, round(duration_s, 6))] if duration_s > 0 else []
    if clips.policy == "segments" and segments:
        return plan_segments(duration_s, segments)
    return plan_fixed_windows(duration_s, clips.window_s, clips.stride_s, clips.min_clip_s)


def parse_segments(text: str) -> list[tuple[float, float]]:
    """Segments JSON: [[start, end], ...] or [{"start_s": .., "end_s": ..}, ...] or
    {"segments": [...]} (either item form)."""
    import json

    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("segments", [])
    out = []
    for item in data:
        if isinstance(item, dict):
            out.append((float(item.get("start_s", item.get("start"))), float(item.get("end_s", item.get("end")))))
        else:
            out.append((float(item[0]), float(item[1])))
    return out


def frames_for(span: ClipSpan, clips) -> int:
    """How many frames a clip gets: the fixed count, or target_fps × length capped by it."""
    if clips.target_fps:
        return max(1, min(clips.frames_per_clip, int(round(span.duration_s * clips.target_fps))))
    return clips.frames_per_clip


def sample_times(span: ClipSpan, n_frames: int) -> np.ndarray:
    """N timestamps uniformly spaced inside the clip (centres of N equal slices)."""
    step = span.duration_s / n_frames
    return span.start_s + step * (np.arange(n_frames) + 0.5)


def keyframe_times(times_s: np.ndarray, key_starts_s: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """For clips.keyframes_only: the keyframes inside [start_s, end_s) nearest each of `times_s`,
    each once and in order (ties go to the earlier keyframe); `times_s` itself when the clip
    holds no keyframe."""
    keys = np.asarray(key_starts_s, dtype=np.float64)
    inside = keys[(keys >= start_s) & (keys < end_s)]
    if not len(inside):
        return times_s
    return np.unique(inside[np.abs(inside[None, :] - np.asarray(times_s)[:, None]).argmin(axis=1)])


def frame_indices(frame_starts_s: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time, from presentation timestamps.

    Using PTS rather than index = t * fps keeps variable-frame-rate files on the right moment.
    """
    idx = np.searchsorted(frame_starts_s, times_s, side="right") - 1
    return np.clip(idx, 0, len(frame_starts_s) - 1).astype(np.int64)


@dataclass(frozen=True)
class Chunk:
    """The part of a long video one decode call plans (a row of the split stage)."""

    first: int  # index of its first clip
    is_last: bool  # the last chunk plans its tail from the decoder's duration
    spans: list[ClipSpan]  # its clips as planned from the header's duration
    total: int  # clips planned in the whole video

    @classmethod
    def of(cls, ref: dict, clips) -> Chunk | None:
        """The chunk a row of the split stage names; None for a whole video (chunk_first -1 or absent)."""
        first = int(ref.get("chunk_first", -1))
        if first < 0:
            return None
        spans = plan_clips(float(ref["plan_duration_s"]), clips)
        is_last = int(ref["chunk_index"]) == int(ref["n_chunks"]) - 1
        return cls(first, is_last, spans[first: int(ref["chunk_last"])], len(spans))
