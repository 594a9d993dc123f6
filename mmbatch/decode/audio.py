"""A file's audio as mono float samples at the models' rate, decoded once front to back.

    audio = PyAVAudio(path, target_rate=16000, origin_s=info.start_s)
    audio.read(start_s, end_s)   # float32 mono at target_rate, clip time

Clips ask in order, so each read decodes on from where the last one stopped and drops what lies
before its start: one decoder pass a file, and memory stays about a clip's worth. A seek a clip
cost no more CPU, but the first frame out of a flushed AAC decoder is silence: every clip began
with up to 21 ms of it (a 48 kHz frame). A read before what is kept (pause snapping looks around
the boundaries first) seeks back, a pre-roll early.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mmbatch.decode.backend import demux_only

_SQRT_HALF = np.float32(math.sqrt(0.5))


def channel_planes(frame) -> tuple[np.ndarray, ...] | None:
    """A float mono or stereo frame's channels as arrays over its own buffers (no copy), for
    `downmix`. None for any other format or layout (libswresample converts those)."""
    fmt, layout = frame.format.name, frame.layout.name
    if fmt not in ("flt", "fltp") or layout not in ("mono", "stereo"):
        return None
    n = frame.samples
    if layout == "mono":
        return (np.frombuffer(frame.planes[0], dtype=np.float32, count=n),)
    if fmt == "fltp":
        return (np.frombuffer(frame.planes[0], dtype=np.float32, count=n),
                np.frombuffer(frame.planes[1], dtype=np.float32, count=n))
    both = np.frombuffer(frame.planes[0], dtype=np.float32, count=2 * n)
    return both[0::2], both[1::2]


def downmix(channels: tuple[np.ndarray, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Mono float32 from one or two channels (into `out` when given): the values libswresample
    gives (stereo → mono is √½·L + √½·R, in float32), without its conversion pass and copies."""
    if len(channels) == 1:
        if out is None:
            return channels[0]
        out[:] = channels[0]
        return out
    right = _SQRT_HALF * channels[1]
    out = np.multiply(channels[0], _SQRT_HALF, out=out)
    return np.add(out, right, out=out)


