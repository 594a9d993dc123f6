"""Synthetic videos (PyAV): the demo's inputs and the test suite's fixtures.

Frames are coloured gradients that change over time; audio is a tone (or silence), or real
synthesized speech (espeak-ng, from the `espeakng-loader` wheel of the test extra) for tests of
speech recognition with real weights. The demo videos carry WebVTT transcripts whose sentences
change sentiment from clip to clip.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def _write_frames(out, vstream, seconds: float, fps: int, base) -> None:
    """A moving colour gradient: frames differ, so decoders and encoders see real content."""
    import av

    width, height = vstream.width, vstream.height
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(int(round(seconds * fps))):
        shift = (i * 7) % 255
        img = np.stack([(xx * 255 // max(width - 1, 1) + shift + base[0]) % 255,
                        (yy * 255 // max(height - 1, 1) + base[1]) % 255,
                        np.full_like(xx, (base[2] + 3 * i) % 255)], axis=-1).astype(np.uint8)
        for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(packet)
    for packet in vstream.encode():
        out.mux(packet)


def _write_audio(out, astream, seconds: float, sample_rate: int, tone_hz: float,
                 speech: list[tuple[float, str | np.ndarray]] | None) -> None:
    """A tone, or `speech` at the given seconds: sentences spoken by espeak-ng, or samples at
    `sample_rate` already spoken (by `spoken`)."""
    import av

    frame_size = astream.codec_context.frame_size or 1024
    total = int(seconds * sample_rate)
    t = np.arange(total) / sample_rate
    wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    if speech:
        wave[:] = 0.0
        for start, sentence in speech:
            said = spoken(sentence, sample_rate) if isinstance(sentence, str) else sentence
            said = said[: max(0, total - int(start * sample_rate))]
            wave[int(start * sample_rate): int(start * sample_rate) + len(said)] = said
    channels = 2 if astream.layout.name == "stereo" else 1
    pts = 0
    for start in range(0, total, frame_size):
        chunk = wave[start: start + frame_size]
        data = np.repeat(chunk[None, :], channels, axis=0)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=astream.layout.name)
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, Fraction(1, sample_rate)
        pts += len(chunk)
        for packet in astream.encode(frame):
            out.mux(packet)
    for packet in astream.encode():
        out.mux(packet)


def write_video(path: str | Path, *, seconds: float = 6.0, fps: int = 10, width: int = 96, height: int = 64,
                audio: bool = True, sample_rate: int = 22050, tone_hz: float = 440.0, seed: int = 0,
                codec: str = "libx264", audio_codec: str = "aac", video: bool = True,
                container_format: str | None = None, container_options: dict | None = None,
                speech: list[tuple[float, str | np.ndarray]] | None = None, x264_preset: str = "ultrafast") -> Path:
    """Write a small test video with PyAV; returns its path.

    `speech`: (start second, sentence) pairs spoken by espeak-ng instead of the tone; a sentence
    may also be its samples at `sample_rate`, already spoken.

    `x264_preset`: "ultrafast" writes I- and P-frames only; "veryfast" and slower presets add
    B-frames, most of which no other frame refers to, as in most encoders' output.

    `container_format="hls"` with `container_options={"hls_time": "2"}` writes an HLS
    playlist at `path` plus its .ts segments beside it, as stream recorders do.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as out:
        vstream = astream = None
        if video:
            vstream = out.add_stream(codec, rate=fps)
            vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
            vstream.codec_context.gop_size = fps  # a keyframe a second: HLS can cut 1 s segments
            if codec == "libx264":
                vstream.options = {"preset": x264_preset}
        if audio:
            if audio_codec == "libopus":
                sample_rate = 48000  # the only rate libopus accepts here
            astream = out.add_stream(audio_codec, rate=sample_rate)
            astream.layout = "mono" if audio_codec != "libopus" else "stereo"
        if vstream is not None:
            _write_frames(out, vstream, seconds, fps, base)
        if astream is not None:
            _write_audio(out, astream, seconds, sample_rate, tone_hz, speech)
    return path


