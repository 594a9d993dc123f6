"""Split long videos into chunks of clips that decode as separate tasks.

A recorded stream of hours would otherwise serialise on one core. This stage reads only the
container header (or, for HLS, the playlist), plans the clips once, and emits one row per
chunk of at most `decode.split_clips` clips: `chunk_first`/`chunk_last` (clip index range),
`plan_duration_s` (the header's duration), `chunk_index` and `n_chunks`. Windows before the
last chunk do not depend on the exact duration; the last chunk re-plans its tail with the
decoder's own duration, exactly as an unsplit decode does, so clips get the ids and order
they would get in one piece. Videos that are short, whose duration cannot be read cheaply, or
that use the `segments` policy pass through unchanged (chunk_first = -1, one chunk).

A file too small to hold more than a chunk at `decode.split_floor_kbps` passes through unread:
`passes_unread` decides it from the input row alone, so the adapter sends such rows around this
stage's tasks (a task and a header read a video cost more than the split itself on short videos).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from mmbatch.config import PipelineConfig
from mmbatch.decode.planner import plan_clips, plan_fixed_windows
from mmbatch.schema import CHUNK_COLUMNS
from mmbatch.stage import Batch


def header_duration(uri: str, kind: str, storage_options: dict | None) -> float | None:
    """Duration from headers alone (no frames); None when it cannot be had cheaply."""
    from mmbatch import storage
    from mmbatch.decode import backend
    from mmbatch.inputs import containers

    try:
        if kind == "hls":
            fs, path = storage.filesystem(uri, storage_options)
            return containers.read_playlist(fs, path).duration_s
        if kind != "file":
            return None
        if storage.is_local(uri):
            return backend.probe(uri.removeprefix("file://"), read_rotation=False).duration_s or None
        fs, path = storage.filesystem(uri, storage_options)
        with fs.open(path, "rb", block_size=1 << 20) as fh:  # seekable: PyAV reads headers only
            return backend.probe(fh, read_rotation=False).duration_s or None
    except Exception:
        return None  # the decode stage will report the real problem


@functools.lru_cache(maxsize=16)
def _chunk_bounds_s(limit: int, window_s: float, stride_s: float, min_clip_s: float) -> tuple[float, float]:
    """Durations within a hair of where fixed windows first number more than `limit`: up to the
    first, at most `limit`; from the second, more. Bisection (clips grow with the duration), once
    a setting: the driver asks `passes_unread` of every input."""
    lo, hi = 0.0, (limit + 2) * max(window_s, stride_s)
    for _ in range(48):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if len(plan_fixed_windows(mid, window_s, stride_s, min_clip_s)) > limit else (mid, hi)
    return lo, hi


# The chunk columns of a video that decodes in one piece.
UNSPLIT = {"chunk_first": -1, "chunk_last": -1, "plan_duration_s": 0.0, "chunk_index": 0, "n_chunks": 1}


class SplitStage:
    name = "split"
    reads = ("video_id", "uri", "kind")
    may_read = ("size_bytes",)
    writes = CHUNK_COLUMNS  # the input row's other columns pass through
    # Each chunk leaves as a block of its own, so a long video's chunks reach different decode
    # actors (the adapter fuses that into this stage's tasks).
    one_block_a_row = True

    def __init__(self, config: PipelineConfig):
        self.config = config

    def setup(self) -> None:
        import av  # noqa: F401

    @staticmethod
    def passes_unread(row: dict, config: PipelineConfig) -> dict | None:
        """The row this stage emits for an input row (VideoRef.as_row) that it passes through
        without reading anything: policy `segments` (its spans come from the segments) or `whole`
        (one clip), a tar member (no cheap header), or a file too small to hold more than
        `decode.split_clips` clips at `decode.split_floor_kbps`. None: its header must be read."""
        limit, clips, kind = config.decode.split_clips, config.clips, str(row["kind"])
        passes = not limit or clips.policy in ("segments", "whole") or kind == "tar"
        floor, size = config.decode.split_floor_kbps, int(row.get("size_bytes", 0))
        if not passes and kind == "file" and floor and size > 0:
            longest_s = size * 8 / (floor * 1000)
            lo, hi = _chunk_bounds_s(limit, clips.window_s, clips.stride_s, clips.min_clip_s)
            passes = longest_s <= lo or (longest_s < hi and len(plan_clips(longest_s, clips)) <= limit)
        return {**row, **UNSPLIT} if passes else None

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        limit = self.config.decode.split_clips
        for i in range(len(batch["video_id"])):
            row = {k: batch[k][i : i + 1] for k in batch}
            duration = None
            if self.passes_unread({k: v[0] for k, v in row.items()}, self.config) is None:
                duration = header_duration(str(row["uri"][0]), str(row["kind"][0]), self.config.storage_options)
            spans = plan_clips(duration, self.config.clips) if duration else []
            if len(spans) <= (limit or 0):
                yield {**row, **{k: np.array([v]) for k, v in UNSPLIT.items()}}
                continue
            firsts = list(range(0, len(spans), limit))
            for k, first in enumerate(firsts):
                yield {**row, "chunk_first": np.array([first]), "chunk_last": np.array([min(first + limit, len(spans))]),
                       "plan_duration_s": np.array([duration]), "chunk_index": np.array([k]),
                       "n_chunks": np.array([len(firsts)])}
