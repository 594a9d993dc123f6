"""Decode stage: one video in, its clips out (frames at model size, 16 kHz mono audio).

Fan-out stage: `__call__` yields one batch per clip so no more than one clip's pixels are
held at a time. Each planned clip yields exactly one row (status ok or error) and every row
carries `n_rows` (rows of its video, or of its chunk of a split video, with `chunk_index` and
`n_chunks`), so the driver knows when a video is complete. A video that cannot be opened
at all yields a single row with clip_index = -1 and the reason.

Only what a configured model reads is decoded: frames (`frames`, `n_frames`, `has_frames`)
only with a vision model, audio (`waveform`, `audio_len`, `has_waveform`) only with an audio
or speech model. Error rows and clips without a stream carry zero-length tensors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from mmbatch.config import PipelineConfig
from mmbatch.decode import backend
from mmbatch.decode.planner import ClipSpan, clip_id, frames_for, parse_segments, plan_clips, sample_times
from mmbatch.decode.video import open_video
from mmbatch.errors import DecodeError, first_line
from mmbatch.schema import AUDIO_COLUMNS, CHUNK_COLUMNS, CLIP_COLUMNS, FRAME_COLUMNS, REF_COLUMNS
from mmbatch.stage import Batch
from mmbatch.storage import is_local


class DecodeStage:
    name = "decode"
    reads = REF_COLUMNS
    may_read = CHUNK_COLUMNS  # a row of the split stage: one chunk of a long video
    writes = (*CLIP_COLUMNS, *FRAME_COLUMNS, *AUDIO_COLUMNS)  # frames/audio only for configured models

    def __init__(self, config: PipelineConfig, trust=None, *, isolated: bool | None = None):
        self.config = config
        self.clips = config.clips
        self.decode = config.decode
        self.storage_options = config.storage_options
        self.audio_len = int(round(self.clips.window_s * self.decode.sample_rate))
        self.isolated = (config.decode.timeout_s is not None) if isolated is None else isolated
        self.trust = trust  # AllowedRoots: playlist segments are checked against it before any read
        self.want_frames = config.models.vision is not None
        self.want_audio = config.models.audio is not None or config.models.speech is not None
        self._watchdog = None

    def setup(self) -> None:
        if self.isolated:
            # The watchdog's child decodes (and runs the full set-up below); this process only relays
            # rows, so it loads no decoder libraries: each decode worker starts faster and smaller.
            self.backend = self._resolve_backend()
            if self._watchdog is None:
                from functools import partial

                from mmbatch.decode.watchdog import IsolatedDecoder

                child_stage = partial(DecodeStage, isolated=False)
                self._watchdog = IsolatedDecoder(child_stage, (self.config, self.trust), self.decode.timeout_s)
            return
        # torch before decord: importing decord first can hang forked workers (dmlc/decord#251).
        # PyAV before decord: each bundles FFmpeg; decord's loaded first breaks PyAV's libvpx.
        import av  # noqa: F401
        import torch
        import torchaudio  # noqa: F401

        # One video per task: parallelism comes from tasks; torch's intra-op threads (resampling)
        # only fight them for the cores (decode ran 1.5x slower with 2 threads on 2 cores).
        torch.set_num_threads(1)
        self.backend = self._resolve_backend()
        if self.backend == "decord":
            import decord  # noqa: F401

    def _resolve_backend(self) -> str:
        """auto: decord where its wheel is installed (not on aarch64 or macOS arm64), else PyAV."""
        import importlib.util

        if self.decode.backend != "auto":
            return self.decode.backend
        return "decord" if importlib.util.find_spec("decord") is not None else "pyav"

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        if not hasattr(self, "backend"):
            self.setup()
        for i in range(len(batch["video_id"])):
            ref = {k: batch[k][i] for k in batch}
            if self._watchdog is not None:
                yield from self._decode_isolated(ref)
            else:
                yield from (payload for kind, payload in self.decode_events(ref) if kind == "row")

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()

    # -- one video, in a watchdog child ------------------------------------------------------
    def _decode_isolated(self, ref: dict[str, Any]) -> Iterator[Batch]:
        t0 = time.perf_counter()
        n_rows, sent = None, set()
        if (chunk := self._chunk(ref)) is not None:
            spans = chunk[2]
            n_rows = len(spans)
        for kind, payload in self._watchdog.events(ref):
            if kind == "plan":
                n_rows, spans = payload
            elif kind == "row":
                sent.add(int(payload["clip_index"][0]))
                yield payload
            else:
                reason = (f"decode timed out after {payload:.0f} s (decoder stuck)" if kind == "timeout"
                          else f"decoder process crashed (exit code {payload})")
                if n_rows is None or (not sent and chunk is None):
                    yield self._failed_video(ref, reason, time.perf_counter() - t0)
                else:  # rows already out: close the video with error rows for the clips never sent
                    for span in spans:
                        if span.index not in sent:
                            yield self._error_clip(ref, span, n_rows, reason)
                return

    # -- one video, in this process ----------------------------------------------------------
    def decode_events(self, ref: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """("plan", (n_rows, spans)) once planned, then ("row", batch) per clip."""
        if not hasattr(self, "backend"):
            self.setup()
        t0 = time.perf_counter()
        spool_dir = None
        video = audio = None
        chunk = self._chunk(ref)
        try:
            try:
                path, spool_dir = self._local_path(str(ref["uri"]), str(ref.get("kind", "file")))
                # Header-only limits first: no frame is decoded for a video over them.
                info = backend.probe(path, max_pixels=self.decode.max_pixels, max_duration_s=self.decode.max_duration_s)
                self._check_limits(info)
                if info.has_video and self.want_frames:
                    video = open_video(self.backend, path, info, self.decode.image_size, self.decode.fallback_backend)
                real_duration = video.duration_s if video is not None else info.duration_s
                if chunk is None:
                    spans = plan_clips(real_duration, self.clips, self._segments(ref))
                    total = len(spans)
                else:
                    first, is_last, header_spans, total = chunk
                    # The last chunk plans its tail from the decoder's duration, as an unsplit
                    # decode would; earlier chunks hold full windows that the duration cannot move.
                    spans = plan_clips(real_duration, self.clips)[first:] if is_last else header_spans
                    spans = spans or header_spans
                if not spans:
                    raise DecodeError("empty video: duration is 0 s")
                if total > self.decode.max_clips:
                    raise DecodeError(f"{total} clips exceed max_clips {self.decode.max_clips}")
            except Exception as err:  # DecodeError: a known reason; anything else: still one video's problem
                if not isinstance(err, DecodeError):
                    err = DecodeError(f"unexpected decoder error: {type(err).__name__}: {str(err)[:200]}")
                if chunk is None:
                    yield "row", self._failed_video(ref, str(err), time.perf_counter() - t0)
                else:  # other chunks carry the video's other clips: fail this chunk's clips
                    for span in chunk[2]:
                        yield "row", self._error_clip(ref, span, len(chunk[2]), str(err))
                return
            n_rows = len(spans)
            yield "plan", (n_rows, spans)
            setup_seconds = time.perf_counter() - t0
            if info.has_audio and self.want_audio:
                try:
                    audio = backend.PyAVAudio(path, self.decode.sample_rate, origin_s=info.start_s)
                except Exception:
                    audio = None  # unreadable audio track: score the video without audio
            for span in spans:
                c0 = time.perf_counter()
                if video is not None and span.start_s >= real_duration:  # planned from a forged header duration
                    yield "row", self._error_clip(ref, span, n_rows, (
                        f"clip at {span.start_s:.1f} s lies beyond the decoded end of the video ({real_duration:.1f} s; "
                        f"the container claims {info.duration_s:.1f} s)"), real_duration)
                    continue
                row = self._decode_clip(ref, span, n_rows, real_duration, video, audio)
                row["decode_seconds"] = np.array([time.perf_counter() - c0 + setup_seconds])
                setup_seconds = 0.0
                yield "row", row
        finally:
            for handle in (audio, video):
                if handle is not None:
                    handle.close()
            self._cleanup(spool_dir)

    def _decode_clip(self, ref, span: ClipSpan, n_rows: int, duration: float, video, audio) -> Batch:
        size, f = self.decode.image_size, self.clips.frames_per_clip
        frames, n_frames = None, 0
        if video is not None:
            frames = np.zeros((1, f, size, size, 3), dtype=np.uint8)
            n_frames = frames_for(span, self.clips)
            try:
                frames[0, :n_frames] = video.frames_at(sample_times(span, n_frames))
            except DecodeError as err:
                return self._error_clip(ref, span, n_rows, str(err), duration)
        waveform, audio_len = None, 0
        if audio is not None:
            try:
                samples = audio.read(span.start_s, span.end_s)[: self.audio_len]
            except Exception:  # a damaged audio packet loses this clip's audio, not the clip
                samples = np.zeros(0, dtype=np.float32)
            if len(samples):
                waveform = np.zeros((1, self.audio_len), dtype=np.float32)
                waveform[0, : len(samples)] = samples
                audio_len = len(samples)
        return self._row(ref, span.index, span.start_s, span.end_s, n_rows, duration, "ok", "",
                         frames=frames, n_frames=n_frames, waveform=waveform, audio_len=audio_len)

    def _error_clip(self, ref, span: ClipSpan, n_rows: int, reason: str, duration: float = 0.0) -> Batch:
        return self._error_row(ref, span.index, span.start_s, span.end_s, n_rows, reason, duration=duration)

    def _failed_video(self, ref, reason: str, seconds: float) -> Batch:
        return self._error_row(ref, -1, 0.0, 0.0, 1, reason, seconds=seconds)

    def _error_row(self, ref, index, start, end, n_rows, reason, *, duration=0.0, seconds=0.0) -> Batch:
        row = self._row(ref, index, start, end, n_rows, duration, "error", reason,
                        frames=None, n_frames=0, waveform=None, audio_len=0)
        row["decode_seconds"] = np.array([seconds])
        return row

    def _row(self, ref, index, start, end, n_rows, duration, status, error, *, frames, n_frames, waveform,
             audio_len) -> Batch:
        """One clip row. Only the configured modalities' tensors; zero-length where there is
        no stream or the clip failed, so error rows carry no pixels through the GPU pools."""
        vid = str(ref["video_id"])
        row = {
            "video_id": np.array([vid]),
            "transcript_uri": np.array([str(ref.get("transcript_uri", ""))]),
            "clip_index": np.array([index], dtype=np.int32),
            "clip_id": np.array([clip_id(vid, start, end) if index >= 0 else ""]),
            "start_s": np.array([start], dtype=np.float64),
            "end_s": np.array([end], dtype=np.float64),
            "n_rows": np.array([n_rows], dtype=np.int32),  # rows of this video (or chunk of it)
            "chunk_index": np.array([int(ref.get("chunk_index", 0))], dtype=np.int32),
            "n_chunks": np.array([int(ref.get("n_chunks", 1))], dtype=np.int32),
            "duration_s": np.array([duration], dtype=np.float64),
            "status": np.array([status]),
            "error_stage": np.array(["decode" if status == "error" else ""]),
            "error": np.array([error]),
        }
        if self.want_frames:
            size = self.decode.image_size
            row["frames"] = frames if frames is not None else np.zeros((1, 0, size, size, 3), dtype=np.uint8)
            row["n_frames"] = np.array([n_frames], dtype=np.int32)
            row["has_frames"] = np.array([frames is not None])
        if self.want_audio:
            row["waveform"] = waveform if waveform is not None else np.zeros((1, 0), dtype=np.float32)
            row["audio_len"] = np.array([audio_len], dtype=np.int32)
            row["has_waveform"] = np.array([audio_len > 0])
        return row

    # -- helpers ------------------------------------------------------------------------------
    def _chunk(self, ref) -> tuple[int, bool, list[ClipSpan], int] | None:
        """For a row of the split stage: (first clip index, is last chunk, the chunk's spans as
        planned from the header duration, clips planned in all); None for a whole video."""
        first = int(ref.get("chunk_first", -1))
        if first < 0:
            return None
        spans = plan_clips(float(ref["plan_duration_s"]), self.clips)
        is_last = int(ref["chunk_index"]) == int(ref["n_chunks"]) - 1
        return first, is_last, spans[first : int(ref["chunk_last"])], len(spans)

    def _segments(self, ref) -> list[tuple[float, float]] | None:
        """Segments for the `segments` policy: inline (manifest) or from a .json sidecar."""
        if self.clips.policy != "segments":
            return None
        try:
            if str(ref.get("segments", "")):
                return parse_segments(str(ref["segments"]))
            if str(ref.get("segments_uri", "")):
                from mmbatch import storage

                fs, path = storage.filesystem(str(ref["segments_uri"]), self.storage_options)
                with fs.open(path, "rb") as fh:
                    return parse_segments(fh.read().decode("utf-8"))
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise DecodeError(f"unreadable segments sidecar: {err}") from None
        return None

    def _check_limits(self, info: backend.StreamInfo) -> None:
        if not info.has_video and not (self.decode.allow_audio_only and info.has_audio):
            raise DecodeError("no video stream")
        if info.has_video and info.width * info.height > self.decode.max_pixels:
            raise DecodeError(
                f"{info.width}x{info.height} exceeds max_pixels {self.decode.max_pixels}"
            )
        if info.duration_s > self.decode.max_duration_s:
            raise DecodeError(f"duration {info.duration_s:.0f} s exceeds max_duration_s {self.decode.max_duration_s:.0f}")

    def _local_path(self, uri: str, kind: str = "file") -> tuple[str, str | None]:
        """A path FFmpeg can open. Local files are used in place; remote objects, tar members
        and HLS segment lists are streamed (bounded chunks) to node-local disk first, since
        decord copies a file-like object wholly into memory."""
        if kind == "file" and is_local(uri):
            path = uri.removeprefix("file://")
            if not os.path.exists(path):
                raise DecodeError(f"file not found: {uri}")
            if os.path.getsize(path) == 0:
                raise DecodeError("empty file (0 bytes)")
            return path, None
        from mmbatch import storage
        from mmbatch.inputs import containers
        from mmbatch.trust import TrustError, redact_uri

        if self.trust is not None and not self.trust.allows(uri):
            raise DecodeError(f"refused {redact_uri(uri)}: outside the allowed input roots")
        spool = tempfile.mkdtemp(prefix="mmbatch-spool-")
        try:
            if kind == "hls":
                fs, remote = storage.filesystem(uri, self.storage_options)
                local = os.path.join(spool, "stream.ts")
                containers.spool_hls(fs, remote, local, check=self._check_segment(fs))
            else:  # an object or a tar member (read by range from its shard)
                name = uri.split("::", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
                local = os.path.join(spool, name or "video")
                containers.spool_stream(uri, self.storage_options, local)
        except Exception as err:
            shutil.rmtree(spool, ignore_errors=True)
            if isinstance(err, TrustError):
                raise DecodeError(str(err)) from None
            if isinstance(err, FileNotFoundError):
                raise DecodeError(f"file not found: {redact_uri(uri)}") from None
            raise DecodeError(f"cannot read {redact_uri(uri)}: {first_line(err, 200)}") from None
        if os.path.getsize(local) == 0:
            shutil.rmtree(spool, ignore_errors=True)
            raise DecodeError("empty file (0 bytes)")
        return local, spool

    def _check_segment(self, fs):
        """A check for each playlist segment: its full URI must lie under the allowed roots."""
        from mmbatch.inputs.sources import full_uri

        def check(path: str) -> None:
            if self.trust is not None:
                self.trust.check(path if "://" in path else full_uri(fs, path))

        return check

    @staticmethod
    def _cleanup(spool_dir: str | None) -> None:
        if spool_dir:
            shutil.rmtree(spool_dir, ignore_errors=True)
