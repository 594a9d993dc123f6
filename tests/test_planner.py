import numpy as np
import pytest

from mmbatch.decode.planner import (
    ClipSpan,
    clip_id,
    frame_indices,
    keyframe_times,
    plan_fixed_windows,
    quietest_time,
    sample_times,
    snap_to_pauses,
)


def spans(*args):
    return [(c.start_s, c.end_s) for c in plan_fixed_windows(*args)]


def test_last_partial_clip_kept_when_long_enough():
    assert spans(12.0, 5.0, 5.0, 1.0) == [(0, 5), (5, 10), (10, 12)]


def test_last_partial_clip_dropped_below_minimum():
    assert spans(10.5, 5.0, 5.0, 1.0) == [(0, 5), (5, 10)]


def test_exact_multiple_has_no_empty_tail():
    assert spans(10.0, 5.0, 5.0, 1.0) == [(0, 5), (5, 10)]


def test_overlapping_windows_stop_at_the_end():
    assert spans(25.0, 10.0, 5.0, 1.0) == [(0, 10), (5, 15), (10, 20), (15, 25)]


def test_gaps_when_stride_exceeds_window():
    assert spans(10.0, 2.0, 4.0, 1.0) == [(0, 2), (4, 6), (8, 10)]


def test_short_video_is_one_clip_and_empty_is_none():
    assert spans(0.3, 10.0, 10.0, 1.0) == [(0, 0.3)]
    assert spans(0.0, 10.0, 10.0, 1.0) == []


def test_indices_are_sequential():
    assert [c.index for c in plan_fixed_windows(30, 10, 10, 1)] == [0, 1, 2]


def test_clip_id_is_deterministic_uuid5():
    a = clip_id("v/1", 0.0, 10.0)
    assert a == clip_id("v/1", 0.0, 10.0) and a != clip_id("v/1", 10.0, 20.0)
    assert a[14] == "5"  # uuid version 5


def test_sample_times_are_slice_centres():
    np.testing.assert_allclose(sample_times(ClipSpan(0, 10.0, 14.0), 4), [10.5, 11.5, 12.5, 13.5])


def test_keyframe_times_are_the_clip_s_keyframes_nearest_its_frame_times():
    keys = np.arange(30.0)  # a keyframe a second
    times = sample_times(ClipSpan(0, 0.0, 10.0), 8)  # 0.625 ... 9.375
    np.testing.assert_array_equal(keyframe_times(times, keys, 0.0, 10.0), [1, 2, 3, 4, 6, 7, 8, 9])
    # Each keyframe once; a tie goes to the earlier one; keys outside the clip are not taken.
    np.testing.assert_array_equal(keyframe_times(np.array([10.5, 10.6, 11.9]), keys, 10.0, 12.0), [10, 11])
    np.testing.assert_array_equal(keyframe_times(np.array([4.5]), np.array([4.0, 5.0]), 4.0, 6.0), [4.0])
    # No keyframe inside the clip: its own frame times.
    np.testing.assert_array_equal(keyframe_times(times, np.array([0.0, 20.0]), 2.0, 10.0), times)


def test_frame_indices_follow_presentation_times():
    # Variable frame rate: 10 fps for 1 s, then 2 fps.
    starts = np.concatenate([np.arange(10) * 0.1, 1.0 + np.arange(4) * 0.5])
    np.testing.assert_array_equal(frame_indices(starts, np.array([0.05, 0.95, 1.2, 2.6, 9.0])), [0, 9, 10, 13, 13])


@pytest.mark.parametrize("duration", [1.0, 9.99, 10.0, 10.01, 59.5])
def test_clips_cover_video_without_overlap(duration):
    cs = plan_fixed_windows(duration, 10.0, 10.0, 0.0)
    assert cs[0].start_s == 0 and cs[-1].end_s == pytest.approx(duration)
    assert all(a.end_s == b.start_s for a, b in zip(cs, cs[1:]))


def test_segments_are_clamped_sorted_and_reindexed():
    from mmbatch.decode.planner import parse_segments, plan_segments

    segs = parse_segments('{"segments": [{"start_s": 8, "end_s": 14}, [1, 2.5], [12, 12], [-1, 0.5]]}')
    assert [(c.index, c.start_s, c.end_s) for c in plan_segments(10.0, segs)] == [
        (0, 0.0, 0.5), (1, 1.0, 2.5), (2, 8.0, 10.0)]


