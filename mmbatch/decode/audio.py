"""A file's audio as mono float samples at the models' rate, decoded once front to back.

    audio = PyAVAudio(path, target_rate=16000, origin_s=info.start_s)
    audio.read(start_s, end_s)   # float32 mono at target_rate, clip time

Clips ask in order, so each read decodes on from where the last one stopped and drops what lies
before its start: one decoder pass a file and no seek a clip (a seek a clip cost a third more: the
frames before each seek point were decoded twice), and memory stays about a clip's worth. A read
before that point (pause snapping looks around the boundaries first) seeks back once.
"""

from __future__ import annotations

import functools
import math
from collections import deque

import numpy as np

_SQRT_HALF = np.float32(math.sqrt(0.5))


def channel_planes(frame) -> tuple[np.ndarray, ...] | None:
    """A float mono or stereo frame's channels as arrays over its own buffers (no copy), to be
    mixed many frames at once by `downmix`. None for any other format or layout."""
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


def downmix(channels: tuple[np.ndarray, ...]) -> np.ndarray:
    """Mono float32 from one or two channels: the values libswresample gives (stereo → mono is
    √½·L + √½·R, in float32), without its conversion pass and copies (~20 µs a frame)."""
    if len(channels) == 1:
        return channels[0]
    return _SQRT_HALF * channels[0] + _SQRT_HALF * channels[1]


def float_mono(frame) -> np.ndarray | None:
    """One frame as mono float32 (`channel_planes` then `downmix`), or None (other formats)."""
    planes = channel_planes(frame)
    return None if planes is None else downmix(planes)


class PyAVAudio:
    """A file's audio track read forward (see the module's docstring); resampled by torchaudio."""

    def __init__(self, path: str, target_rate: int, origin_s: float = 0.0):
        import av

        self._av = av
        self.origin_s = origin_s  # stream time of clip time 0 (recorded streams rarely start at 0)
        self._container = av.open(path)
        self._stream = self._container.streams.audio[0]
        self.rate = int(self._stream.codec_context.sample_rate)
        self.target_rate = target_rate
        self._seconds_per_tick = float(self._stream.time_base)  # a float: Fractions cost ~1 ms a clip
        self._pieces: deque[tuple[int, tuple[np.ndarray, ...]]] = deque()  # (first sample, channels)
        self._frames = None  # the decoder, from the last seek
        self._floor = 0  # the earliest sample a read can get without seeking
        self._reached = 0  # the sample after the last decoded

    def close(self) -> None:
        self._container.close()

    def _decoded(self):
        """(first sample at the file's rate, channels) per decoded frame, from the last seek."""
        converter = None
        for frame in self._container.decode(self._stream):
            if frame.pts is None:
                continue
            t0 = int(round(frame.pts * self._seconds_per_tick * self.rate))
            if (planes := channel_planes(frame)) is not None:
                yield t0, planes
                continue
            # other sample formats and layouts: libswresample converts and downmixes
            converter = converter or self._av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            for out in converter.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                yield t0, (samples,)
                t0 += len(samples)

    def _seek(self, start_s: float, first: int) -> None:
        stream = self._stream
        self._container.seek(max(0, int(math.floor(start_s / stream.time_base))), stream=stream, backward=True)
        self._frames, self._floor, self._reached = self._decoded(), first, first
        self._pieces.clear()

    def read(self, start_s: float, end_s: float) -> np.ndarray:
        import torch

        start_s, end_s = start_s + self.origin_s, end_s + self.origin_s
        first, last = int(round(start_s * self.rate)), int(round(end_s * self.rate))
        if self._frames is None or first < self._floor:
            self._seek(start_s, first)
        while self._reached < last and (piece := next(self._frames, None)) is not None:
            self._pieces.append(piece)
            self._reached = piece[0] + len(piece[1][0])
        while self._pieces and self._pieces[0][0] + len(self._pieces[0][1][0]) <= first:
            self._pieces.popleft()  # wholly before this read, so before every later one
        self._floor = max(self._floor, first)
        spans = [(channels, max(first - t0, 0), min(last - t0, len(channels[0])))
                 for t0, channels in self._pieces if t0 < last]
        spans = [(channels, lo, hi) for channels, lo, hi in spans if hi > lo]
        if not spans:
            return np.zeros(0, dtype=np.float32)
        if len({len(channels) for channels, _, _ in spans}) == 1:  # mixed in one pass
            mono = downmix(tuple(np.concatenate([channels[c][lo:hi] for channels, lo, hi in spans])
                                 for c in range(len(spans[0][0]))))
        else:  # the layout changed inside the span
            mono = np.concatenate([downmix(channels)[lo:hi] for channels, lo, hi in spans])
        mono = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
        if self.rate != self.target_rate:
            with torch.inference_mode():
                mono = resampler(self.rate, self.target_rate)(mono)
        return mono.numpy()


@functools.lru_cache(maxsize=16)
def resampler(rate: int, target_rate: int):
    """torchaudio's Resample from `rate` to `target_rate`, kept for the process: building its sinc
    kernel took 3% of the decode child's time when done once a video. FFmpeg's own resampler
    (libswresample, 48 kHz stereo to 16 kHz mono) cost 13 ms of CPU per 10 s here, this 3.4."""
    import torchaudio.transforms as AT

    return AT.Resample(rate, target_rate)
