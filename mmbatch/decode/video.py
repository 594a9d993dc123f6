"""Video frame backends behind one small interface.

    backend = open_video(name, path, info, size)
    backend.timestamps   # (n, 2) start/end seconds of every frame, from presentation times
    backend.duration_s
    backend.frames(idx)  # (k, size, size, 3) uint8: resized in the decoder, rotated, centre-cropped

`pyav` (the default: FFmpeg on one thread), `pyav-cuda` (the same on NVDEC: decode.hwaccel) and `decord`
are built in; `decode.backend` may also name any class by import path (`package.module:Class`) with the
same constructor, e.g. a fault-injection backend. With `decode.fallback_backend`, a file the primary
backend cannot open is retried with it.
"""

from __future__ import annotations

import functools
import importlib
import logging

import numpy as np

from mmbatch.decode.backend import (
    StreamInfo,
    _short_reason,
    centre_crop,
    demux_only,
    frame_rotation,
    probe,
    resize_dims,
    rotate,
)
from mmbatch.errors import DecodeError

log = logging.getLogger(__name__)

# Decoders whose "non-reference" frames no later frame can use (FFmpeg's skip_frame=NONREF is then
# exact): H.264 (nal_ref_idc 0), VP8/VP9 (a frame that updates no reference slot, where the decoder
# honours the setting at all), MPEG-1/2/4 Part 2 B-frames. Not HEVC: its skipped "sub-layer
# non-reference" pictures may be referenced from a higher temporal sub-layer, which phone encoders
# use, so skipping them could change the frames returned.
SKIP_UNREFERENCED_CODECS = frozenset({"h264", "vp8", "vp9", "mpeg1video", "mpeg2video", "mpeg4"})


class DecordVideo:
    name = "decord"

    def __init__(self, path: str, info: StreamInfo, size: int):
        import decord

        # decord applies the display rotation itself, then scales to the size asked for, so the
        # size is given in display orientation (checked against ffmpeg's autorotate in tests).
        rotation = probe(path).rotation if info.rotation is None else info.rotation  # not read: a fallback
        width, height = (info.height, info.width) if rotation in (90, 270) else (info.width, info.height)
        w, h = resize_dims(width, height, size)
        try:
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), width=w, height=h, num_threads=1)
            if len(self._reader) == 0:
                raise DecodeError("no decodable video frames")
            self.timestamps = np.asarray(self._reader.get_frame_timestamp(range(len(self._reader))), dtype=np.float64)
        except DecodeError:
            raise
        except Exception as err:
            raise DecodeError(_short_reason(err, path)) from None
        self.size = size

    @property
    def duration_s(self) -> float:
        return float(self.timestamps[-1, 1]) if len(self.timestamps) else 0.0

    @functools.cached_property
    def key_starts(self) -> np.ndarray:
        """Start times of the keyframes (seconds), read once a file."""
        return self.timestamps[np.asarray(self._reader.get_key_indices(), dtype=np.int64), 0]

    def frames(self, indices: np.ndarray) -> np.ndarray:
        try:
            batch = self._reader.get_batch(list(map(int, indices))).asnumpy()
        except Exception as err:
            raise DecodeError(f"frame decode failed: {_short_reason(err)}") from None
        return np.ascontiguousarray(centre_crop(batch, self.size))

    def close(self) -> None:
        self._reader = None


class CentreSquare:
    """A frame's centre square scaled to size x size RGB by FFmpeg's crop and scale filters, one
    filter graph a file (rebuilt if the frame size or format changes). Cropping before scaling
    scales only the pixels kept: 0.5 against 1.4 ms a frame at 640x272 (the whole frame scaled,
    then cropped), the same picture within half a pixel of where the crop falls."""

    def __init__(self, size: int):
        self.size = size
        self._graph, self._shape = None, None

    def _build(self, frame):
        from fractions import Fraction

        import av.filter

        graph = av.filter.Graph()
        graph.threads = 1  # as the decoder: a worker per core is the parallelism, not slice threads
        side = min(frame.width, frame.height)
        nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or Fraction(1, 1000)),
                 graph.add("crop", f"{side}:{side}"),  # centred by default
                 graph.add("scale", f"{self.size}:{self.size}:flags=bilinear"),
                 graph.add("format", "rgb24"),
                 graph.add("buffersink")]
        for a, b in zip(nodes, nodes[1:]):
            a.link_to(b)
        graph.configure()
        return graph

    def __call__(self, frame) -> np.ndarray:
        shape = (frame.width, frame.height, frame.format.name)
        if shape != self._shape:
            self._graph, self._shape = self._build(frame), shape
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()


