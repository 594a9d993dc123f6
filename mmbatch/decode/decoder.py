"""The decoder: one video in, its clip rows out, in the process that runs it (the decode stage's
watchdog child, or the stage's own process when decode.timeout_s is off).

Only what a configured model reads is decoded: frames (`frames`, `n_frames`, `has_frames`)
only with a vision or face model (and each frame's faces where models.face.find_faces_in says
decode), audio (`waveform`, `audio_len`, `has_waveform`) only with an audio
or speech model. Rows are built by `rows.ClipRows`, clips planned by `planner` (a split video's
`Chunk`), remote inputs spooled by `spool`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmbatch.config import PipelineConfig
from mmbatch.decode import audio as audio_reader
from mmbatch.decode import backend
from mmbatch.decode.planner import (
    PAUSE_SPAN_S,
    Chunk,
    ClipSpan,
    frames_for,
    keyframe_times,
    parse_segments,
    plan_clips,
    quietest_time,
    sample_times,
    snap_to_pauses,
)
from mmbatch.decode.rows import ClipMedia, ClipRows
from mmbatch.decode.spool import local_path, remove_spool
from mmbatch.decode.video import BUILTIN, open_video
from mmbatch.errors import DecodeError, short_reason
from mmbatch.modalities import needs
from mmbatch.stage import Batch


@dataclass
class OpenedVideo:
    """One video as its clips are decoded: its row, stream info, readers (None: not decoded) and
    the decoder's duration; `audio_error`: why its audio track could not be opened."""

    ref: dict[str, Any]
    info: backend.StreamInfo
    video: Any
    audio: Any
    duration: float
    audio_error: str = ""