class PyAVAudio:
    """A file's audio track read forward (see the module's docstring); resampled by torchaudio.

    Contiguous frames are copied into a run of up to a second and each run mixed to mono into one
    buffer placed by the frames' own timestamps (a gap is silence): 21.6 against 25.1 ms a 10 s clip
    of 48 kHz stereo AAC mixing frame by frame, the same samples."""

    # A gap in the timestamps longer than this restarts the buffer at the later frame instead of
    # filling it with silence (damaged timestamps could ask for hours).
    MAX_GAP_S = 30.0
    PREROLL_S = 0.2  # a few frames of any codec (AAC: 21 ms a frame at 48 kHz; Opus asks 80 ms)

    def __init__(self, path: str, target_rate: int, origin_s: float = 0.0, container=None):
        """`container`: `path` opened and not yet read (the probe's, `backend.open_probed`), which
        the reader then closes (the caller, if this raises)."""
        import av

        self._av = av
        self.origin_s = origin_s  # stream time of clip time 0 (recorded streams rarely start at 0)
        self._container = container if container is not None else av.open(path)
        self._stream = self._container.streams.audio[0]
        demux_only(self._container, self._stream)  # the video's packets, most of the bytes, are not read
        self.rate = int(self._stream.codec_context.sample_rate)
        self.target_rate = target_rate
        self._seconds_per_tick = float(self._stream.time_base)  # a float: Fractions cost ~1 ms a clip
        self._frames = None  # the decoder, from the last seek
        self._buf = np.zeros(0, dtype=np.float32)  # mono at the file's rate: samples _start.._end
        self._start = self._end = 0  # also the earliest sample a read can get without seeking

    def close(self) -> None:
        self._container.close()

    def _decoded(self):
        """(first sample at the file's rate, channels) per run of contiguous decoded frames, from the
        last seek. Frames are copied into a run of up to a second, mixed to mono a run at a time:
        mixing each 1,024-sample frame on its own cost more than FFmpeg's AAC decoding of it."""
        converter, run = None, _Run(self.rate)
        for frame in self._container.decode(self._stream):
            if frame.pts is None:
                continue
            t0 = int(round(frame.pts * self._seconds_per_tick * self.rate))
            if (planes := channel_planes(frame)) is None:
                # other sample formats and layouts: libswresample converts and downmixes
                converter = converter or self._av.AudioResampler(format="flt", layout="mono", rate=self.rate)
                converted = [out.to_ndarray().reshape(-1) for out in converter.resample(frame)]
                if not converted:
                    continue
                planes = (np.concatenate(converted),)
            if not run.takes(t0, planes):
                if run.n:
                    yield run.start, run.channels()
                run.begin(t0, len(planes))
                if not run.takes(t0, planes):  # longer than a run: on its own
                    yield t0, planes
                    continue
            run.add(planes)
        if run.n:
            yield run.start, run.channels()

    def _seek(self, start_s: float, first: int) -> None:
        """Decode from a little before `start_s`: the first frame after a seek comes out of a flushed
        decoder (AAC's is silence), so it must fall before the read. A file not yet read is decoded
        from its start without a seek when the read is that close to it."""
        stream = self._stream
        at = start_s - self.PREROLL_S
        if self._frames is not None or at > float((stream.start_time or 0) * stream.time_base):
            self._container.seek(max(0, int(math.floor(at / stream.time_base))), stream=stream, backward=True)
        self._frames = self._decoded()
        self._start = self._end = first

    def _place(self, t0: int, channels: tuple[np.ndarray, ...]) -> None:
        """Mix a frame into the buffer at its own time; samples before the buffer's start are dropped."""
        n = len(channels[0])
        if t0 > self._end + self.MAX_GAP_S * self.rate:
            self._start = self._end = t0
        skip = max(0, self._start - t0)
        if skip >= n:
            return
        lo, hi = t0 + skip - self._start, t0 + n - self._start
        if hi > len(self._buf):
            grown = np.zeros(max(hi, 2 * len(self._buf)), dtype=np.float32)
            grown[: self._end - self._start] = self._buf[: self._end - self._start]
            self._buf = grown
        if lo > self._end - self._start:  # a gap: silence
            self._buf[self._end - self._start: lo] = 0.0
        downmix(tuple(c[skip:] for c in channels), out=self._buf[lo:hi])
        self._end = t0 + n

    def read(self, start_s: float, end_s: float) -> np.ndarray:
        import torch

        start_s, end_s = start_s + self.origin_s, end_s + self.origin_s
        first, last = int(round(start_s * self.rate)), int(round(end_s * self.rate))
        if self._frames is None or first < self._start:
            self._seek(start_s, first)
        if first > self._start:  # what lies before this read lies before every later one
            keep = max(0, self._end - first)
            self._buf[:keep] = self._buf[self._end - keep - self._start: self._end - self._start]
            self._start, self._end = first, max(self._end, first)
        while self._end < last and (piece := next(self._frames, None)) is not None:
            self._place(*piece)
        hi = min(last, self._end) - self._start
        if hi <= 0:
            return np.zeros(0, dtype=np.float32)
        mono = torch.from_numpy(self._buf[:hi].copy())
        if self.rate != self.target_rate:
            with torch.inference_mode():
                mono = resampler(self.rate, self.target_rate)(mono)
        return mono.numpy()


class _Run:
    """Contiguous frames' channels copied side by side (FFmpeg reuses a frame's buffers once the
    next is decoded), handed out as views and refilled."""

    def __init__(self, rate: int):
        self.capacity, self.start, self.n, self._buf = rate, 0, 0, None

    def begin(self, t0: int, n_channels: int) -> None:
        if self._buf is None or len(self._buf) != n_channels:
            self._buf = np.empty((n_channels, self.capacity), dtype=np.float32)
        self.start, self.n = t0, 0

    def takes(self, t0: int, planes: tuple[np.ndarray, ...]) -> bool:
        """Whether a frame continues this run: right after it, the same channels, room left."""
        return (self._buf is not None and len(planes) == len(self._buf) and t0 == self.start + self.n
                and self.n + len(planes[0]) <= self.capacity)

    def add(self, planes: tuple[np.ndarray, ...]) -> None:
        k = len(planes[0])
        for row, plane in zip(self._buf, planes):
            row[self.n: self.n + k] = plane
        self.n += k

    def channels(self) -> tuple[np.ndarray, ...]:
        return tuple(row[: self.n] for row in self._buf)


@functools.lru_cache(maxsize=16)
def resampler(rate: int, target_rate: int):
    """torchaudio's Resample from `rate` to `target_rate`, kept for the process: building its sinc
    kernel took 3% of the decode child's time when done once a video. FFmpeg's own resampler
    (libswresample, 48 kHz stereo to 16 kHz mono) cost 14 ms of CPU per 10 s here, this 2.5-4.7."""
    import torchaudio.transforms as AT

    return AT.Resample(rate, target_rate)
