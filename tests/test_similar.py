"""Clips like this one: the Lance index follows the committed nights (appended, replaced), finds a
planted near-duplicate first through IVF_PQ, and never mixes embeddings of other models."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nights import DAY, Night, clip_rows, refs

from mmbatch.readers.similar import ClipNotFoundError, build_index, similar_clips, sub_vectors
from mmbatch.schema import EmbeddingDims

DIMS = EmbeddingDims(8, 8, 16)  # fused: 32
REPO = Path(__file__).resolve().parent.parent


def batch(video: str, n: int, rng, dims=DIMS, **kw) -> dict:
    b = clip_rows(video, n, dims=dims, **kw)
    b["fused_embedding"] = rng.normal(size=(n, dims.fused)).astype(np.float32)
    return b


def test_a_planted_duplicate_comes_back_first_through_ivf_pq(tmp_path):
    rng = np.random.default_rng(7)
    night = Night(tmp_path, refs(*[f"v{i}" for i in range(30)], "dup"), dims=DIMS)
    batches = [batch(f"v{i}", 10, rng) for i in range(30)]
    twin = batch("dup", 1, rng)
    twin["fused_embedding"][0] = batches[3]["fused_embedding"][2] + rng.normal(scale=1e-3, size=DIMS.fused)
    night.write(*batches, twin).commit()
    built = build_index(str(tmp_path), min_rows_for_ann=256)
    assert built["dates"] == {DAY.isoformat(): "added"} and built["rows"] == {"32": 301}
    assert built["ann"]["32"] == "IVF_PQ, trained"
    found = similar_clips(str(tmp_path), "v3-2", k=5)
    assert found[0]["clip_id"] == "dup-0" and found[0]["distance"] < 1e-3
    assert len(found) == 5 and "v3-2" not in [r["clip_id"] for r in found]
    assert [r["distance"] for r in found] == sorted(r["distance"] for r in found)
    assert build_index(str(tmp_path))["dates"] == {}  # nothing new: nothing done


def test_the_index_follows_reruns_and_new_nights_and_keeps_models_apart(tmp_path):
    rng = np.random.default_rng(1)
    Night(tmp_path, refs("a", "b"), dims=DIMS).write(batch("a", 3, rng), batch("b", 2, rng)).commit()
    assert build_index(str(tmp_path))["rows"] == {"32": 5}
    # A rerun of the date (b rescored with another model setup of the same size) replaces the date.
    Night(tmp_path, refs("b"), fp="fp2", dims=DIMS).write(batch("b", 4, rng)).commit()
    other = EmbeddingDims(4, 4, 4)  # a later night with other models: another embedding size
    Night(tmp_path, refs("a"), day=DAY + dt.timedelta(days=1), fp="fp3", dims=other).write(
        batch("a", 2, rng, dims=other)).commit()
    built = build_index(str(tmp_path))
    assert built["dates"] == {DAY.isoformat(): "replaced", (DAY + dt.timedelta(days=1)).isoformat(): "added"}
    assert built["rows"] == {"12": 2, "32": 7} and built["ann"]["32"].startswith("exact search")
    found = similar_clips(str(tmp_path), "b-0", k=10)  # fp2's b-0: only fp2's clips are its peers
    assert sorted(r["clip_id"] for r in found) == ["b-1", "b-2", "b-3"]
    latest = similar_clips(str(tmp_path), "a-0", k=10)  # a-0's latest night is fp3's
    assert [r["clip_id"] for r in latest] == ["a-1"] and latest[0]["run_date"] == "2026-11-28"
    earlier = similar_clips(str(tmp_path), "a-0", k=10, run_date=DAY)
    assert sorted(r["clip_id"] for r in earlier) == ["a-1", "a-2"]
    with pytest.raises(ClipNotFoundError, match="not in the index"):
        similar_clips(str(tmp_path), "nope-0")
    r = subprocess.run([sys.executable, "-m", "mmbatch.cli", "similar", "--output", str(tmp_path), "--clip-id",
                        "b-0", "-k", "2"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2 and "distance=" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "mmbatch.cli", "similar", "--output", str(tmp_path), "--clip-id",
                        "b-0", "-k", "2", "--json"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert [row["clip_id"] for row in json.loads(r.stdout)] == [row["clip_id"] for row in found[:2]], r.stderr


def test_pq_sub_vectors_divide_the_embedding():
    assert sub_vectors(1664) == 208 and sub_vectors(32) == 4 and sub_vectors(7) == 1