class VideoDecoder:
    """Decodes the videos a stage hands it, one at a time: `events(ref)` says the plan, then each row."""

    def __init__(self, config: PipelineConfig, trust=None):
        self.clips, self.decode, self.storage_options = config.clips, config.decode, config.storage_options
        self.trust = trust  # AllowedRoots: playlist segments are checked against it before any read
        self.rows = clip_rows(config)
        self.audio_len = clip_audio_len(config)
        self.backend = None

    def setup(self) -> None:
        # torch before decord: importing decord first can hang forked workers (dmlc/decord#251).
        # PyAV before decord: each bundles FFmpeg; decord's loaded first breaks PyAV's libvpx.
        import av  # noqa: F401
        import torch
        import torchaudio  # noqa: F401

        # One video per call: parallelism comes from the pool; torch's intra-op threads (resampling)
        # only fight it for the cores (decode ran 1.5x slower with 2 threads on 2 cores).
        torch.set_num_threads(1)
        self.backend = frame_backend(self.decode)
        if self.backend == "decord":
            import decord  # noqa: F401
        if self.rows.want_faces:
            from mmbatch.decode.faces import FaceFinder

            self.faces = FaceFinder()

    def events(self, ref: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """("plan", (n_rows, spans)) once planned, then ("row", batch) per clip."""
        if self.backend is None:
            self.setup()
        t0 = time.perf_counter()
        chunk = Chunk.of(ref, self.clips)
        spool_dir = video = audio = probed = None
        try:
            try:
                path, spool_dir = local_path(str(ref["uri"]), str(ref.get("kind", "file")), self.storage_options,
                                             self.trust)
                info, probed = self._probe(path)
                video, duration, spans = self._open(path, ref, chunk, info)
            except Exception as err:  # DecodeError: a known reason; anything else: still one video's problem
                if not isinstance(err, DecodeError):
                    err = DecodeError(f"unexpected decoder error: {type(err).__name__}: {str(err)[:200]}")
                if chunk is None:
                    yield "row", self.rows.failed_video(ref, str(err), time.perf_counter() - t0)
                else:  # other chunks carry the video's other clips: fail this chunk's clips
                    for span in chunk.spans:
                        yield "row", self.rows.error_clip(ref, span, len(chunk.spans), str(err))
                return
            audio, audio_error = self._open_audio(path, info, probed)
            probed = None  # the audio reader's now, or closed
            if self.clips.snap_to_pause_s and audio is not None:
                spans = snapped_to_pauses(spans, audio, self.clips, self.decode.sample_rate)
            yield "plan", (len(spans), spans)
            opened = OpenedVideo(ref, info, video, audio, duration, audio_error)
            yield from self._clip_rows(opened, spans, time.perf_counter() - t0)
        finally:
            for handle in (audio, video, probed):
                if handle is not None:
                    handle.close()
            remove_spool(spool_dir)

    def _probe(self, path: str):
        """(stream info, the probe's open container: unread, for the audio reader, or None)."""
        # The rotation costs the probe a decoded frame: not read without frames to turn, nor for a
        # reader that turns each frame by its own display matrix (PyAV's, on the CPU or NVDEC).
        reader = BUILTIN.get(self.backend)  # a plugin reader takes the probe's
        read_rotation = self.rows.want_frames and not getattr(reader, "rotation_from_frames", False)
        info, container = backend.open_probed(path, read_rotation=read_rotation, max_pixels=self.decode.max_pixels,
                                              max_duration_s=self.decode.max_duration_s)
        if read_rotation:  # a frame decoded: not where the audio reader starts
            container.close()
            container = None
        return info, container

    def _open(self, path: str, ref: dict[str, Any], chunk: Chunk | None, info: backend.StreamInfo):
        """(frame reader or None, the decoder's duration, the clips to decode)."""
        # Header-only limits first: no frame is decoded for a video over them.
        check_limits(info, self.decode)
        video = None
        if info.has_video and self.rows.want_frames:
            fallback = "pyav" if self.decode.hwaccel == "cuda" else self.decode.fallback_backend
            video = open_video(self.backend, path, info, self.decode.image_size, fallback,
                               {"skip_loop_filter": self.decode.skip_loop_filter})
        duration = video.duration_s if video is not None else info.duration_s
        if chunk is None:
            spans = plan_clips(duration, self.clips, clip_segments(ref, self.clips, self.storage_options))
            total = len(spans)
        else:
            # The last chunk plans its tail from the decoder's duration, as an unsplit decode
            # would; earlier chunks hold full windows that the duration cannot move.
            spans = (plan_clips(duration, self.clips)[chunk.first:] if chunk.is_last else chunk.spans) or chunk.spans
            total = chunk.total
        if not spans:
            raise DecodeError("empty video: duration is 0 s")
        if total > self.decode.max_clips:
            raise DecodeError(f"{total} clips exceed max_clips {self.decode.max_clips}")
        return video, duration, spans

    def _open_audio(self, path: str, info: backend.StreamInfo, probed=None):
        """(audio reader or None, why the video's audio track cannot be read, or ""). `probed`: the
        probe's unread container, which the reader takes over (one open a file fewer), else closed."""
        if not (info.has_audio and self.rows.want_audio):
            if probed is not None:
                probed.close()
            return None, ""
        try:
            return audio_reader.PyAVAudio(path, self.decode.sample_rate, origin_s=info.start_s, container=probed), ""
        except Exception as err:  # the clips are scored without audio, each saying why
            if probed is not None:
                probed.close()
            return None, f"audio track unreadable: {short_reason(err)}"

    def _clip_rows(self, opened: OpenedVideo, spans: list[ClipSpan], setup_seconds: float) -> Iterator[tuple[str, Batch]]:
        n_rows, duration = len(spans), opened.duration
        for span in spans:
            c0 = time.perf_counter()
            if opened.video is not None and span.start_s >= duration:  # planned from a forged header duration
                yield "row", self.rows.error_clip(opened.ref, span, n_rows, (
                    f"clip at {span.start_s:.1f} s lies beyond the decoded end of the video ({duration:.1f} s; "
                    f"the container claims {opened.info.duration_s:.1f} s)"), duration)
                continue
            row = self._decode_clip(opened, span, n_rows)
            row["decode_seconds"] = np.array([time.perf_counter() - c0 + setup_seconds])
            setup_seconds = 0.0
            yield "row", row

    def _decode_clip(self, opened: OpenedVideo, span: ClipSpan, n_rows: int) -> Batch:
        ref, duration, video, audio, audio_error = (opened.ref, opened.duration, opened.video, opened.audio,
                                                    opened.audio_error)
        size, f = self.decode.image_size, self.clips.frames_per_clip
        frames, n_frames, faces = None, 0, {}
        if video is not None:
            frames = np.zeros((1, f, size, size, 3), dtype=np.uint8)
            n_frames = frames_for(span, self.clips)
            times = sample_times(span, n_frames)
            if self.clips.keyframes_only and (keys := video.key_starts) is not None:
                times = keyframe_times(times, keys, span.start_s, span.end_s)
                n_frames = len(times)
            try:
                frames[0, :n_frames] = video.frames_at(times)
            except DecodeError as err:
                return self.rows.error_clip(ref, span, n_rows, str(err), duration)
            if self.rows.want_faces:
                counts, boxes = self.faces.in_frames(frames[0], n_frames)
                faces = {"face_counts": counts[None], "face_boxes": boxes[None]}
        waveform, audio_len = None, 0
        if audio is not None:
            try:
                end_s = min(span.end_s, span.start_s + self.audio_len / self.decode.sample_rate)  # what a row keeps
                samples = audio.read(span.start_s, end_s)[: self.audio_len]
            except Exception as err:  # a damaged audio packet loses this clip's audio (said), not the clip
                samples = np.zeros(0, dtype=np.float32)
                audio_error = f"audio decode failed: {short_reason(err)}"
            if len(samples):
                waveform = np.zeros((1, self.audio_len), dtype=np.float32)
                waveform[0, : len(samples)] = samples
                audio_len = len(samples)
        return self.rows.ok(ref, span, n_rows, duration,
                            ClipMedia(frames, n_frames, waveform, audio_len, audio_error, **faces))



def clip_rows(config: PipelineConfig) -> ClipRows:
    """The row builder for a config: frames only with a vision or face model (each frame's faces too when
    the face model finds them in decode), audio only with an audio or speech model."""
    configured = config.models.configured()
    face = configured.get("face")
    return ClipRows(want_frames=needs(configured, "frames"), want_audio=needs(configured, "audio"),
                    image_size=config.decode.image_size, want_faces=face is not None and face.find_faces_in == "decode")


def clip_audio_len(config: PipelineConfig) -> int:
    """A clip's audio samples, at most: its window, and what snapping to pauses may add at either end."""
    clips = config.clips
    return int(round((clips.window_s + 2 * clips.snap_to_pause_s) * config.decode.sample_rate))


def frame_backend(decode) -> str:
    """The frame reader for a DecodeConfig. auto: PyAV on one thread, which decodes the same frames
    as decord for about two thirds of its CPU (decord converts every frame it passes and hands them
    between threads; docs/performance.md), and has wheels everywhere; on NVDEC with hwaccel: cuda,
    once this process is seen to open a CUDA device (else the night's configuration is wrong)."""
    if decode.hwaccel == "cuda":
        from mmbatch.decode.video import check_cuda_decoder

        check_cuda_decoder()
        return "pyav-cuda"
    return "pyav" if decode.backend == "auto" else decode.backend


def snapped_to_pauses(spans: list[ClipSpan], audio, clips, rate: int) -> list[ClipSpan]:
    """Fixed windows with their inner boundaries moved to pauses in `audio` (clips.snap_to_pause_s)."""

    def quiet_point(t: float, lo: float, hi: float) -> float:
        try:
            samples = audio.read(lo - PAUSE_SPAN_S / 2, hi + PAUSE_SPAN_S / 2)
        except Exception:  # damaged audio here: the boundary stays where the grid put it
            return t
        return quietest_time(samples, rate, lo - PAUSE_SPAN_S / 2, t, lo, hi)

    return snap_to_pauses(spans, quiet_point, clips.snap_to_pause_s, clips.min_clip_s)


def clip_segments(ref, clips, storage_options: dict | None) -> list[tuple[float, float]] | None:
    """Segments for the `segments` policy: inline (manifest) or from a .json sidecar."""
    if clips.policy != "segments":
        return None
    try:
        if str(ref.get("segments", "")):
            return parse_segments(str(ref["segments"]))
        if str(ref.get("segments_uri", "")):
            from mmbatch import storage

            fs, path = storage.filesystem(str(ref["segments_uri"]), storage_options)
            with fs.open(path, "rb") as fh:
                return parse_segments(fh.read().decode("utf-8"))
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise DecodeError(f"unreadable segments sidecar: {err}") from None
    return None


def check_limits(info: backend.StreamInfo, decode) -> None:
    """The header-only limits (decode: mmbatch.config.DecodeConfig): no frame is read past them."""
    if not info.has_video and not (decode.allow_audio_only and info.has_audio):
        raise DecodeError("no video stream")
    if info.has_video and info.width * info.height > decode.max_pixels:
        raise DecodeError(f"{info.width}x{info.height} exceeds max_pixels {decode.max_pixels}")
    if info.duration_s > decode.max_duration_s:
        raise DecodeError(f"duration {info.duration_s:.0f} s exceeds max_duration_s {decode.max_duration_s:.0f}")
