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
