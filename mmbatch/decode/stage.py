"""Decode stage: one video in, its clips out (frames at model size, 16 kHz mono audio).

Fan-out stage: `__call__` yields one batch per clip, so the decoder holds no more than one
clip's pixels; Ray Data gathers a task's yielded clips into output blocks of up to its target
block size (128 MiB by default) before they travel on. Each planned clip yields exactly one row
(status ok or error) and every row carries `n_rows` (rows of its video, or of its chunk of a
split video, with `chunk_index` and `n_chunks`), so the driver knows when a video is complete.
A video that cannot be opened at all yields a single row with clip_index = -1 and the reason.

This stage relays: a watchdog child runs the decoder (`decoder.VideoDecoder`) and is replaced when
it hangs or crashes, whose clips then get error rows here. With decode.timeout_s off, the decoder
runs in this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

from mmbatch.config import PipelineConfig
from mmbatch.decode.decoder import VideoDecoder, clip_audio_len, clip_rows, frame_backend
from mmbatch.decode.planner import Chunk
from mmbatch.schema import AUDIO_COLUMNS, CHUNK_COLUMNS, CLIP_COLUMNS, FACE_BOX_COLUMNS, FRAME_COLUMNS, REF_COLUMNS
from mmbatch.stage import Batch


class DecodeStage:
    name = "decode"
    reads = REF_COLUMNS
    may_read = CHUNK_COLUMNS  # a row of the split stage: one chunk of a long video
    writes = (*CLIP_COLUMNS, *FRAME_COLUMNS, *FACE_BOX_COLUMNS, *AUDIO_COLUMNS)  # only for configured models
    starts_full = True  # every stage after decode waits for it: its pool starts at its working size

    def __init__(self, config: PipelineConfig, trust=None, *, isolated: bool | None = None):
        self.config, self.trust, self.clips = config, trust, config.clips
        self.isolated = (config.decode.timeout_s is not None) if isolated is None else isolated
        self.rows = clip_rows(config)
        self._decoder: VideoDecoder | None = None
        self._watchdog = None

    def setup(self) -> None:
        if not self.isolated:
            self._decoder = self._decoder or VideoDecoder(self.config, self.trust)
            self._decoder.setup()
        elif self._watchdog is None:
            # The child decodes (and loads the decoder libraries); this process only relays rows, so
            # each decode worker starts faster and smaller. A device check here fails the actor fast.
            from mmbatch.decode.watchdog import IsolatedDecoder

            frame_backend(self.config.decode)
            slot_bytes = self.rows.large_bytes(self.clips, clip_audio_len(self.config))
            self._watchdog = IsolatedDecoder(VideoDecoder, (self.config, self.trust), self.config.decode.timeout_s,
                                             slot_bytes=slot_bytes)

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        if self._decoder is None and self._watchdog is None:
            self.setup()
        refs = [{k: batch[k][i] for k in batch} for i in range(len(batch["video_id"]))]
        if self._watchdog is None:
            for ref in refs:
                yield from (payload for kind, payload in self._decoder.events(ref) if kind == "row")
            return
        for i, events in groupby(self._watchdog.events_each(refs), key=itemgetter(0)):
            yield from self._relay(refs[i], ((kind, payload) for _, kind, payload in events if kind != "begin"))

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()

    def _relay(self, ref: dict[str, Any], events: Iterator[tuple[str, Any]]) -> Iterator[Batch]:
        t0 = time.perf_counter()
        n_rows, sent = None, set()
        if (chunk := Chunk.of(ref, self.clips)) is not None:
            spans = chunk.spans
            n_rows = len(spans)
        for kind, payload in events:
            if kind == "plan":
                n_rows, spans = payload
            elif kind == "row":
                sent.add(int(payload["clip_index"][0]))
                yield payload
            else:
                reason = (f"decode timed out after {payload:.0f} s (decoder stuck)" if kind == "timeout"
                          else f"decoder process crashed (exit code {payload})")
                if n_rows is None or (not sent and chunk is None):
                    yield self.rows.failed_video(ref, reason, time.perf_counter() - t0)
                else:  # rows already out: close the video with error rows for the clips never sent
                    for span in spans:
                        if span.index not in sent:
                            yield self.rows.error_clip(ref, span, n_rows, reason)
                return
