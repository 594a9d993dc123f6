from mmbatch.inputs.transcripts import TranscriptCache, parse_cues, text_in_span

VTT = """WEBVTT

00:00:00.500 --> 00:00:04.000
I love <b>this</b>.

note
00:00:04.000 --> 00:00:11.000
It crosses the boundary.

00:01:00.000 --> 00:01:02.250
Late line.
"""
SRT = """1
00:00:01,000 --> 00:00:02,500
Hello there.

2
00:00:03,000 --> 00:00:04,000
Second
line.
"""


def test_vtt_cues_and_tags():
    cues = parse_cues(VTT)
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [
        (0.5, 4.0, "I love this."), (4.0, 11.0, "It crosses the boundary."), (60.0, 62.25, "Late line.")]


def test_srt_multiline():
    assert [(c.start_s, c.text) for c in parse_cues(SRT)] == [(1.0, "Hello there."), (3.0, "Second line.")]


def test_cue_crossing_a_boundary_reaches_both_clips():
    cues = parse_cues(VTT)
    assert text_in_span(cues, 0, 5) == "I love this. It crosses the boundary."
    assert text_in_span(cues, 5, 10) == "It crosses the boundary."
    assert text_in_span(cues, 20, 30) == ""


def test_cache_reads_txt_for_whole_video(tmp_path):
    (tmp_path / "a.txt").write_text("  whole video text \n")
    (tmp_path / "b.vtt").write_text(VTT)
    cache = TranscriptCache()
    assert cache.text_for(str(tmp_path / "a.txt"), 100, 110) == "whole video text"
    assert cache.text_for(str(tmp_path / "b.vtt"), 59, 61) == "Late line."
