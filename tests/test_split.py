"""Long videos split into chunks of clips decode as separate tasks, with the ids of one piece."""

import datetime as dt

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ref_batch

from mmbatch.config import parse_config
from mmbatch.decode.split import SplitStage, header_duration
from mmbatch.decode.stage import DecodeStage
from mmbatch.inputs.sources import VideoRef
from mmbatch.pipeline.run import run_pipeline
from mmbatch.schema import partitioning
from mmbatch.synth import write_video


def cfg(split, floor_kbps=None):
    """Every header read unless `floor_kbps` (these small test videos are under any real bitrate)."""
    return parse_config({"clips": {"window_s": 2.0, "stride_s": 2.0, "frames_per_clip": 2},
                         "decode": {"image_size": 32, "split_clips": split, "split_floor_kbps": floor_kbps},
                         "models": {"vision": {"task": "image_zero_shot", "source": "x"}}})  # frames decoded


def unread(row: dict, config) -> bool:
    return SplitStage.passes_unread(row, config) is not None


def test_which_inputs_pass_the_split_unread():
    """A file passes unread when at the floor bitrate it could not hold more than a chunk: at 8
    kbit/s (1,000 bytes a second) 8,999 bytes are under 9 s, four clips of 2 s and a tail too
    short for a clip (min_clip_s 1); 9,000 bytes could make a fifth, so its header is read. Tar
    members (no cheap header), `segments` and `whole` always pass; HLS playlists, files of unknown
    size and a floor of null are always read."""
    row = {"video_id": "v", "uri": "/v.mp4", "kind": "file", "size_bytes": 8_999}
    c = cfg(4, floor_kbps=8)
    assert unread(row, c) and not unread({**row, "size_bytes": 9_000}, c)
    assert SplitStage.passes_unread(row, c) == {**row, "chunk_first": -1, "chunk_last": -1, "plan_duration_s": 0.0,
                                                "chunk_index": 0, "n_chunks": 1}
    huge = {**row, "size_bytes": 10**13}  # 10 TB: planned only as far as a chunk's worth
    assert not unread(huge, c) and unread({**huge, "kind": "tar"}, c)
    assert not unread({**row, "kind": "hls"}, c) and not unread({**row, "size_bytes": 0}, c)
    assert not unread(row, cfg(4)) and unread(huge, cfg(None))
    for policy in ("segments", "whole"):
        assert unread(huge, c.model_copy(update={"clips": c.clips.model_copy(update={"policy": policy})}))


def test_a_small_file_passes_without_its_header_read(tmp_path, monkeypatch):
    """The floor's trade: a 21 s video at ~90 kbit/s, taken to be at least 256 kbit/s, could hold
    7 s at most, so it is not split (nor read here) and decodes in one piece, its 11 clips the same."""
    from mmbatch.decode import split

    path = write_video(tmp_path / "long.mp4", seconds=21.0)
    ref = VideoRef("long", str(path), path.stat().st_size, "e")
    assert path.stat().st_size * 8 / 256_000 < 9.0
    monkeypatch.setattr(split, "header_duration", lambda *a: pytest.fail("header read"))
    rows = list(SplitStage(cfg(4, floor_kbps=256))(ref_batch(ref)))
    assert [(int(r["chunk_first"][0]), int(r["n_chunks"][0])) for r in rows] == [(-1, 1)]


def test_split_stage_emits_chunks(tmp_path):
    path = write_video(tmp_path / "long.mp4", seconds=21.0)
    ref = VideoRef("long", str(path), path.stat().st_size, "e")
    chunks = list(SplitStage(cfg(4))(ref_batch(ref)))
    assert [(int(c["chunk_first"][0]), int(c["chunk_last"][0]), int(c["chunk_index"][0]), int(c["n_chunks"][0]))
            for c in chunks] == [(0, 4, 0, 3), (4, 8, 1, 3), (8, 11, 2, 3)]
    assert header_duration(str(path), "file", None) == chunks[0]["plan_duration_s"][0]
    short = list(SplitStage(cfg(20))(ref_batch(ref)))
    assert len(short) == 1 and short[0]["chunk_first"][0] == -1