class PyAVVideo:
    """FFmpeg through PyAV, one decoding thread: packet timestamps without decoding, then for each
    request a seek to the keyframe before its first frame and decoding forward, seeking again only
    where a keyframe lies before the next frame wanted. Frames nothing refers to are skipped unless
    wanted, and only the frames returned are converted.

    Works wherever PyAV has wheels (aarch64, macOS), opens some files decord cannot, and costs
    about two thirds of decord's CPU a clip (docs/performance.md).
    """

    name = "pyav"
    # Each frame is turned by its own display matrix: the probe need not decode one for the
    # rotation (StreamInfo.rotation None). Other readers take it from the probe.
    rotation_from_frames = True

    def __init__(self, path: str, info: StreamInfo, size: int, hwaccel=None, skip_loop_filter: bool = False):
        """`hwaccel`: PyAV's HWAccel to decode on a device, frames downloaded (PyAVCudaVideo).
        `skip_loop_filter`: no deblocking (decode.skip_loop_filter)."""
        import av

        self.size, self.rotation = size, info.rotation  # None: each frame's own (read off it, as the probe would)
        self._square = CentreSquare(size)
        try:
            self._container = av.open(path, hwaccel=hwaccel)
            self._stream = self._container.streams.video[0]
            demux_only(self._container, self._stream)
            # One thread: a decode worker per core is the parallelism; FFmpeg's frame threads cost
            # CPU in hand-offs (measured: 22 ms of CPU a clip against 28-32 with "AUTO").
            self._stream.thread_type = "NONE"
            if skip_loop_filter:  # read when the decoder opens, at the first packet
                self._stream.codec_context.options = {"skip_loop_filter": "all"}
            tb = self._stream.time_base
            packets = [(p.pts, p.is_keyframe, p.duration or 0) for p in self._container.demux(self._stream)
                       if p.pts is not None]
        except Exception as err:
            raise DecodeError(_short_reason(err, path)) from None
        if not packets:
            raise DecodeError("no decodable video frames")
        packets.sort()
        self._pts = np.asarray([p for p, _, _ in packets], dtype=np.int64)
        self._keys = np.asarray([p for p, key, _ in packets if key], dtype=np.int64)
        self._key_set = set(self._keys.tolist())
        origin = float(self._pts[0] * tb)
        starts = self._pts * float(tb) - origin
        # The last frame lasts as long as its packet says, else as long as the one before it.
        last = packets[-1][2] * float(tb) or (starts[-1] - starts[-2] if len(starts) > 1 else 0.04)
        ends = np.append(starts[1:], starts[-1] + last)
        self.timestamps = np.stack([starts, ends], axis=1)

    @property
    def duration_s(self) -> float:
        return float(self.timestamps[-1, 1])

    @functools.cached_property
    def key_starts(self) -> np.ndarray:
        """Start times of the keyframes (seconds), found once a file."""
        return self.timestamps[np.searchsorted(self._pts, self._keys), 0]

    def _seek_needed(self, last: int | None, target: int) -> bool:
        """Seek unless decoding on from `last` reaches `target` without passing a keyframe."""
        if last is None or target <= last:
            return True
        return bool(np.any((self._keys > last) & (self._keys <= target)))

    def _decoded(self, wanted: set[int]):
        """Frames from the current position, decoding only what a frame in `wanted` can need.

        With a codec of SKIP_UNREFERENCED_CODECS, a packet that is not wanted is decoded with
        FFmpeg's `skip_frame = NONREF`: a frame no other frame is predicted from (most B-frames of
        x264's output) is then dropped undecoded, and since nothing refers to it the frames
        returned are the same pixels (tested).
        """
        codec = self._stream.codec_context
        skip = codec.name in SKIP_UNREFERENCED_CODECS
        for packet in self._container.demux(self._stream):
            if skip:
                codec.skip_frame = "NONREF" if packet.pts is not None and packet.pts not in wanted else "DEFAULT"
            yield from codec.decode(packet)  # the demuxer's last, empty packet flushes the decoder

    def _keyframe_alone(self, target: int):
        """The keyframe at `target` from its own packet, the decoder drained and reset: no frame
        after it is decoded (the decoder's reordering delay cost two more a keyframe on x264's
        output). None unless that packet comes first after the seek and decodes to an intra
        picture (an intra-refresh "keyframe" is a P-frame), for the caller to decode as usual."""
        from av.video.frame import PictureType

        self._container.seek(target, stream=self._stream, backward=True)
        codec = self._stream.codec_context
        packet = next(self._container.demux(self._stream), None)
        if packet is None or packet.pts != target:
            return None
        codec.skip_frame = "DEFAULT"
        decoded = [*codec.decode(packet), *codec.decode(None)]
        codec.flush_buffers()  # out of draining, for the next packet
        return next((f for f in decoded if f.pts == target and f.pict_type == PictureType.I), None)

    def _upright(self, frame) -> np.ndarray:
        """A frame's centre square, turned by its display rotation (a view: the square turns with it)."""
        rotation = self.rotation if self.rotation is not None else frame_rotation(frame)
        return rotate(self._square(frame)[None], rotation)[0]

    def frames(self, indices: np.ndarray) -> np.ndarray:
        out: list[np.ndarray] = []
        frames, last = None, None
        targets = self._pts[np.asarray(indices, dtype=np.int64)].tolist()
        wanted = set(targets)
        try:
            for i, target in enumerate(targets):
                if out and target == last:  # the same frame twice (a clip shorter than its frames)
                    out.append(out[-1])
                    continue
                after = targets[i + 1] if i + 1 < len(targets) else None
                seek = frames is None or self._seek_needed(last, target)
                # a keyframe the next frame wanted does not decode on from (keyframes_only's every frame)
                if seek and target in self._key_set and (after is None or self._seek_needed(target, after)) \
                        and (frame := self._keyframe_alone(target)) is not None:
                    frames, last = None, target
                    out.append(self._upright(frame))
                    continue
                if seek:
                    self._container.seek(target, stream=self._stream, backward=True)
                    frames = self._decoded(wanted)
                frame = next((f for f in frames if f.pts is not None and f.pts >= target), None)
                if frame is None:
                    raise DecodeError("frame decode failed: no frame at the requested time")
                last = int(frame.pts)
                out.append(self._upright(frame))
        except DecodeError:
            raise
        except Exception as err:
            raise DecodeError(f"frame decode failed: {_short_reason(err)}") from None
        return np.stack(out)  # each is a view of its frame's rotated square: stacking is the one copy

    def close(self) -> None:
        self._container.close()