def test_policies_whole_and_segments_fallback():
    from mmbatch.config import ClipConfig
    from mmbatch.decode.planner import plan_clips

    assert [(c.start_s, c.end_s) for c in plan_clips(7.5, ClipConfig(policy="whole"))] == [(0.0, 7.5)]
    seg = ClipConfig(policy="segments", window_s=5, stride_s=5)
    assert [(c.start_s, c.end_s) for c in plan_clips(7.5, seg, [(2.0, 3.0)])] == [(2.0, 3.0)]
    assert [(c.start_s, c.end_s) for c in plan_clips(7.5, seg, None)] == [(0, 5), (5, 7.5)]  # no segments: windows


def test_target_fps_with_cap():
    from mmbatch.config import ClipConfig
    from mmbatch.decode.planner import frames_for

    clips = ClipConfig(frames_per_clip=8, target_fps=2.0)
    assert [frames_for(ClipSpan(0, 0, d), clips) for d in (0.2, 1.0, 3.0, 10.0)] == [1, 2, 6, 8]


def _noise_with_gap(seconds: float, gap: tuple[float, float], rate: int = 1000) -> np.ndarray:
    loud = np.random.default_rng(0).normal(0, 0.3, int(seconds * rate)).astype(np.float32)
    loud[int(gap[0] * rate): int(gap[1] * rate)] = 0.0
    return loud


def test_quietest_time_is_the_pause_nearest_the_boundary():
    samples = _noise_with_gap(10.0, (4.6, 5.0))
    # Quiet 200 ms spans are centred 4.7-4.9 s; of those, the nearest to the grid's 5.0 s.
    assert quietest_time(samples, 1000, 0.0, 5.0, 3.0, 7.0) == 4.9
    assert quietest_time(samples, 1000, 2.0, 5.0, 3.0, 7.0) == 6.7  # samples from 2 s: the pause is at 6.6-7.0 s
    # A pause outside the allowed range does not count: the moment chosen stays inside it.
    assert 5.5 <= quietest_time(samples, 1000, 0.0, 5.0, 5.5, 7.0) <= 7.0


def test_a_long_pause_wins_over_a_nearer_short_one():
    samples = _noise_with_gap(10.0, (4.6, 4.9))  # a comma's pause next to the boundary...
    samples[int(6.0 * 1000): int(6.8 * 1000)] = 0.0  # ... and a sentence's pause further off
    assert quietest_time(samples, 1000, 0.0, 5.0, 3.0, 7.0) == 6.1  # its quiet centres: 6.1-6.7 s
    assert quietest_time(samples, 1000, 0.0, 5.0, 3.0, 6.15) == 4.8  # the range cuts it shorter than the other


def test_steady_sound_or_no_audio_leaves_the_boundary_on_the_grid():
    tone = (0.3 * np.sin(2 * np.pi * 50 * np.arange(10_000) / 1000)).astype(np.float32)
    assert quietest_time(tone, 1000, 0.0, 5.0, 3.0, 7.0) == 5.0
    assert quietest_time(np.zeros(10_000, np.float32), 1000, 0.0, 5.0, 3.0, 7.0) == 5.0
    assert quietest_time(np.zeros(0, np.float32), 1000, 0.0, 5.0, 3.0, 7.0) == 5.0


def test_snapping_keeps_the_ends_the_order_and_the_minimum_length():
    spans = plan_fixed_windows(21.0, 10.0, 10.0, 1.0)  # [0, 10], [10, 20], [20, 21]
    early = snap_to_pauses(spans, lambda t, lo, hi: lo, 3.0, 1.0)
    assert [(s.start_s, s.end_s) for s in early] == [(0.0, 7.0), (7.0, 17.0), (17.0, 21.0)]
    late = snap_to_pauses(spans, lambda t, lo, hi: hi, 3.0, 1.0)
    assert [(s.start_s, s.end_s) for s in late] == [(0.0, 13.0), (13.0, 20.0), (20.0, 21.0)]  # tail kept >= 1 s
    assert [s.index for s in late] == [0, 1, 2]


def test_snapping_overlapping_windows_moves_each_boundary_once():
    spans = plan_fixed_windows(20.0, 10.0, 5.0, 1.0)  # [0, 10], [5, 15], [10, 20]
    moved = snap_to_pauses(spans, lambda t, lo, hi: t - 0.5, 2.0, 1.0)
    assert [(s.start_s, s.end_s) for s in moved] == [(0.0, 9.5), (4.5, 14.5), (9.5, 20.0)]
