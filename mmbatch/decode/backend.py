"""Probing a file and the frame geometry every backend shares.

Video frames come from a frame backend (`video.py`: PyAV by default, or decord), audio from
`audio.py`; probing reads the container headers with PyAV. Heavy imports happen on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmbatch.errors import DecodeError


@dataclass(frozen=True)
class StreamInfo:
    duration_s: float
    width: int
    height: int
    has_video: bool
    has_audio: bool
    audio_rate: int
    start_s: float = 0.0  # presentation time of the first video frame: clip time 0 (decord's origin)
    # Display rotation in degrees, counter-clockwise (from the display matrix); None: not read
    # (probe(read_rotation=False)), for a reader that takes it from the frames it decodes.
    rotation: int | None = 0


def _sniff(path) -> bytes:
    if not isinstance(path, str):
        return b""
    try:
        with open(path, "rb") as fh:
            return fh.read(12)
    except OSError:
        return b""


def _short_reason(err: BaseException, path: str | None = None) -> str:
    """A short human reason. FFmpeg logs the real cause (e.g. "moov atom not found") but only
    raises "Invalid data", so the container kind is sniffed from the first bytes."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    low = text.lower()
    if "moov atom not found" in low:
        return "truncated file: moov atom not found"
    if "invalid data found" in low or "error reading" in low:
        head = _sniff(path) if path else b""
        if head[4:8] == b"ftyp":
            return "truncated file: moov atom not found"
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return "corrupt or truncated Matroska/WebM file"
        return "not a video file: invalid data found when processing input"
    return text[:300]


def probe(path, *, read_rotation: bool = True, max_pixels: int | None = None,
          max_duration_s: float | None = None) -> StreamInfo:
    """Describe the streams from the container headers (`path`: a path or a seekable file).

    The display rotation rides on decoded frames, so reading it decodes one frame; callers
    that only need the duration, or read the rotation off the frames they decode anyway, pass
    read_rotation=False (rotation None) and touch headers alone. A video over `max_pixels` or
    `max_duration_s` (from the headers) has no frame decoded at all.
    """
    info, container = open_probed(path, read_rotation=read_rotation, max_pixels=max_pixels,
                                  max_duration_s=max_duration_s)
    container.close()
    return info


def open_probed(path, *, read_rotation: bool = True, max_pixels: int | None = None,
                max_duration_s: float | None = None):
    """`probe`, and the container it opened, left open for a reader to take over (the caller closes
    it): unread unless the rotation was read (`rotation` not None)."""
    import av

    container = None
    try:
        container = av.open(path)
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None
        duration = 0.0
        if container.duration:
            duration = container.duration / 1_000_000
        for s in (v, a):
            if s is not None and s.duration and s.time_base:
                duration = max(duration, float(s.duration * s.time_base))
        rotation = 0 if read_rotation else None
        within = ((max_pixels is None or (v is not None and v.codec_context.width * v.codec_context.height
                                          <= max_pixels))
                  and (max_duration_s is None or duration <= max_duration_s))
        if v is not None and read_rotation and within:
            rotation = first_frame_rotation(container, v)
        origin = v if v is not None else a
        start = float(origin.start_time * origin.time_base) if origin is not None and origin.start_time else 0.0
        if container.duration and start:
            duration = max(0.0, duration - (start - (container.start_time or 0) / 1_000_000))
        return StreamInfo(
            rotation=rotation,
            start_s=start,
            duration_s=duration,
            width=int(v.codec_context.width) if v else 0,
            height=int(v.codec_context.height) if v else 0,
            has_video=v is not None,
            has_audio=a is not None and (a.codec_context.sample_rate or 0) > 0,
            audio_rate=int(a.codec_context.sample_rate or 0) if a else 0,
        ), container
    except Exception as err:  # PyAV raises a family of FFmpeg errors; all mean "cannot open"
        if container is not None:
            container.close()
        if isinstance(err, FileNotFoundError):
            raise DecodeError(f"file not found: {path}") from None
        raise DecodeError(_short_reason(err, path)) from None


def frame_rotation(frame) -> int:
    """A decoded frame's display rotation, in degrees counter-clockwise (its display matrix)."""
    return int(round(frame.rotation or 0)) % 360


def first_frame_rotation(container, stream) -> int:
    """`frame_rotation` of `stream`'s first frame (0 if it cannot be decoded): one frame is decoded."""
    try:
        return frame_rotation(next(container.decode(stream)))
    except Exception:
        return 0


def demux_only(container, stream) -> None:
    """Have the demuxer skip every other stream's packets (FFmpeg's discard): a reader of one stream
    then neither reads nor wraps the others' (a video's index without its audio packets)."""
    from av.stream import Discard

    for other in container.streams:
        if other.index != stream.index:
            other.discard = Discard.all


def resize_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """Decoder output size: shorter side to `size`, aspect kept (then centre-cropped)."""
    if width <= height:
        return size, max(size, int(round(height * size / width)))
    return max(size, int(round(width * size / height))), size


def rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise) to (n, h, w, 3) frames."""
    k = (rotation // 90) % 4
    return np.rot90(frames, k=k, axes=(1, 2)) if k else frames


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[:, top : top + size, left : left + size]
