"""The decode stage called with plain dicts (no Ray): clips out, and one row per failure."""

import numpy as np
import pytest
from conftest import ref_batch

from mmbatch.decode.stage import DecodeStage
from mmbatch.inputs.sources import VideoRef
from mmbatch.synth import write_video


@pytest.fixture(scope="module")
def stage(tiny_config):
    s = DecodeStage(tiny_config)
    s.setup()
    return s


def decode(stage, path, video_id="v"):
    ref = VideoRef(video_id=video_id, uri=str(path), size_bytes=path.stat().st_size, etag="e")
    rows = list(stage(ref_batch(ref)))
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def test_clips_frames_and_audio(stage, tmp_path):
    out = decode(stage, write_video(tmp_path / "v.mp4", seconds=12.0, width=96, height=64))
    assert list(out["clip_index"]) == [0, 1, 2]
    np.testing.assert_allclose(out["start_s"], [0, 5, 10])
    np.testing.assert_allclose(out["end_s"], [5, 10, 12], atol=0.05)
    assert out["frames"].shape == (3, 4, 64, 64, 3) and out["frames"].dtype == np.uint8
    assert out["frames"].std() > 10  # real pixels, not zeros
    assert list(out["audio_len"]) == [80000, 80000, 32000]  # 16 kHz mono, per clip
    assert np.abs(out["waveform"][0, :80000]).max() == pytest.approx(0.3, abs=0.05)  # the 0.3-amplitude tone
    assert set(out["status"]) == {"ok"} and set(out["n_rows"]) == {3}
    assert len(set(out["clip_id"])) == 3


def test_resampled_tone_keeps_its_pitch(stage, tmp_path):
    out = decode(stage, write_video(tmp_path / "t.mp4", seconds=2.0, tone_hz=440.0, sample_rate=22050))
    wave = out["waveform"][0, : out["audio_len"][0]]
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(len(wave), 1 / 16000)[spectrum.argmax()] == pytest.approx(440.0, abs=2.0)


def test_no_audio_track_scores_without_audio(stage, tmp_path):
    out = decode(stage, write_video(tmp_path / "mute.mp4", seconds=3.0, audio=False))
    assert list(out["status"]) == ["ok"] and not out["has_waveform"].any() and out["has_frames"].all()
    assert out["waveform"].shape == (1, 0)  # no stream: no samples travel


def test_audio_that_cannot_be_decoded_is_lost_with_its_reason(tiny_config, tmp_path, monkeypatch):
    """A clip keeps its frames when its audio cannot be read, and says why in audio_error (the
    audio encoder keeps it as the modality's failure; a track simply absent says nothing)."""
    from mmbatch.decode import audio

    path = write_video(tmp_path / "v.mp4", seconds=7.0)
    calls = []

    def damaged_packet(self, start_s, end_s):
        calls.append(start_s)
        if len(calls) == 2:
            raise ValueError("Invalid data found when processing input")
        return np.zeros(16000, np.float32)

    monkeypatch.setattr(audio.PyAVAudio, "read", damaged_packet)
    ref = VideoRef(video_id="v", uri=str(path), size_bytes=path.stat().st_size, etag="e")
    rows = list(DecodeStage(tiny_config, isolated=False)(ref_batch(ref)))  # waveforms of two lengths
    out = {k: np.concatenate([r[k] for r in rows]) for k in ("status", "has_waveform", "audio_error")}
    assert list(out["status"]) == ["ok", "ok"] and list(out["has_waveform"]) == [True, False]
    assert list(out["audio_error"]) == ["", "audio decode failed: ValueError: Invalid data found when processing input"]

    def unreadable_track(*args, **kwargs):
        raise OSError("no decoder for codec")

    monkeypatch.setattr(audio, "PyAVAudio", unreadable_track)
    out = decode(DecodeStage(tiny_config, isolated=False), path)
    assert list(out["status"]) == ["ok", "ok"] and out["has_frames"].all() and not out["has_waveform"].any()
    assert set(out["audio_error"]) == {"audio track unreadable: OSError: no decoder for codec"}
    out = decode(DecodeStage(tiny_config, isolated=False), write_video(tmp_path / "mute.mp4", seconds=3.0, audio=False))
    assert list(out["audio_error"]) == [""]


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(50_000)), "invalid data found"),
])
def test_unreadable_files_fail_with_reason(stage, tmp_path, make, reason):
    path = tmp_path / "bad.mp4"
    make(path)
    out = decode(stage, path)
    assert list(out["clip_index"]) == [-1] and list(out["status"]) == ["error"]
    assert out["error_stage"][0] == "decode" and reason in out["error"][0]
    assert out["frames"].shape == (1, 0, 64, 64, 3) and out["waveform"].shape == (1, 0)  # error rows: no tensors


