import pytest

from mmbatch.errors import InputError
from mmbatch.inputs.sources import discover


def test_discovers_nested_case_insensitive_unicode(sample_videos):
    refs = discover(str(sample_videos))
    assert [r.video_id for r in refs] == ["a/long one", "b/médio", "short"]
    assert all(r.size_bytes > 0 and r.etag for r in refs)


def test_sidecar_transcripts_attach_by_stem(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"00")
    (tmp_path / "x.vtt").write_text("WEBVTT\n")
    (tmp_path / "x.txt").write_text("plain")
    (tmp_path / "y.webm").write_bytes(b"00")
    (tmp_path / "notes.txt").write_text("not a sidecar")
    refs = {r.video_id: r for r in discover(str(tmp_path))}
    assert refs["x"].sidecars == {"transcript": str(tmp_path / "x.vtt")}  # timed cues win over .txt
    assert refs["y"].sidecars == {}


def test_single_file_and_glob(sample_videos):
    one = discover(str(sample_videos / "short.mkv"))
    assert [(r.video_id, r.uri) for r in one] == [("short", str(sample_videos / "short.mkv"))]
    globbed = discover(str(sample_videos / "*" / "*.mp4"))
    assert [r.video_id for r in globbed] == ["a/long one"]  # glob is case-sensitive, as fsspec's


def test_memory_filesystem():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/in/clip1.mov", b"123")
    refs = discover("memory://bucket/in/")
    assert [(r.video_id, r.uri, r.size_bytes) for r in refs] == [("clip1", "memory:///bucket/in/clip1.mov", 3)]


def test_errors_name_the_uri(tmp_path):
    with pytest.raises(InputError, match=f"input not found: {tmp_path}/missing"):
        discover(str(tmp_path / "missing"))
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(InputError, match=f"no videos found under {tmp_path}"):
        discover(str(tmp_path))
    with pytest.raises(InputError, match="unsupported URI scheme in 'nosuchproto://x'"):
        discover("nosuchproto://x")


def test_manifest_segments_group_by_uri(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"00")
    (tmp_path / "m.csv").write_text("uri,start_s,end_s\na.mp4,5,9\na.mp4,0,2\n")
    refs = discover(str(tmp_path / "m.csv"))
    assert len(refs) == 1 and refs[0].as_row()["segments"] == "[[0.0, 2.0], [5.0, 9.0]]"
    (tmp_path / "bad.csv").write_text("uri,start_s,end_s\na.mp4,5,1\n")
    with pytest.raises(InputError, match="invalid segment"):
        discover(str(tmp_path / "bad.csv"))


def test_every_entry_with_an_input_name_is_accounted_for(tmp_path):
    """A FIFO, a dangling or looping link and a name that is not UTF-8 are refused rows with their
    reason (never left out, never a failed night); a folder whose name holds [ or ? is a folder."""
    import os

    src = tmp_path / "in [x] why?"
    src.mkdir()
    (src / "ok.mp4").write_bytes(b"x")
    os.mkfifo(src / "pipe.mp4")
    os.symlink(src / "nowhere.mp4", src / "dangling.mp4")
    os.symlink(src / "loop.mp4", src / "loop.mp4")
    (src / "notes.txt").write_text("a transcript of nothing")
    with open(os.fsencode(src) + b"/bad\xff name.mp4", "wb") as fh:
        fh.write(b"y")
    refs = {r.video_id: r for r in discover(str(src))}
    assert sorted(refs) == ["bad\\xff name", "dangling", "loop", "ok", "pipe"]
    assert refs["ok"].error == ""
    assert refs["pipe"].error == "not a regular file (a FIFO, socket or device); nothing was read"
    assert refs["dangling"].error == refs["loop"].error == (
        "a symbolic link that leads nowhere (broken, or a loop); nothing was read")
    bad = refs["bad\\xff name"]
    assert bad.error == "its name is not valid UTF-8 (bad\\xff name.mp4); rename the file to score it"
    assert bad.uri.encode("utf-8") and bad.as_row()["video_id"].encode("utf-8")  # travels as UTF-8
