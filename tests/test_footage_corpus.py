"""The benchmark's real-footage corpus: a clip repeated by copying its packets, plus a tone."""

import av
import numpy as np

from benchmarks.footage import describe, write_looped
from mmbatch.synth import write_video


def test_a_looped_clip_decodes_as_the_clip_again_and_again_with_audio_to_its_end(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", seconds=2.0, fps=10, width=64, height=48, audio=False,
                       x264_preset="veryfast")  # B-frames: decode order differs from presentation order
    looped = write_looped(tmp_path / "out" / "looped.mp4", clip, seconds=6.5, tone_hz=300.0)
    assert not list((tmp_path / "out").glob("*.part.mp4"))

    def frames(path):
        with av.open(str(path)) as c:
            return [(f.pts, f.to_ndarray(format="gray")) for f in c.decode(c.streams.video[0])]

    once, thrice = frames(clip), frames(looped)
    assert len(once) == 20 and len(thrice) == 60  # 6.5 s asked: whole repeats of 2 s, the nearest
    pts = [p for p, _ in thrice]
    assert pts == sorted(pts) and len(set(np.diff(pts))) == 1  # evenly spaced across the joins
    for k in range(3):
        for (_, a), (_, b) in zip(once, thrice[20 * k: 20 * (k + 1)], strict=True):
            np.testing.assert_array_equal(a, b)  # copied, not re-encoded

    facts = describe(looped)
    assert (facts["width"], facts["height"], facts["frames"], facts["fps"]) == (64, 48, 60, 10.0)
    assert facts["keyframes"] == 6 and facts["unreferenced_share"] > 0.2 and abs(facts["seconds"] - 6.0) < 0.1
    with av.open(str(looped)) as c:
        audio = c.streams.audio[0]
        assert (audio.codec_context.sample_rate, audio.layout.name) == (48000, "stereo")
        samples = sum(f.samples for f in c.decode(audio))
    assert abs(samples / 48000 - 6.0) < 0.05