def test_chunks_decode_to_the_same_clips_as_one_piece(tmp_path):
    path = write_video(tmp_path / "long.mp4", seconds=21.0)
    ref = VideoRef("long", str(path), path.stat().st_size, "e")
    whole = [r for r in DecodeStage(cfg(None), isolated=False)(ref_batch(ref))]
    pieces = []
    stage = DecodeStage(cfg(4), isolated=False)
    for chunk in SplitStage(cfg(4))(ref_batch(ref)):
        pieces.extend(stage(chunk))
    ids = lambda rows: [(int(r["clip_index"][0]), str(r["clip_id"][0])) for r in rows]  # noqa: E731
    assert ids(pieces) == ids(whole) and len(whole) == 11
    np.testing.assert_array_equal(np.concatenate([r["frames"] for r in pieces]),
                                  np.concatenate([r["frames"] for r in whole]))
    assert [int(r["n_rows"][0]) for r in pieces] == [4] * 8 + [3] * 3


def test_split_video_end_to_end(ray_cluster, tiny_config, tmp_path):
    src = tmp_path / "in"
    write_video(src / "stream.mp4", seconds=31.0)
    write_video(src / "short.mp4", seconds=4.0)
    split = tiny_config.model_copy(update={"decode": tiny_config.decode.model_copy(update={"split_clips": 2})})
    whole = tiny_config.model_copy(update={"decode": tiny_config.decode.model_copy(update={"split_clips": None})})
    day = dt.date(2026, 11, 27)
    a = run_pipeline(split, str(src), str(tmp_path / "split"), day)
    b = run_pipeline(whole, str(src), str(tmp_path / "whole"), day)
    read = lambda root: pq.read_table(root / "clips", partitioning=partitioning()).to_pandas()  # noqa: E731
    ca, cb = read(tmp_path / "split"), read(tmp_path / "whole")
    key = ["video_id", "clip_index", "clip_id", "start_s", "end_s"]
    assert ca.sort_values(key)[key].values.tolist() == cb.sort_values(key)[key].values.tolist()
    assert (a.scored, a.clips) == (2, 8) and (b.scored, b.clips) == (2, 8)
    videos = pq.read_table(tmp_path / "split" / "videos", partitioning=partitioning()).to_pandas()
    assert videos.set_index("video_id")["n_clips"].to_dict() == {"stream": 7, "short": 1}
    # At the default floor (64 kbit/s) the short video could not hold a chunk: it went around the
    # split stage, whose tasks read only the stream (its 4 chunks out; 5 rows had the short one come).
    stages = {s["operator"]: s for s in a.manifest["timings"]["stages"]}
    assert [s["rows_out"] for name, s in stages.items() if name.startswith("MapBatches(split)")] == [4]


def test_a_long_video_s_chunks_reach_different_decode_actors(ray_cluster, tmp_path):
    """Ray Data gathers a split task's rows into one block and never slices a block for the next
    operator, so without one block a chunk every chunk of a video went to one decode actor. Two
    actors that take 0.5 s a chunk: the 8 chunks of one video land on both, the split stage's
    one-block-a-row fused into its own tasks (no operator more). (8 chunks, not 4: on a busy machine
    the second actor may start after the first holds 4 in flight.)"""
    import os
    import time

    import ray

    from mmbatch.config import PoolConfig
    from mmbatch.pipeline.adapter import apply_stage
    from mmbatch.stage import StageSpec

    class Recorder:  # stands in for decode: which process took which chunk
        name, reads, may_read, writes = "decode", ("chunk_index",), (), ("pid",)

        def setup(self):
            pass

        def __call__(self, batch):
            time.sleep(0.5)
            yield {"chunk_index": batch["chunk_index"], "pid": np.full(len(batch["chunk_index"]), os.getpid())}

    path = write_video(tmp_path / "long.mp4", seconds=31.0)  # 15 clips of 2 s, chunks of 2
    ref = VideoRef("long", str(path), path.stat().st_size, "e").as_row()
    ds = ray.data.from_items([ref], override_num_blocks=1)
    ds = apply_stage(ds, StageSpec(SplitStage, (cfg(2),), compute="task",
                                   pool=PoolConfig(num_cpus=0.25, concurrency=(1, 1), batch_size=1)), None, "t")
    ds = apply_stage(ds, StageSpec(Recorder, pool=PoolConfig(num_cpus=0.5, concurrency=(2, 2), batch_size=1)), None, "t")
    rows = ds.take_all()
    assert sorted(int(r["chunk_index"]) for r in rows) == list(range(8))
    assert len({int(r["pid"]) for r in rows}) == 2
    assert "MapBatches(split)->StreamingRepartition" in ds.stats()