# espeak-ng keeps state from one utterance to the next inside a process (the same sentence comes
# out a few samples longer or shorter each time, and a recogniser can hear it differently), and no
# call resets it: each utterance is spoken by a fresh process that loads only the library, so a
# sentence always sounds the same. AUDIO_OUTPUT_SYNCHRONOUS (2): samples come through the callback.
_SPEAK = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
rate = lib.espeak_Initialize(2, 0, sys.argv[2].encode(), 0)
if rate <= 0:
    sys.exit("espeak-ng did not initialise")
out = []
@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
def collect(wav, n, _events):
    if n > 0:
        out.append(ctypes.string_at(wav, 2 * n))
    return 0
lib.espeak_SetSynthCallback(collect)
lib.espeak_SetVoiceByName(b"en-us")
raw = sys.stdin.buffer.read() + b"\0"
# espeak_Synth(text, size, position, POS_CHARACTER, end_position, espeakCHARS_UTF8, uid, user_data)
if lib.espeak_Synth(raw, len(raw), 0, 1, 0, 1, None, None) != 0 or lib.espeak_Synchronize() != 0:
    sys.exit("espeak-ng could not speak")
sys.stdout.buffer.write(rate.to_bytes(4, "little") + b"".join(out))
"""


def spoken(text: str, sample_rate: int = 16000) -> np.ndarray:
    """`text` read aloud by espeak-ng (the library and voices ship in the `espeakng-loader` wheel),
    as mono float32 at `sample_rate`: real speech for recognisers, made offline; the same every time."""
    import subprocess
    import sys

    try:
        import espeakng_loader
    except ImportError:
        raise RuntimeError("synthesized speech needs espeak-ng: pip install espeakng-loader") from None
    import torch
    import torchaudio.functional as AF

    done = subprocess.run([sys.executable, "-S", "-c", _SPEAK, espeakng_loader.get_library_path(),
                           str(espeakng_loader.get_data_path())], input=text.encode(), capture_output=True)
    if done.returncode != 0 or len(done.stdout) < 4:
        raise RuntimeError(f"espeak-ng could not speak {text!r}: {done.stderr.decode(errors='replace').strip()}")
    rate = int.from_bytes(done.stdout[:4], "little")
    samples = np.frombuffer(done.stdout[4:], dtype="<i2").astype(np.float32) / 32768.0
    return AF.resample(torch.from_numpy(samples), rate, sample_rate).numpy()


def _stamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def write_vtt(path: str | Path, cues: list[tuple[float, float, str]]) -> Path:
    path = Path(path)
    body = "\n\n".join(f"{_stamp(a)} --> {_stamp(b)}\n{text}" for a, b, text in cues)
    path.write_text("WEBVTT\n\n" + body + "\n", encoding="utf-8")
    return path


# Each demo video: (name, seconds, cues). Clips are 4 s long in pipelines/demo.yaml.
DEMO_VIDEOS = [
    ("customer_call", 12.0, [
        (0.2, 3.8, "I'm really happy with the new service, it works wonderfully."),
        (4.2, 7.8, "The invoice number is on the second page of the document."),
        (8.2, 11.8, "But the delivery was late again and I'm very disappointed."),
    ]),
    ("product_review", 8.0, [
        (0.2, 3.8, "This is the worst purchase I have ever made, it broke in a day."),
        (4.2, 7.8, "Honestly the replacement is fantastic, I love it."),
    ]),
    ("weather_report", 8.0, [
        (0.2, 3.8, "Tomorrow the temperature will be twelve degrees with light wind."),
        (4.2, 7.8, "What a beautiful sunny weekend, everyone is going to enjoy it!"),
    ]),
]


def write_demo_inputs(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    paths = []
    for i, (name, seconds, cues) in enumerate(DEMO_VIDEOS):
        paths.append(write_video(folder / f"{name}.mp4", seconds=seconds, seed=i, tone_hz=220.0 * (i + 1)))
        write_vtt(folder / f"{name}.vtt", cues)
    return paths
