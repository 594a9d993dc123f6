"""Real-world odd and broken videos: each has one exact, asserted outcome."""

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import ref_batch

from mmbatch.config import parse_config
from mmbatch.decode.stage import DecodeStage
from mmbatch.inputs.sources import VideoRef
from mmbatch.synth import write_video

REPO = Path(__file__).resolve().parent.parent


BOTH = {"vision": {"task": "image_zero_shot", "source": "tiny:clip"},
        "audio": {"task": "audio_classification", "source": "tiny:wav2vec2-er"}}


def cfg(**decode):
    return parse_config({
        "clips": {"window_s": 5.0, "stride_s": 5.0, "min_clip_s": 1.0, "frames_per_clip": 4},
        "decode": {"image_size": 32, "max_pixels": 1920 * 1080, **decode},
        "models": BOTH,  # decode emits only what configured models read (nothing is loaded here)
    })


@pytest.fixture(scope="module")
def stage():
    s = DecodeStage(cfg(), isolated=False)
    s.setup()
    return s


def decode(stage, path, video_id="v"):
    ref = VideoRef(video_id=video_id, uri=str(path), size_bytes=Path(path).stat().st_size, etag="e")
    rows = list(stage(ref_batch(ref)))
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.mark.parametrize("name, kwargs, clips, has_audio", [
    ("webm", dict(codec="libvpx-vp9", audio_codec="libopus", seconds=6.0), 2, True),
    ("mkv", dict(seconds=6.0), 2, True),
    ("mp4", dict(seconds=6.0, audio=False), 2, False),
    ("mp4", dict(seconds=0.3, fps=10), 1, True),
    ("mp4", dict(seconds=0.1, fps=10), 1, True),  # a single frame
    ("mp4", dict(seconds=2.0, width=18, height=10), 1, True),  # odd, tiny resolution (even for yuv420p)
])
def test_scored_cases(stage, tmp_path, name, kwargs, clips, has_audio):
    out = decode(stage, write_video(tmp_path / f"x.{name}", **kwargs))
    assert list(out["status"]) == ["ok"] * clips
    assert out["frames"].shape == (clips, 4, 32, 32, 3)
    assert bool(out["has_waveform"].all()) is has_audio


def test_short_video_is_one_clip_of_its_length(stage, tmp_path):
    out = decode(stage, write_video(tmp_path / "s.mp4", seconds=0.3, fps=10))
    assert out["end_s"][0] == pytest.approx(0.3, abs=0.05)


def test_odd_resolution_17x9_via_ffmpeg(stage, tmp_path):
    src = write_video(tmp_path / "src.mp4", seconds=1.0, width=64, height=36)
    odd = tmp_path / "odd.mkv"
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(src), "-vf", "scale=17:9", "-c:v", "libx264",
                    "-pix_fmt", "yuv444p", str(odd)], check=True)
    out = decode(stage, odd)
    assert list(out["status"]) == ["ok"] and out["frames"].shape[2:4] == (32, 32)


def test_above_pixel_limit(tmp_path):
    s = DecodeStage(cfg(max_pixels=64 * 36), isolated=False)
    out = decode(s, write_video(tmp_path / "big.mp4", seconds=1.0, width=96, height=64))
    assert (out["status"][0], out["error_stage"][0], out["error"][0]) == ("error", "decode", "96x64 exceeds max_pixels 2304")


def test_audio_only_is_failed(stage, tmp_path):
    out = decode(stage, write_video(tmp_path / "a.mp4", seconds=1.0, video=False))
    assert (out["status"][0], out["error"][0]) == ("error", "no video stream")


def test_audio_only_scored_when_allowed(tmp_path):
    s = DecodeStage(cfg(allow_audio_only=True), isolated=False)
    out = decode(s, write_video(tmp_path / "a.mp4", seconds=7.0, video=False))
    assert list(out["status"]) == ["ok", "ok"] and not out["has_frames"].any() and out["has_waveform"].all()
    assert out["audio_len"].tolist() == [80000, 32000] and (out["frames"] == 0).all()


def _vfr_video(path: Path) -> list[float]:
    """Frame i shows brightness 15*i; first 10 frames 0.1 s apart, then 0.5 s apart."""
    import av

    times = [i * 0.1 for i in range(10)] + [1.0 + i * 0.5 for i in range(6)]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt, s.time_base = 64, 64, "yuv420p", Fraction(1, 1000)
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 15 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), Fraction(1, 1000)
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return times


