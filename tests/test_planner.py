import numpy as np
import pytest

from mmbatch.decode.planner import ClipSpan, clip_id, frame_indices, plan_fixed_windows, sample_times


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
