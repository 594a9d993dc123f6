"""Decode stage: one video in, its clips out (frames at model size, 16 kHz mono audio).

Fan-out stage: `__call__` yields one batch per clip so no more than one clip's pixels are
held at a time. Each planned clip yields exactly one row (status ok or error) and every row
carries `n_rows`, so the sink knows when a video is complete. A video that cannot be opened
at all yields a single row with clip_index = -1 and the reason.
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
from mmbatch.decode.planner import ClipSpan, clip_id, frame_indices, plan_fixed_windows, sample_times
from mmbatch.errors import DecodeError
from mmbatch.stage import Resources

Batch = dict[str, np.ndarray]


class DecodeStage:
    name = "decode"

    def __init__(self, config: PipelineConfig):
        self.clips = config.clips
        self.decode = config.decode
        self.storage_options = config.storage_options
        self.resources = Resources(cpus=config.decode.pool.num_cpus)
        self.audio_len = int(round(self.clips.window_s * self.decode.sample_rate))

    def setup(self) -> None:
        # torch before decord: importing decord first can hang forked workers (dmlc/decord#251).
        import torch  # noqa: F401
        import torchaudio  # noqa: F401

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        for i in range(len(batch["video_id"])):
            ref = {k: batch[k][i] for k in batch}
            yield from self._decode_video(ref)

    # -- one video -------------------------------------------------------------------------
    def _decode_video(self, ref: dict[str, Any]) -> Iterator[Batch]:
        t0 = time.perf_counter()
        spool_dir = None
        try:
            path, spool_dir = self._local_path(str(ref["uri"]), str(ref.get("kind", "file")))
            info = backend.probe(path)
            self._check_limits(info)
            video = backend.DecordVideo(path, info, self.decode.image_size) if info.has_video else None
            duration = video.duration_s if video is not None else info.duration_s
            spans = plan_fixed_windows(duration, self.clips.window_s, self.clips.stride_s, self.clips.min_clip_s)
            if not spans:
                raise DecodeError("empty video: duration is 0 s")
            if len(spans) > self.decode.max_clips:
                raise DecodeError(f"{len(spans)} clips exceed max_clips {self.decode.max_clips}")
        except DecodeError as err:
            yield self._failed_video(ref, str(err), time.perf_counter() - t0)
            self._cleanup(spool_dir)
            return
        setup_seconds = time.perf_counter() - t0
        audio = None
        try:
            if info.has_audio:
                try:
                    audio = backend.PyAVAudio(path, self.decode.sample_rate, origin_s=info.start_s)
                except Exception:
                    audio = None  # unreadable audio track: score the video without audio
            for span in spans:
                c0 = time.perf_counter()
                row = self._decode_clip(ref, span, len(spans), duration, video, audio)
                row["decode_seconds"] = np.array([time.perf_counter() - c0 + setup_seconds])
                setup_seconds = 0.0
                yield row
        finally:
            if audio is not None:
                audio.close()
            self._cleanup(spool_dir)

    def _decode_clip(self, ref, span: ClipSpan, n_rows: int, duration: float, video, audio) -> Batch:
        size, f = self.decode.image_size, self.clips.frames_per_clip
        frames = np.zeros((1, f, size, size, 3), dtype=np.uint8)
        waveform = np.zeros((1, self.audio_len), dtype=np.float32)
        status, error = "ok", ""
        has_video = has_audio = False
        try:
            if video is not None:
                idx = frame_indices(video.timestamps[:, 0], sample_times(span, f))
                frames[0] = video.frames(idx)
                has_video = True
            audio_len = 0
            if audio is not None:
                try:
                    samples = audio.read(span.start_s, span.end_s)[: self.audio_len]
                except Exception:  # a damaged audio packet loses this clip's audio, not the clip
                    samples = np.zeros(0, dtype=np.float32)
                waveform[0, : len(samples)] = samples
                has_audio = len(samples) > 0
                audio_len = len(samples)
        except DecodeError as err:
            status, error, audio_len = "error", str(err), 0
            has_video = has_audio = False
        return self._row(
            ref, span.index, span.start_s, span.end_s, n_rows, duration, status, error,
            frames=frames, waveform=waveform, audio_len=audio_len, has_video=has_video, has_audio=has_audio,
        )

    def _failed_video(self, ref, reason: str, seconds: float) -> Batch:
        size, f = self.decode.image_size, self.clips.frames_per_clip
        row = self._row(
            ref, -1, 0.0, 0.0, 1, 0.0, "error", reason,
            frames=np.zeros((1, f, size, size, 3), dtype=np.uint8),
            waveform=np.zeros((1, self.audio_len), dtype=np.float32),
            audio_len=0, has_video=False, has_audio=False,
        )
        row["decode_seconds"] = np.array([seconds])
        return row

    def _row(self, ref, index, start, end, n_rows, duration, status, error, *, frames, waveform,
             audio_len, has_video, has_audio) -> Batch:
        vid = str(ref["video_id"])
        return {
            "video_id": np.array([vid]),
            "uri": np.array([str(ref["uri"])]),
            "etag": np.array([str(ref["etag"])]),
            "size_bytes": np.array([int(ref["size"])], dtype=np.int64),
            "transcript_uri": np.array([str(ref.get("transcript_uri", ""))]),
            "clip_index": np.array([index], dtype=np.int32),
            "clip_id": np.array([clip_id(vid, start, end) if index >= 0 else ""]),
            "start_s": np.array([start], dtype=np.float64),
            "end_s": np.array([end], dtype=np.float64),
            "n_rows": np.array([n_rows], dtype=np.int32),
            "duration_s": np.array([duration], dtype=np.float64),
            "status": np.array([status]),
            "error_stage": np.array(["decode" if status == "error" else ""]),
            "error": np.array([error]),
            "frames": frames,
            "has_video": np.array([has_video]),
            "waveform": waveform,
            "audio_len": np.array([audio_len], dtype=np.int32),
            "has_audio": np.array([has_audio]),
        }

    # -- helpers ----------------------------------------------------------------------------
    def _check_limits(self, info: backend.StreamInfo) -> None:
        if not info.has_video:
            raise DecodeError("no video stream")
        if info.width * info.height > self.decode.max_pixels:
            raise DecodeError(
                f"{info.width}x{info.height} exceeds max_pixels {self.decode.max_pixels}"
            )
        if info.duration_s > self.decode.max_duration_s:
            raise DecodeError(f"duration {info.duration_s:.0f} s exceeds max_duration_s {self.decode.max_duration_s:.0f}")

    def _local_path(self, uri: str, kind: str = "file") -> tuple[str, str | None]:
        """A path FFmpeg can open. Local files are used in place; remote objects, tar members
        and HLS segment lists are streamed (bounded chunks) to node-local disk first, since
        decord copies a file-like object wholly into memory."""
        if kind == "file" and ("://" not in uri or uri.startswith("file://")):
            path = uri.removeprefix("file://")
            if not os.path.exists(path):
                raise DecodeError(f"file not found: {uri}")
            if os.path.getsize(path) == 0:
                raise DecodeError("empty file (0 bytes)")
            return path, None
        from mmbatch import containers, storage

        spool = tempfile.mkdtemp(prefix="mmbatch-spool-")
        try:
            fs, remote = storage.filesystem(uri, self.storage_options)
            if kind == "hls":
                local = os.path.join(spool, "stream.ts")
                containers.spool_hls(fs, remote, local)
            else:
                local = os.path.join(spool, os.path.basename(remote) or "video")
                containers.spool_stream(fs, remote, local)
        except Exception as err:
            shutil.rmtree(spool, ignore_errors=True)
            if isinstance(err, FileNotFoundError):
                raise DecodeError(f"file not found: {uri}") from None
            raise DecodeError(f"cannot read {uri}: {str(err).splitlines()[0][:200]}") from None
        if os.path.getsize(local) == 0:
            shutil.rmtree(spool, ignore_errors=True)
            raise DecodeError("empty file (0 bytes)")
        return local, spool

    @staticmethod
    def _cleanup(spool_dir: str | None) -> None:
        if spool_dir:
            shutil.rmtree(spool_dir, ignore_errors=True)
