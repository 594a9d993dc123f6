"""The clip rows decode emits: one row a planned clip (ok or error), or one row for a video that
could not be opened at all (clip_index -1). Only the configured modalities' tensors travel;
error rows and clips without a stream carry zero-length ones, so no pixels ride to the GPU
pools for nothing. Every row carries `n_rows` (rows of its video, or of its chunk) so the
driver knows when a video is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmbatch.decode.planner import ClipSpan, clip_id
from mmbatch.schema import FACE_BOX_COLUMNS
from mmbatch.stage import Batch


class ClipRows:
    def __init__(self, want_frames: bool, want_audio: bool, image_size: int, want_faces: bool = False):
        self.want_frames, self.want_audio, self.image_size = want_frames, want_audio, image_size
        self.want_faces = want_faces  # each frame's faces, found here (models.face.find_faces_in: decode)

    def large_bytes(self, clips, audio_len: int) -> int:
        """The bytes of one row's frames and waveform at most (clips: mmbatch.config.ClipConfig)."""
        frames = clips.frames_per_clip * self.image_size ** 2 * 3 if self.want_frames else 0
        return frames + (4 * audio_len if self.want_audio else 0)

    def ok(self, ref: dict[str, Any], span: ClipSpan, n_rows: int, duration: float, media: ClipMedia) -> Batch:
        """An ok clip; `media.audio_error`: why its audio track could not be read (the clip is kept)."""
        return self.row(ref, span, n_rows, duration, media)

    def error_clip(self, ref: dict[str, Any], span: ClipSpan, n_rows: int, reason: str, duration: float = 0.0) -> Batch:
        return self.row(ref, span, n_rows, duration, error=reason)

    def failed_video(self, ref: dict[str, Any], reason: str, seconds: float) -> Batch:
        row = self.row(ref, VIDEO_SPAN, 1, 0.0, error=reason)
        row["decode_seconds"] = np.array([seconds])
        return row

    def row(self, ref, span: ClipSpan, n_rows: int, duration: float, media: ClipMedia | None = None, *,
            error: str = "") -> Batch:
        """A clip's row: ok with its `media`, or an error row (no media) saying `error`."""
        vid, status, media = str(ref["video_id"]), "error" if error else "ok", media or NO_MEDIA
        index, start, end = span.index, span.start_s, span.end_s
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
        if status == "error":
            row["decode_seconds"] = np.array([0.0])
        frames = media.frames
        if self.want_frames:
            size = self.image_size
            row["frames"] = frames if frames is not None else np.zeros((1, 0, size, size, 3), dtype=np.uint8)
            row["n_frames"] = np.array([media.n_frames], dtype=np.int32)
            row["has_frames"] = np.array([frames is not None])
        if self.want_faces:
            counts, boxes = FACE_BOX_COLUMNS
            row[counts] = media.face_counts if media.face_counts is not None else np.zeros((1, 0), dtype=np.int32)
            row[boxes] = media.face_boxes if media.face_boxes is not None else np.zeros((1, 0, 4), dtype=np.int32)
        if self.want_audio:
            row["waveform"] = media.waveform if media.waveform is not None else np.zeros((1, 0), dtype=np.float32)
            row["audio_len"] = np.array([media.audio_len], dtype=np.int32)
            row["has_waveform"] = np.array([media.audio_len > 0])
            row["audio_error"] = np.array([media.audio_error])
        return row


@dataclass(frozen=True)
class ClipMedia:
    """What was decoded for one clip: frames (1, F, S, S, 3) with `n_frames` real, a waveform
    (1, N) with `audio_len` real samples, and why its audio could not be read ("" if it could);
    where decode finds faces, each frame's face count (1, F) and largest face's box (1, F, 4)."""

    frames: np.ndarray | None = None
    n_frames: int = 0
    waveform: np.ndarray | None = None
    audio_len: int = 0
    audio_error: str = ""
    face_counts: np.ndarray | None = None
    face_boxes: np.ndarray | None = None


NO_MEDIA = ClipMedia()
VIDEO_SPAN = ClipSpan(-1, 0.0, 0.0)  # the one row of a video that could not be opened
