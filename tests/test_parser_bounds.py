"""Every parser of untrusted input reads at most its cap, counted in bytes handed over by the
store (not wall time), and refuses more with its own typed error."""

from __future__ import annotations

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from mmbatch.errors import ConfigError, InputError


class CountingFS(MemoryFileSystem):
    """An in-memory store that counts the bytes its readers take."""

    read_bytes = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        CountingFS.read_bytes += len(data)
        return data

    def _open(self, path, mode="rb", **kwargs):
        fh = super()._open(path, mode, **kwargs)
        if "r" in mode:
            read = fh.read

            def counted(n=-1):
                data = read(n)
                CountingFS.read_bytes += len(data)
                return data

            fh.read = counted
        return fh


@pytest.fixture
def store():
    fs = CountingFS(skip_instance_cache=True)
    CountingFS.read_bytes = 0
    yield fs
    fs.store.clear()
    fs.pseudo_dirs.clear()


def test_a_huge_playlist_is_refused_after_its_cap(store):
    from mmbatch.inputs.containers import MAX_PLAYLIST_BYTES, read_playlist

    store.pipe_file("/in/cam.m3u8", b"#EXTM3U\n" + b"#EXTINF:1.0,\nseg.ts\n" * (MAX_PLAYLIST_BYTES // 10))
    with pytest.raises(InputError, match="HLS playlist larger than"):
        read_playlist(store, "/in/cam.m3u8")
    assert CountingFS.read_bytes <= MAX_PLAYLIST_BYTES + 1


def test_a_huge_manifest_is_refused_after_its_cap(store):
    from mmbatch.inputs.manifests import read_manifest

    store.pipe_file("/in/night.csv", b"uri\n" + b"a.mp4\n" * 200_000)
    with pytest.raises(InputError, match=r"larger than inputs.max_manifest_bytes \(100000\)"):
        read_manifest(store, "/in/night.csv", "memory:///in/night.csv", max_bytes=100_000)
    assert CountingFS.read_bytes <= 100_001


def test_a_huge_label_file_is_refused_after_its_cap(tmp_path, monkeypatch):
    from mmbatch.fusion import training

    path = tmp_path / "labels.csv"
    path.write_bytes(b"video_id,clip_id,label\n" + b"a,a-0,positive\n" * 10_000)
    monkeypatch.setattr(training, "MAX_LABELS_BYTES", 50_000)
    with pytest.raises(ValueError, match="larger than 50000 bytes"):
        training.read_labels(str(path))


def test_configs_are_capped_and_aliases_refused(tmp_path, monkeypatch):
    from mmbatch import config

    path = tmp_path / "bomb.yaml"
    # A billion laughs: nine levels of nine aliases would expand to 9^9 strings when dumped.
    levels = ["a0: &a0 [lol]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path.write_text("\n".join(levels) + "\nmodels: {text: {task: text_zero_shot, source: 'tiny:minilm'}}\n")
    with pytest.raises(ConfigError, match=r"line 2: YAML aliases \(\*a0\) are not supported"):
        config.load_config(path)
    monkeypatch.setattr(config, "MAX_CONFIG_BYTES", 100)
    path.write_text("models:\n" + "  # padding\n" * 20)
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        config.load_config(path)


@pytest.mark.timeout(60)  # linear: well under a second; a backtracking pattern took hours here
@pytest.mark.parametrize("text", ["a" * (1 << 20), "<" * (1 << 20), " \n" * (1 << 19), "x-->" + "-" * (1 << 20),
                                  ("00:00.000 --> 00:01.000 " + "a" * 1000 + "\n") * 1000],
                         ids=["one-long-token", "open-tags", "blank-lines", "arrow-and-dashes", "long-cue-lines"])
def test_sidecar_cues_of_adversarial_text_at_the_cap(text):
    from mmbatch.inputs.transcripts import parse_cues

    try:
        parse_cues(text)
    except ValueError:
        pass  # a malformed timestamp: the sidecar's typed failure (TranscriptCache turns it into SidecarError)