class PyAVCudaVideo(PyAVVideo):
    """PyAVVideo on the GPU's video decoder (NVDEC), frames downloaded to the CPU's scaler. FFmpeg's
    own software fallback is off, so a file NVDEC cannot take fails here and `FallbackVideo`
    decodes it on the CPU, saying so."""

    name = "pyav-cuda"

    def __init__(self, path: str, info: StreamInfo, size: int, skip_loop_filter: bool = False):
        from av.codec.hwaccel import HWAccel

        super().__init__(path, info, size, HWAccel(device_type="cuda", allow_software_fallback=False),
                         skip_loop_filter)


def check_cuda_decoder() -> None:
    """ConfigError unless this process can open a CUDA device for FFmpeg's decoders."""
    import av
    from av.codec.hwaccel import HWAccel

    from mmbatch.errors import ConfigError

    try:
        HWAccel(device_type="cuda", allow_software_fallback=False).create(av.codec.Codec("h264", "r"))
    except Exception as err:
        raise ConfigError(f"decode.hwaccel: cuda, but this decode worker cannot open a CUDA device "
                          f"({_short_reason(err)}): give the decode pool GPU nodes (decode.pool.num_gpus and "
                          "resources), or set decode.hwaccel: none") from None


BUILTIN = {"decord": DecordVideo, "pyav": PyAVVideo, "pyav-cuda": PyAVCudaVideo}


def backend_class(name: str):
    if name in BUILTIN:
        return BUILTIN[name]
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"unknown decode backend {name!r}: {err}") from None


class FallbackVideo:
    """The primary backend, switched to the fallback on the first file or frame it fails on (one
    log line a file).

    decord opens some files and then fails on their frames (VP9 with in-decoder resizing:
    "DECORDArrayCopyFromTo: The size must exactly match"), and NVDEC refuses codecs and profiles
    it lacks; the switch keeps those videos. `pyav_options` go to the PyAV backends.
    """

    def __init__(self, primary: str, fallback: str | None, path: str, info: StreamInfo, size: int,
                 pyav_options: dict | None = None):
        self._fallback, self._args = fallback if fallback != primary else None, (path, info, size)
        self._pyav_options = {k: v for k, v in (pyav_options or {}).items() if v}  # a plugin subclass takes none
        try:
            self._video = self._open(primary)
        except DecodeError as err:
            if not self._fallback:
                raise
            self._switch(primary, err)

    def _open(self, name: str):
        cls = backend_class(name)
        return cls(*self._args, **(self._pyav_options if issubclass(cls, PyAVVideo) else {}))

    def _switch(self, failed: str, err: DecodeError) -> None:
        log.warning("decode: the %s backend failed on %s (%s); decoding it with %s", failed, self._args[0],
                    err, self._fallback)
        self._video, self._fallback = self._open(self._fallback), None

    @property
    def name(self) -> str:
        return getattr(self._video, "name", type(self._video).__name__)

    @property
    def timestamps(self) -> np.ndarray:
        return self._video.timestamps

    @property
    def duration_s(self) -> float:
        return self._video.duration_s

    @property
    def key_starts(self) -> np.ndarray | None:
        """Keyframe start times, or None from a backend that does not say (a plugin's)."""
        return getattr(self._video, "key_starts", None)

    def frames_at(self, times: np.ndarray) -> np.ndarray:
        from mmbatch.decode.planner import frame_indices

        try:
            return self._video.frames(frame_indices(self._video.timestamps[:, 0], times))
        except DecodeError as err:
            if not self._fallback:
                raise
            self._video.close()
            self._switch(self.name, err)
            return self._video.frames(frame_indices(self._video.timestamps[:, 0], times))

    def close(self) -> None:
        self._video.close()


def open_video(name: str, path: str, info: StreamInfo, size: int, fallback: str | None = None,
               pyav_options: dict | None = None) -> FallbackVideo:
    """Open with the configured backend, falling back (once) to `fallback` on failure."""
    return FallbackVideo(name, fallback, path, info, size, pyav_options)