def test_truncated_mp4(stage, tmp_path):
    good = write_video(tmp_path / "full.mp4", seconds=4.0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = decode(stage, cut)
    assert out["status"][0] == "error" and out["error"][0] == "truncated file: moov atom not found"


def test_audio_only_file_has_no_video_stream(stage, tmp_path):
    out = decode(stage, write_video(tmp_path / "voice.mp4", seconds=2.0, video=False))
    assert out["status"][0] == "error" and out["error"][0] == "no video stream"


def test_pixel_limit(tiny_config, tmp_path):
    cfg = tiny_config.model_copy(update={"decode": tiny_config.decode.model_copy(update={"max_pixels": 1000})})
    s = DecodeStage(cfg)
    out = decode(s, write_video(tmp_path / "big.mp4", seconds=1.0, width=96, height=64))
    assert out["error"][0] == "96x64 exceeds max_pixels 1000"


def test_text_only_config_decodes_no_frames_and_no_audio(tiny_config, tmp_path, monkeypatch):
    from mmbatch.config import ModelsConfig
    from mmbatch.decode import decoder as decode_stage

    cfg = tiny_config.model_copy(update={"models": ModelsConfig(text=tiny_config.models.text)})

    def no_frames(*args, **kwargs):
        raise AssertionError("a text-only config opened a frame decoder")

    monkeypatch.setattr(decode_stage, "open_video", no_frames)
    monkeypatch.setattr(decode_stage.audio_reader, "PyAVAudio", no_frames)
    s = DecodeStage(cfg)
    out = decode(s, write_video(tmp_path / "talk.mp4", seconds=7.0))
    assert list(out["status"]) == ["ok", "ok"] and list(out["clip_index"]) == [0, 1]
    assert not {"frames", "n_frames", "has_frames", "waveform", "audio_len", "has_waveform", "audio_error"} & set(out)


@pytest.mark.parametrize("fmt,layout", [("fltp", "mono"), ("flt", "mono"), ("fltp", "stereo"), ("flt", "stereo")])
def test_float_frames_read_straight_give_libswresamples_samples(fmt, layout):
    """The audio fast path (no conversion pass) yields bit for bit what libswresample's float mono
    downmix yields, stereo included (√½·L + √½·R)."""
    import av

    from mmbatch.decode.audio import channel_planes, downmix

    rng = np.random.default_rng(0)
    channels = 1 if layout == "mono" else 2
    data = rng.uniform(-1, 1, (channels, 1024)).astype(np.float32)
    arr = data if fmt == "fltp" else data.T.reshape(1, -1).copy()
    frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
    frame.sample_rate = 22050
    resampled = av.AudioResampler(format="flt", layout="mono", rate=22050).resample(frame)
    expected = np.concatenate([o.to_ndarray().reshape(-1) for o in resampled])
    got = downmix(channel_planes(frame))
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    into = np.full(1024, np.nan, dtype=np.float32)  # as the reader mixes: into its buffer
    assert downmix(channel_planes(frame), out=into) is into and np.array_equal(into, expected)


@pytest.mark.parametrize("fmt,layout", [("s16", "mono"), ("s16p", "stereo"), ("fltp", "5.1")])
def test_other_audio_frames_go_through_libswresample(fmt, layout):
    import av

    from mmbatch.decode.audio import channel_planes

    frame = av.AudioFrame(format=fmt, layout=layout, samples=256)
    assert channel_planes(frame) is None


def test_a_decode_child_that_dies_starting_is_named_not_an_eoferror():
    from mmbatch.decode.watchdog import IsolatedDecoder

    watchdog = IsolatedDecoder(int, ("not a stage",), timeout_s=5)  # the child's factory raises ValueError
    with pytest.raises(RuntimeError, match=r"exited during start-up \(exit code 1\)"):
        next(watchdog.events_each([{"uri": "x"}]))
    assert watchdog._proc is None
    watchdog.kill()  # nothing left to kill: a no-op


def test_snapped_windows_end_in_the_pauses_of_the_audio(tiny_config, tmp_path):
    cfg = type(tiny_config).model_validate({**tiny_config.model_dump(), "clips": {
        **tiny_config.clips.model_dump(), "snap_to_pause_s": 1.5}})  # window 5 s: boundaries at 5 and 10
    snapping = DecodeStage(cfg)
    snapping.setup()
    rate = 16000
    loud = (0.3 * np.sin(2 * np.pi * 440 * np.arange(15 * rate) / rate)).astype(np.float32)
    speech = [(0.0, loud[: int(3.6 * rate)]), (4.4, loud[: int(6.6 * rate)]), (11.8, loud[: int(3.2 * rate)])]
    out = decode(snapping, write_video(tmp_path / "pauses.mp4", seconds=15.0, sample_rate=rate, speech=speech))
    first, second = out["end_s"][:2]
    assert 3.7 <= first <= 4.3 and 11.1 <= second <= 11.7  # inside the pauses at 3.6-4.4 s and 11.0-11.8 s
    np.testing.assert_allclose(out["start_s"], [0.0, first, second])
    np.testing.assert_allclose(out["end_s"], [first, second, 15.0], atol=0.05)
    assert list(out["audio_len"]) == [round(first * rate), round((second - first) * rate), round((15 - second) * rate)]
    assert out["waveform"].shape[1] == 8 * rate  # the window and what snapping may add at both ends

    steady = decode(snapping, write_video(tmp_path / "tone.mp4", seconds=12.0))  # no pause: the grid stays
    np.testing.assert_allclose(steady["start_s"], [0, 5, 10])

    # Split into chunks (clips 0-1, then 2), each chunk keeps its edges: 10 s stays where both plan it.
    path = tmp_path / "pauses.mp4"
    ref = VideoRef(video_id="v", uri=str(path), size_bytes=path.stat().st_size, etag="e")
    chunks = [{**ref_batch(ref), "chunk_first": np.array([a]), "chunk_last": np.array([b]), "chunk_index": np.array([i]),
               "n_chunks": np.array([2]), "plan_duration_s": np.array([15.0])} for i, (a, b) in enumerate([(0, 2), (2, 3)])]
    rows = [r for c in chunks for r in snapping(c)]
    assert [(float(r["start_s"][0]), float(r["end_s"][0])) for r in rows] == [(0.0, first), (first, 10.0), (10.0, 15.0)]


def test_keyframes_only_takes_each_clip_s_keyframes_nearest_its_frame_times(tiny_config, tmp_path):
    """clips.keyframes_only: a clip's frames are the keyframes inside it nearest its frame times,
    each once (n_frames says how many), the same pixels an exact decode gives at those times."""
    from mmbatch.decode.backend import probe
    from mmbatch.decode.video import open_video

    cfg = type(tiny_config).model_validate({**tiny_config.model_dump(), "clips": {
        **tiny_config.clips.model_dump(), "keyframes_only": True}})  # 5 s windows, 4 frames
    keyed = DecodeStage(cfg)
    keyed.setup()
    path = write_video(tmp_path / "v.mp4", seconds=12.0, fps=10, width=96, height=64)  # a keyframe a second
    exact = open_video("pyav", str(path), probe(str(path)), 64)
    np.testing.assert_allclose(exact.key_starts, np.arange(12.0))
    np.testing.assert_allclose(open_video("decord", str(path), probe(str(path)), 64).key_starts, np.arange(12.0),
                               atol=1e-6)  # both readers find the same keyframes
    out = decode(keyed, path)
    # Frame times 0.625, 1.875, 3.125, 4.375 → keyframes 1, 2, 3, 4; in the 2 s tail 10.25 ... 11.75 → 10, 11.
    assert list(out["n_frames"]) == [4, 4, 2]
    np.testing.assert_array_equal(out["frames"][0], exact.frames_at(np.array([1.0, 2.0, 3.0, 4.0])))
    np.testing.assert_array_equal(out["frames"][2, :2], exact.frames_at(np.array([10.0, 11.0])))
    assert not out["frames"][2, 2:].any()


def test_audio_is_read_forward_once_and_placed_by_its_timestamps(tmp_path):
    """Clips in order decode the track once (no seek after the first); a read before what is
    kept seeks back; every read gives the samples a whole-file decode gives at those times."""
    import av

    from mmbatch.decode.audio import PyAVAudio, channel_planes, downmix, resampler

    path = str(write_video(tmp_path / "v.mp4", seconds=6.0, sample_rate=16000, tone_hz=330.0))
    with av.open(path) as c:  # the reference: the whole track, decoded in one pass
        stream = c.streams.audio[0]
        first = next(c.decode(stream))
        t0 = int(round(first.pts * stream.time_base * 16000))
        whole = np.concatenate([downmix(channel_planes(f)) for f in (first, *c.decode(stream))])
    audio = PyAVAudio(path, 16000)
    assert audio.rate == 16000 and t0 == 0
    seeks = []
    real_seek = audio._seek
    audio._seek = lambda start_s, first: (seeks.append(start_s), real_seek(start_s, first))[1]
    for start, end in [(0.0, 2.0), (2.0, 4.0), (3.5, 5.0), (5.0, 9.0)]:  # overlapping, then past the end
        got = audio.read(start, end)
        np.testing.assert_array_equal(got, whole[int(start * 16000): int(end * 16000)])
    assert len(seeks) == 1
    np.testing.assert_array_equal(audio.read(1.0, 2.0), whole[16000:32000])  # behind what is kept: a seek
    assert len(seeks) == 2
    audio.close()

    gapped = PyAVAudio(path, 8000)  # frames placed by time: a hole in the timestamps is silence
    gapped._start = gapped._end = 0
    gapped._place(0, (np.ones(100, np.float32),))
    gapped._place(150, (np.full(50, 2.0, np.float32), np.full(50, 2.0, np.float32)))
    np.testing.assert_allclose(gapped._buf[:200], np.r_[np.ones(100), np.zeros(50), np.full(50, 4 * np.sqrt(0.5))],
                               rtol=1e-6)
    gapped._place(10 + int(PyAVAudio.MAX_GAP_S * 16000) + 200, (np.ones(10, np.float32),))  # a jump: restarts
    assert gapped._end - gapped._start == 10
    assert resampler(16000, 8000) is resampler(16000, 8000)
    gapped.close()


def test_each_reader_demuxes_only_its_own_stream(tmp_path):
    """The audio reader has the demuxer skip the video's packets (most of a file's bytes) and the
    frame reader the audio's; what each returns is what a whole decode gives (the tests above)."""
    from av.stream import Discard

    from mmbatch.decode.audio import PyAVAudio
    from mmbatch.decode.backend import probe
    from mmbatch.decode.video import PyAVVideo

    path = str(write_video(tmp_path / "v.mp4", seconds=2.0))
    audio, video = PyAVAudio(path, 16000), PyAVVideo(path, probe(path), 32)
    try:
        for reader, other in ((audio, audio._container.streams.video[0]), (video, video._container.streams.audio[0])):
            assert (reader._stream.discard, other.discard) == (Discard.default, Discard.all)
        assert len(audio.read(0.0, 1.0)) == 16000 and video.frames([0, 1]).shape == (2, 32, 32, 3)
    finally:
        audio.close()
        video.close()


def test_a_video_is_opened_twice_and_probed_without_decoding(tiny_config, tmp_path, monkeypatch):
    """The probe's container becomes the audio reader's and the frame reader opens its own: two
    opens a file, none left open; the probe decodes no frame (PyAV's reader turns each frame by its
    own display matrix). The rows are those of readers that open their own containers."""
    import os

    import av

    from mmbatch.decode import backend, decoder

    path = write_video(tmp_path / "v.mp4", seconds=7.0)
    stage = DecodeStage(tiny_config, isolated=False)
    monkeypatch.setattr(decoder.VideoDecoder, "_probe", lambda self, p: (backend.probe(p), None))
    reference = decode(stage, path)  # the probe's container closed: the audio reader opens its own
    monkeypatch.undo()
    opened, decoded = [], []
    real_open, real_rotation = av.open, backend.first_frame_rotation
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    monkeypatch.setattr(backend, "first_frame_rotation", lambda *a: decoded.append(a) or real_rotation(*a))
    out = decode(stage, path)
    assert opened == [str(path)] * 2 and not decoded
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    assert str(path) not in fds
    for key in ("frames", "waveform", "audio_len", "status", "start_s"):
        np.testing.assert_array_equal(out[key], reference[key])


def test_the_probe_decodes_a_frame_for_the_rotation_only_for_readers_that_need_it(tiny_config, tmp_path):
    """PyAV's reader, on the CPU or NVDEC, turns each frame by its own display matrix: its probe
    decodes nothing and its container goes on to the audio reader. decord and plugin readers get
    the rotation from the probe, which then decodes a frame and closes its container."""
    from mmbatch.decode.decoder import VideoDecoder

    path = str(write_video(tmp_path / "v.mp4", seconds=2.0))
    dec = VideoDecoder(tiny_config)
    dec.setup()
    for name, from_frames in (("pyav", True), ("pyav-cuda", True), ("decord", False), ("plugin.module:Reader", False)):
        dec.backend = name
        info, container = dec._probe(path)
        assert (info.rotation is None, container is not None) == (from_frames, from_frames), name
        if container is not None:
            container.close()


def test_contiguous_frames_are_mixed_a_run_at_a_time_and_a_gap_or_new_layout_starts_another():
    from mmbatch.decode.audio import _Run

    run = _Run(rate=100)
    one, two = (np.ones(40, np.float32),), (np.ones(40, np.float32), np.zeros(40, np.float32))
    assert not run.takes(0, two)  # nothing begun
    run.begin(0, 2)
    run.add(two)
    assert run.takes(40, two) and not run.takes(41, two)  # a gap in the timestamps
    assert not run.takes(40, one)  # mono after stereo
    run.add(two)
    assert not run.takes(80, two)  # 120 samples would not fit a second's run
    left, right = run.channels()
    assert run.start == 0 and len(left) == 80 and left.sum() == 80 and right.sum() == 0


def test_a_slot_of_the_ring_holds_a_row_until_taken_and_a_waiting_child_outlives_no_parent():
    """The child's side puts a row's large arrays in a free slot and sends where they lie; the
    parent's side copies them out and says the slot is empty. A child waiting for a slot whose
    parent is gone (its end of the pipe closed, as a killed process's is) exits, not waits forever."""
    import multiprocessing as mp

    from mmbatch.decode import watchdog

    ring = watchdog.Ring(mp.get_context("spawn"), slot_bytes=1 << 18, slots=1)
    child = watchdog.Ring.__new__(watchdog.Ring)
    child.__setstate__(ring.__getstate__())  # as the spawned child attaches it
    try:
        row = {"frames": np.arange(200_000, dtype=np.uint8).reshape(1, -1), "clip_index": np.array([3])}
        sent = child.put(row)
        assert isinstance(sent["frames"], watchdog.InSlot) and sent["clip_index"] is row["clip_index"]
        assert child.put({"clip_index": np.array([4])})["clip_index"][0] == 4  # small: rides the pipe
        np.testing.assert_array_equal(ring.take(sent)["frames"], row["frames"])
        again = child.put({**row, "frames": row["frames"][:, ::-1].copy()})  # the slot was emptied: reused
        assert again["frames"].slot == 0
        np.testing.assert_array_equal(ring.take(again)["frames"], row["frames"][:, ::-1])
        child.put(row)  # the only slot taken again
        ring._say_emptied.close()  # the parent is gone
        with pytest.raises(SystemExit):
            child.put(row)
    finally:
        child.shm.close()
        ring.close()


def test_no_ring_where_dev_shm_has_no_room_for_it(monkeypatch):
    """A container's small /dev/shm (64 MB is common) gets no ring: a write past it would be a SIGBUS."""
    from types import SimpleNamespace

    from mmbatch.decode import watchdog

    monkeypatch.setattr(watchdog.os, "statvfs", lambda path: SimpleNamespace(f_bavail=64 * 256, f_frsize=4096))
    assert watchdog.ring_fits(8 * 2**20) and not watchdog.ring_fits(20 * 2**20)
    assert not watchdog.ring_fits(watchdog.RING_MAX_BYTES + 1)

    def no_shm(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(watchdog.os, "statvfs", no_shm)
    assert not watchdog.ring_fits(1024)
