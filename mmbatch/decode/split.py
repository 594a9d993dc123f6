"""Split long videos into chunks of clips that decode as separate tasks.

A recorded stream of hours would otherwise serialise on one core. This stage reads only the
container header (or, for HLS, the playlist), plans the clips once, and emits one row per
chunk of at most `decode.split_clips` clips: `chunk_first`/`chunk_last` (clip index range),
`plan_duration_s` (the header's duration), `chunk_index` and `n_chunks`. Windows before the
last chunk do not depend on the exact duration; the last chunk re-plans its tail with the
decoder's own duration, exactly as an unsplit decode does, so clips get the ids and order
they would get in one piece. Videos that are short, whose duration cannot be read cheaply, or
that use the `segments` policy pass through unchanged (chunk_first = -1, one chunk).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mmbatch.config import PipelineConfig
from mmbatch.decode.planner import plan_clips
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


class SplitStage:
    name = "split"
    reads = ("video_id", "uri", "kind")
    may_read = ()
    writes = CHUNK_COLUMNS  # the input row's other columns pass through
    # Each chunk leaves as a block of its own, so a long video's chunks reach different decode
    # actors (the adapter fuses that into this stage's tasks).
    one_block_a_row = True

    def __init__(self, config: PipelineConfig):
        self.config = config

    def setup(self) -> None:
        import av  # noqa: F401

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        limit = self.config.decode.split_clips
        for i in range(len(batch["video_id"])):
            row = {k: batch[k][i : i + 1] for k in batch}
            duration = None
            if limit and self.config.clips.policy != "segments":
                duration = header_duration(str(row["uri"][0]), str(row["kind"][0]), self.config.storage_options)
            spans = plan_clips(duration, self.config.clips) if duration else []
            if len(spans) <= (limit or 0):
                yield {**row, "chunk_first": np.array([-1]), "chunk_last": np.array([-1]),
                       "plan_duration_s": np.array([0.0]), "chunk_index": np.array([0]), "n_chunks": np.array([1])}
                continue
            firsts = list(range(0, len(spans), limit))
            for k, first in enumerate(firsts):
                yield {**row, "chunk_first": np.array([first]), "chunk_last": np.array([min(first + limit, len(spans))]),
                       "plan_duration_s": np.array([duration]), "chunk_index": np.array([k]),
                       "n_chunks": np.array([len(firsts)])}