def test_variable_frame_rate_samples_the_right_moments(stage, tmp_path):
    from mmbatch.decode.planner import ClipSpan, sample_times

    times = _vfr_video(tmp_path / "vfr.mp4")
    out = decode(stage, tmp_path / "vfr.mp4")
    span = ClipSpan(0, 0.0, float(out["end_s"][0]))  # one clip: the file is under 5 s
    assert span.end_s == 4.0  # the last frame (3.5 s) lasts what its packet says, 0.5 s
    wanted = sample_times(span, 4)
    by_pts = [int(np.searchsorted(times, t, side="right") - 1) for t in wanted]
    by_avg_fps = [int(t * len(times) / span.end_s) for t in wanted]
    assert by_pts == [5, 11, 13, 15] and by_pts != by_avg_fps  # index = t * fps would pick others
    brightness = out["frames"][0].reshape(4, -1).mean(1)
    np.testing.assert_allclose(brightness, [15 * i for i in by_pts], atol=6)


def _stripe_video(path: Path) -> None:
    """64x32 frames: top half white, bottom half black."""
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv444p"
        img = np.zeros((32, 64, 3), np.uint8)
        img[:16] = 255
        for _ in range(5):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_rotation_metadata_is_honoured_like_ffmpeg(stage, tmp_path, monkeypatch):
    _stripe_video(tmp_path / "plain.mp4")
    rotated = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-display_rotation", "90", "-i", str(tmp_path / "plain.mp4"),
                    "-c", "copy", str(rotated)], check=True)
    # ffmpeg's own player path (autorotate) as the reference: one raw RGB frame.
    raw = subprocess.run([ffmpeg(), "-loglevel", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(64, 32, 3)  # displayed upright: 32 wide, 64 tall
    white_left = ref[:, :16].mean() > ref[:, 16:].mean()
    # PyAV's reader turns each frame by its own display matrix, so the probe decodes no frame for it;
    # decord needs the rotation up front and reads it itself where the probe did not (a fallback).
    from mmbatch.decode import backend as streams
    from mmbatch.decode.video import DecordVideo

    probed = []
    real = streams.first_frame_rotation
    monkeypatch.setattr(streams, "first_frame_rotation", lambda *a: probed.append(a) or real(*a))
    for backend in ("decord", "pyav"):
        s = DecodeStage(cfg(backend=backend, fallback_backend=None), isolated=False)
        probed.clear()
        plain = decode(s, tmp_path / "plain.mp4")["frames"][0, 0].mean(-1)
        turned = decode(s, rotated)["frames"][0, 0].mean(-1)
        assert len(probed) == (2 if backend == "decord" else 0), backend
        assert plain[:16].mean() > 200 and plain[16:].mean() < 50, backend  # unrotated: white on top
        left, right = turned[:, :16].mean(), turned[:, 16:].mean()
        assert bool(left > right) == bool(white_left) and abs(left - right) > 150, backend
    unread = streams.probe(str(rotated), read_rotation=False)
    assert unread.rotation is None and streams.probe(str(rotated)).rotation == 90
    np.testing.assert_array_equal(DecordVideo(str(rotated), unread, 32).frames([0]),
                                  DecordVideo(str(rotated), streams.probe(str(rotated)), 32).frames([0]))


def test_pyav_backend_matches_decord(tmp_path):
    path = write_video(tmp_path / "v.mp4", seconds=6.0)
    a = decode(DecodeStage(cfg(backend="decord"), isolated=False), path)
    b = decode(DecodeStage(cfg(backend="pyav"), isolated=False), path)
    np.testing.assert_array_equal(a["start_s"], b["start_s"])
    assert np.abs(a["frames"].astype(int) - b["frames"].astype(int)).mean() < 3  # same frames, scaler rounding


def test_pyav_decodes_forward_and_seeks_only_past_a_keyframe(tmp_path):
    """The default backend seeks once to the keyframe before the first frame wanted and decodes
    forward, seeking again only where a keyframe lies before the next frame wanted; a frame asked
    for twice is decoded once. The frames are exactly those that a seek to each one gives."""
    from mmbatch.decode.backend import probe
    from mmbatch.decode.video import PyAVVideo

    path = write_video(tmp_path / "v.mp4", seconds=6.0, fps=10)  # a keyframe a second: frames 0, 10, 20, ...
    video = PyAVVideo(str(path), probe(str(path)), 32)
    assert list(video._keys[:3]) == list(video._pts[[0, 10, 20]])
    seeks = []

    class Counting:  # the container, its seeks counted
        def __init__(self, container):
            self.container = container

        def __getattr__(self, name):
            return getattr(self.container, name)

        def seek(self, *args, **kwargs):
            seeks.append(args[0])
            return self.container.seek(*args, **kwargs)

    video._container = Counting(video._container)
    wanted = [3, 5, 12, 12, 13, 40]
    frames = video.frames(np.array(wanted))
    assert seeks == list(video._pts[[3, 12, 40]])  # 5 and 13 decoded on from 3 and 12; 12 twice, once
    one_by_one = np.concatenate([video.frames(np.array([i])) for i in wanted])
    np.testing.assert_array_equal(frames, one_by_one)
    assert frames.shape == (6, 32, 32, 3) and len({frames[i].tobytes() for i in range(6)}) == 5
    video.close()


def test_pyav_skips_unreferenced_frames_it_was_not_asked_for_with_the_same_pixels(tmp_path):
    """B-frames no other frame refers to are dropped undecoded unless asked for; every frame
    returned is the one a full decode of the file gives, whether or not it is such a B-frame."""
    import av

    from mmbatch.decode.backend import probe
    from mmbatch.decode.video import CentreSquare, PyAVVideo

    path = str(write_video(tmp_path / "v.mp4", seconds=4.0, fps=10, width=64, height=48, x264_preset="veryfast"))
    with av.open(path) as c:  # the reference: every frame, decoded in full, converted as the backend does
        square = CentreSquare(32)
        full = {f.pts: square(f) for f in c.decode(c.streams.video[0])}
    video = PyAVVideo(path, probe(path), 32)
    assert len(full) == len(video._pts) == 40
    video._container.seek(0, stream=video._stream)
    kept = [int(f.pts) for f in video._decoded(wanted=set())]  # nothing wanted: only referenced frames decoded
    unreferenced = sorted(set(full) - set(kept))
    assert len(unreferenced) >= 10 and set(kept) <= set(full)  # the file has such frames to skip
    order = list(video._pts)
    wanted = [order.index(unreferenced[0]), order.index(unreferenced[1]) + 1, order.index(unreferenced[5]),
              order.index(unreferenced[-1]), 39]
    frames = video.frames(np.array(wanted))
    for got, i in zip(frames, wanted, strict=True):
        np.testing.assert_array_equal(got, full[int(video._pts[i])])
    video.close()

    # HEVC's "sub-layer non-reference" pictures can be referenced from a higher temporal layer:
    # nothing is skipped there.
    path = str(write_video(tmp_path / "v.hevc.mp4", seconds=2.0, fps=10, width=64, height=48, codec="libx265",
                           audio=False))
    video = PyAVVideo(path, probe(path), 32)
    video._container.seek(0, stream=video._stream)
    assert len(list(video._decoded(wanted=set()))) == len(video._pts) == 20
    video.close()


@pytest.mark.parametrize("codec", ["libx264", "libx265", "libvpx-vp9"])
def test_keyframes_are_decoded_from_their_own_packet_with_the_pixels_of_a_full_decode(tmp_path, codec):
    """A wanted keyframe that the next wanted frame does not decode on from (clips.keyframes_only's
    every frame) is decoded alone, the decoder drained: the same pixels as a full decode; a keyframe
    followed by a frame after it within its group is decoded as before, and so is that frame."""
    import av

    from mmbatch.decode.backend import probe
    from mmbatch.decode.video import CentreSquare, PyAVVideo

    suffix = ".webm" if codec == "libvpx-vp9" else ".mp4"
    path = str(write_video(tmp_path / f"v{suffix}", seconds=4.0, fps=10, width=64, height=48, codec=codec,
                           x264_preset="veryfast", audio=False))
    with av.open(path) as c:
        square = CentreSquare(32)
        full = {f.pts: square(f) for f in c.decode(c.streams.video[0])}
    video = PyAVVideo(path, probe(path), 32)
    keys = [int(np.searchsorted(video._pts, k)) for k in video._keys]
    assert len(keys) == 4  # a keyframe a second
    usual, alone = [], []
    real_decoded, real_alone = video._decoded, video._keyframe_alone
    video._decoded = lambda wanted: (usual.append(1), real_decoded(wanted))[1]
    video._keyframe_alone = lambda target: (alone.append(target), real_alone(target))[1]
    for got, i in zip(video.frames(np.array(keys)), keys, strict=True):
        np.testing.assert_array_equal(got, full[int(video._pts[i])])
    assert not usual and len(alone) == 4
    mixed = [keys[0], keys[0] + 3, keys[2]]  # the first keyframe decodes on to the frame after it
    for got, i in zip(video.frames(np.array(mixed)), mixed, strict=True):
        np.testing.assert_array_equal(got, full[int(video._pts[i])])
    assert len(usual) == 1 and len(alone) == 5
    video.close()


def test_fallback_backend_opens_what_the_primary_cannot(tmp_path):
    path = write_video(tmp_path / "v.mp4", seconds=2.0)
    out = decode(DecodeStage(cfg(backend="test_corpus:FailingVideo", fallback_backend="pyav"), isolated=False), path)
    assert list(out["status"]) == ["ok"]
    out = decode(DecodeStage(cfg(backend="test_corpus:FailingVideo", fallback_backend=None), isolated=False), path)
    assert (out["status"][0], out["error"][0]) == ("error", "cannot open")


def test_vp9_frames_decord_cannot_resize_fall_back_to_pyav(tmp_path):
    path = write_video(tmp_path / "v.webm", codec="libvpx-vp9", audio_codec="libopus", seconds=6.0)
    out = decode(DecodeStage(cfg(backend="decord", fallback_backend=None), isolated=False), path)
    assert "The size must exactly match" in out["error"][0]  # the decord bug, seen as it is
    out = decode(DecodeStage(cfg(backend="decord"), isolated=False), path)
    assert list(out["status"]) == ["ok", "ok"] and out["frames"].std() > 10


class FailingVideo:
    def __init__(self, path, info, size):
        from mmbatch.errors import DecodeError

        raise DecodeError("cannot open")


def test_hung_decoder_is_killed_and_recorded(tmp_path):
    path = write_video(tmp_path / "stuck.mp4", seconds=2.0)
    s = DecodeStage(cfg(backend="mmbatch.decode.faults:StuckVideo", fallback_backend=None, timeout_s=3))
    s.setup()
    try:
        out = decode(s, path)
        assert (out["status"][0], out["error_stage"][0]) == ("error", "decode")
        assert out["error"][0] == "decode timed out after 3 s (decoder stuck)"
    finally:
        s.close()


def test_crashed_decoder_is_recorded_and_replaced(tmp_path):
    path = write_video(tmp_path / "crash.mp4", seconds=2.0)
    good = write_video(tmp_path / "good.mp4", seconds=2.0)
    s = DecodeStage(cfg(backend="mmbatch.decode.faults:CrashingVideo", fallback_backend=None, timeout_s=30))
    s.setup()
    try:
        out = decode(s, path)
        assert out["status"][0] == "error" and out["error"][0].startswith("decoder process crashed")
        out = decode(s, good)  # a fresh child serves the next video
        assert list(out["status"]) == ["ok"]
    finally:
        s.close()


def test_a_crash_mid_task_leaves_the_task_s_other_videos_to_a_fresh_child(tmp_path):
    """A task's videos are all sent to the child up front; one that takes the child down fails
    alone, and the videos queued behind it go to a fresh child, in order. A task stopped early
    (its generator closed) kills the child, which would still be decoding videos nobody reads."""
    paths = [write_video(tmp_path / f"{name}.mp4", seconds=s) for name, s in (("a", 7.0), ("crash", 2.0), ("b", 2.0))]
    refs = [VideoRef(video_id=p.stem, uri=str(p), size_bytes=p.stat().st_size, etag="e").as_row() for p in paths]
    batch = {k: np.array([r[k] for r in refs]) for k in refs[0]}
    s = DecodeStage(cfg(backend="mmbatch.decode.faults:CrashingVideo", fallback_backend=None, timeout_s=30))
    s.setup()
    try:
        rows = list(s(batch))
        assert [(r["video_id"][0], r["clip_index"][0], r["status"][0]) for r in rows] == [
            ("a", 0, "ok"), ("a", 1, "ok"), ("crash", -1, "error"), ("b", 0, "ok")]
        assert rows[2]["error"][0].startswith("decoder process crashed")
        first = s(batch)
        next(first)
        first.close()
        assert s._watchdog._proc is None  # killed with its queue
        assert [r["video_id"][0] for r in s(batch)] == ["a", "a", "crash", "b"]
    finally:
        s.close()


def test_twenty_minute_video_decodes_in_bounded_memory(tmp_path):
    """Peak RSS of a decode process grows little from a 20 s video to a 20 min one. FLAC audio in
    Matroska: writing 20 min of AAC takes ~20 s here, and memory does not depend on the codec."""
    short = write_video(tmp_path / "short.mkv", seconds=20.0, width=64, height=36, fps=5, audio_codec="flac")
    long = write_video(tmp_path / "long.mkv", seconds=1200.0, width=64, height=36, fps=5, sample_rate=16000,
                       audio_codec="flac")
    code = """
import resource, sys, numpy as np
sys.path.insert(0, %r)
from mmbatch.config import parse_config
from mmbatch.decode.stage import DecodeStage
from mmbatch.inputs.sources import VideoRef
cfg = parse_config({"clips": {"window_s": 10.0, "stride_s": 10.0, "frames_per_clip": 8},
                    "decode": {"image_size": 64}, "models": %r})
s = DecodeStage(cfg, isolated=False); s.setup()
def run(p):  # clips whose frames and audio were decoded
    ref = VideoRef("v", p, 1, "e").as_row()
    return sum(int(b["has_frames"].sum() + b["has_waveform"].sum()) // 2
               for b in s({k: np.array([v]) for k, v in ref.items()}))
n1 = run(sys.argv[1]); peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n2 = run(sys.argv[2]); peak2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n1, n2, peak1, peak2)
""" % (str(REPO), BOTH)
    out = subprocess.run([sys.executable, "-c", code, str(short), str(long)], capture_output=True, text=True,
                         timeout=900)
    n1, n2, peak1, peak2 = map(int, out.stdout.split())
    assert (n1, n2) == (2, 120)
    growth_mb = (peak2 - peak1) / 1024
    # Under what holding the whole video would take: its audio is 77 MB as float32, its frames 41 MB.
    assert growth_mb < 30, f"peak RSS grew {growth_mb:.0f} MB for a 60x longer video"


def test_segments_from_a_json_sidecar(tmp_path):
    from mmbatch.inputs.sources import discover

    write_video(tmp_path / "talk.mp4", seconds=9.0)
    (tmp_path / "talk.json").write_text('[[1.0, 2.0], {"start_s": 4.5, "end_s": 8.0}]')
    s = DecodeStage(parse_config({"clips": {"policy": "segments", "frames_per_clip": 2}, "decode": {"image_size": 32},
                                  "models": BOTH}), isolated=False)
    ref = discover(str(tmp_path))[0]
    rows = list(s(ref_batch(ref)))
    out = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    assert out["start_s"].tolist() == [1.0, 4.5] and out["end_s"].tolist() == [2.0, 8.0]
    assert out["audio_len"].tolist() == [16000, 56000]


def test_target_fps_fills_fewer_frames(tmp_path):
    s = DecodeStage(parse_config({"clips": {"frames_per_clip": 8, "target_fps": 1.0, "window_s": 3, "stride_s": 3},
                                  "decode": {"image_size": 32},
                                  "models": BOTH}), isolated=False)
    out = decode(s, write_video(tmp_path / "v.mp4", seconds=6.0))
    assert out["n_frames"].tolist() == [3, 3] and (out["frames"][:, 3:] == 0).all() and out["frames"][:, :3].std() > 10


def test_duration_and_clip_count_limits(tmp_path):
    path = write_video(tmp_path / "v.mp4", seconds=12.0)
    out = decode(DecodeStage(cfg(max_duration_s=10), isolated=False), path)
    assert (out["status"][0], out["error"][0]) == ("error", "duration 12 s exceeds max_duration_s 10")
    out = decode(DecodeStage(cfg(max_clips=2), isolated=False), path)
    assert (out["status"][0], out["error"][0]) == ("error", "3 clips exceed max_clips 2")


def test_hwaccel_cuda_needs_a_gpu_and_decodes_what_nvdec_cannot_take_on_the_cpu(tmp_path, monkeypatch, caplog):
    """decode.hwaccel: cuda in a worker with no CUDA device is a configuration error; a file NVDEC
    cannot take (FFV1 has no NVDEC decoder) is decoded on the CPU, the same frames, one line said."""
    from mmbatch.decode import video
    from mmbatch.errors import ConfigError

    on_gpu = cfg(hwaccel="cuda", pool={"num_gpus": 0.1})
    try:
        video.check_cuda_decoder()
    except ConfigError:  # this machine (CI): no device
        with pytest.raises(ConfigError, match=r"decode.hwaccel: cuda, but this decode worker cannot open a CUDA "
                                              r"device \(.+\): give the decode pool GPU nodes"):
            DecodeStage(on_gpu, isolated=False).setup()
    monkeypatch.setattr(video, "check_cuda_decoder", lambda: None)  # as on a GPU node
    path = write_video(tmp_path / "v.mkv", seconds=3.0, codec="ffv1", audio=False)
    with caplog.at_level("WARNING", logger="mmbatch.decode.video"):
        got = decode(DecodeStage(on_gpu, isolated=False), path)
    said = [r.getMessage() for r in caplog.records if r.name == "mmbatch.decode.video"]
    assert len(said) == 1 and said[0].startswith(f"decode: the pyav-cuda backend failed on {path} (")
    assert said[0].endswith("); decoding it with pyav")
    expected = decode(DecodeStage(cfg(), isolated=False), path)
    assert list(got["status"]) == ["ok"] and got["frames"].std() > 10
    np.testing.assert_array_equal(got["frames"], expected["frames"])


def test_skip_loop_filter_decodes_the_frames_within_its_tolerance(tmp_path):
    """decode.skip_loop_filter changes the pixels of a deblocked codec's frames, by no more than the
    tolerance its setting promises (40 dB PSNR on footage; 35 here on busy synthetic frames)."""
    path = write_video(tmp_path / "v.mp4", seconds=5.0, fps=25, width=320, height=240, x264_preset="veryfast")
    full = decode(DecodeStage(cfg(image_size=128), isolated=False), path)["frames"].astype(np.float64)
    fast = decode(DecodeStage(cfg(image_size=128, skip_loop_filter=True), isolated=False), path)["frames"]
    mse = ((fast - full) ** 2).reshape(len(full), -1).mean(axis=1)
    assert mse.max() > 0  # the filter was skipped: the frames differ
    assert 10 * np.log10(255**2 / mse.max()) > 35


def test_rows_relayed_through_shared_memory_are_the_rows_decoded_in_process(tmp_path):
    """The watchdog child hands frames and audio over in a ring of shared-memory slots (4; 7 clips
    go round it): the rows are those an in-process decode gives. The segment's name is gone once
    both processes hold it, so a killed worker leaves nothing in /dev/shm."""
    path = write_video(tmp_path / "v.mp4", seconds=32.0)
    ref = ref_batch(VideoRef(video_id="v", uri=str(path), size_bytes=path.stat().st_size, etag="e"))
    relay = DecodeStage(cfg(timeout_s=30))
    relay.setup()
    try:
        relayed = list(relay(ref))
        ring = relay._watchdog._ring
        assert ring.slot_bytes == 4 * 32 * 32 * 3 + 4 * 5 * 16000  # frames of a clip + its 5 s of audio
        assert not (Path("/dev/shm") / ring.shm.name.lstrip("/")).exists()
        more = list(relay(ref))  # the same child, the same ring
        assert relay._watchdog._ring is ring and len(more) == 7
    finally:
        relay.close()
    direct = list(DecodeStage(cfg(), isolated=False)(ref))
    assert len(relayed) == len(direct) == 7
    for got, want in zip(relayed, direct, strict=True):
        assert set(got) == set(want)
        for k in set(want) - {"decode_seconds"}:
            np.testing.assert_array_equal(got[k], want[k])
