"""Clips like this one: a Lance dataset of every committed clip's fused embedding with an IVF_PQ
index, built or extended by `mmbatch index` and queried by `mmbatch similar` / `similar_clips`.

    <output>/_index/fused-<dim>.lance    clip id, video id, times, sentiment, valence, model
                                         fingerprint, run id, run date, the fused embedding
    <output>/_index/indexed.json         per date: the committed runs and rows the index holds

One dataset per embedding size (nights of other models have other sizes; Lance vectors are fixed
size). The index reads the output through its format, so it follows exactly the committed nights:
a new night is appended, a date whose committed content changed (a rerun, a rollback) is replaced.
Neighbours are searched among clips of the same model fingerprint only (embeddings of other models
are not comparable). Below `min_rows_for_ann` rows a dataset has no ANN index: the search is exact.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mmbatch import storage
from mmbatch.errors import ConfigError, ExitCode, MmbatchError, OutputError
from mmbatch.tables.formats import open_tables
from mmbatch.tables.tables import Tables

INDEX_DIR = "_index"
COLUMNS = ["clip_id", "video_id", "start_s", "end_s", "sentiment", "valence", "model_fingerprint", "run_id",
           "fused_embedding"]
MIN_ROWS_FOR_ANN = 4096  # below this an exact scan is fast and IVF_PQ has too little to train on


class ClipNotFoundError(MmbatchError):
    """The clip asked for is not in the index (never committed, failed, or not indexed yet)."""

    exit_code = ExitCode.USAGE


def _lance():
    try:
        import lance
    except ImportError:
        raise ConfigError("the clip index needs the pylance package: pip install 'mmbatch[lance]'") from None
    return lance


def lance_options(storage_options: dict | None) -> dict[str, str]:
    """s3fs-style storage options as Lance's object-store options (its keys are lower case)."""
    from mmbatch.tables.delta import object_store_options

    return {k.lower(): v for k, v in object_store_options(storage_options).items()}


class ClipIndex:
    """The Lance datasets under `<output>/_index/` and what they hold."""

    def __init__(self, tables: Tables):
        self.tables, self.fs = tables, tables.fs
        self.folder = posixpath.join(tables.root, INDEX_DIR)
        self.options = lance_options(tables.storage_options)

    def uri(self, dim: int) -> str:
        if storage.is_local(self.tables.uri):
            import os

            return os.path.abspath(posixpath.join(self.folder, f"fused-{dim}.lance"))
        return f"{storage.protocol_of(self.tables.uri)}://{self.folder}/fused-{dim}.lance"

    def dims(self) -> list[int]:
        if not self.fs.exists(self.folder):
            return []
        names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.folder, detail=False)]
        return sorted(int(n[len("fused-"):-len(".lance")]) for n in names if n.startswith("fused-") and n.endswith(".lance"))

    def open(self, dim: int):
        return _lance().dataset(self.uri(dim), storage_options=self.options)

    def indexed(self) -> dict[str, Any]:
        try:
            return json.loads(self.fs.cat_file(posixpath.join(self.folder, "indexed.json")))
        except FileNotFoundError:
            return {}

    def save_indexed(self, state: dict[str, Any]) -> None:
        storage.write_bytes_atomic(self.fs, posixpath.join(self.folder, "indexed.json"),
                                   json.dumps(state, indent=1, sort_keys=True).encode())


def build_index(output: str, storage_options: dict | None = None, output_config=None,
                run_date: dt.date | None = None, min_rows_for_ann: int = MIN_ROWS_FOR_ANN) -> dict[str, Any]:
    """Bring the index up to date with the committed nights (or one date); returns what changed."""
    tables = open_tables(output, storage_options, output_config)
    index = ClipIndex(tables)
    state = index.indexed()
    days = [run_date] if run_date else tables.dates("clips")
    if run_date and run_date not in tables.dates("clips"):
        raise OutputError(f"run date {run_date.isoformat()} has no committed night under {output}")
    changed: dict[str, str] = {}
    touched: set[int] = set()
    for day in days:
        rows = _clip_rows(tables, day)
        signature = _signature(rows)
        if state.get(day.isoformat(), {}).get("signature") == signature:
            continue
        changed[day.isoformat()] = "replaced" if day.isoformat() in state else "added"
        touched |= _replace_date(index, day, rows)
        state[day.isoformat()] = {"signature": signature, "rows": rows.num_rows}
    for day in [d for d in list(state) if run_date is None and dt.date.fromisoformat(d) not in days]:
        touched |= _replace_date(index, dt.date.fromisoformat(day), None)  # rolled back to nothing
        del state[day]
        changed[day] = "removed"
    ann = {dim: _refresh_ann(index, dim, min_rows_for_ann) for dim in sorted(touched)}
    if changed:
        index.save_indexed(state)
    return {"dates": changed, "ann": {str(d): a for d, a in ann.items()},
            "rows": {str(d): index.open(d).count_rows() for d in index.dims()}}


def _clip_rows(tables: Tables, day: dt.date) -> pa.Table:
    t = tables.read_date("clips", day, ["status", *COLUMNS])
    if t is None:
        return pa.table({c: [] for c in COLUMNS})
    t = t.filter(pc.and_(pc.equal(t["status"], "ok"), pc.is_valid(t["fused_embedding"]))).select(COLUMNS)
    return t.append_column("run_date", pa.array([day.isoformat()] * t.num_rows, pa.string()))


def _signature(rows: pa.Table) -> str:
    """What the index holds of a date: its committed runs and row count (changes with a rerun)."""
    runs = sorted(set(rows.column("run_id").to_pylist())) if rows.num_rows else []
    return f"{rows.num_rows}:{','.join(runs)}"


def _replace_date(index: ClipIndex, day: dt.date, rows: pa.Table | None) -> set[int]:
    """The date's rows replace what the datasets held of it; returns the dims touched."""
    lance = _lance()
    touched = set()
    for dim in index.dims():
        ds = index.open(dim)
        if ds.count_rows(filter=f"run_date = '{day.isoformat()}'"):
            ds.delete(f"run_date = '{day.isoformat()}'")
            touched.add(dim)
    if rows is None or rows.num_rows == 0:
        return touched
    lengths = pc.list_value_length(rows["fused_embedding"]).to_numpy()
    for dim in sorted(set(lengths.tolist())):
        part = rows.filter(pa.array(lengths == dim)).combine_chunks()
        flat = pc.list_flatten(part["fused_embedding"].chunk(0))  # one chunk after combine_chunks
        vectors = pa.FixedSizeListArray.from_arrays(flat.cast(pa.float32()), dim)
        part = part.set_column(part.schema.get_field_index("fused_embedding"), "fused_embedding", vectors)
        exists = dim in index.dims()
        lance.write_dataset(part, index.uri(dim), mode="append" if exists else "create",
                            storage_options=index.options)
        touched.add(dim)
    return touched


def _refresh_ann(index: ClipIndex, dim: int, min_rows: int) -> str:
    """Train the IVF_PQ index once a dataset is large enough; later nights are merged into it."""
    ds = index.open(dim)
    rows = ds.count_rows()
    has = any("fused_embedding" in i.get("fields", []) for i in ds.list_indices())
    if rows < min_rows:
        return f"exact search ({rows} rows < {min_rows})"
    if has:
        ds.optimize.optimize_indices()
        return "IVF_PQ, new rows merged"
    ds.create_index("fused_embedding", index_type="IVF_PQ", metric="cosine",
                    num_partitions=max(1, int(math.sqrt(rows))), num_sub_vectors=sub_vectors(dim))
    ds.create_scalar_index("clip_id", index_type="BTREE")  # finding the query clip: no full scan
    return "IVF_PQ, trained"


def sub_vectors(dim: int) -> int:
    """PQ sub-vectors: the most that leave each at least 8 dimensions and divide `dim` (1664 → 208)."""
    for n in range(max(1, dim // 8), 0, -1):
        if dim % n == 0:
            return n
    return 1


def similar_clips(output: str, clip_id: str, k: int = 10, storage_options: dict | None = None,
                  run_date: dt.date | None = None, nprobes: int = 20, refine_factor: int = 10) -> list[dict]:
    """The `k` nearest clips to `clip_id` (its latest indexed night, or `run_date`) by cosine distance
    of the fused embedding, among clips of the same model fingerprint, nearest first."""
    index = ClipIndex(open_tables(output, storage_options))
    target = _find(index, clip_id, run_date)
    if target is None:
        raise ClipNotFoundError(f"clip {clip_id!r} is not in the index under {output} "
                                "(not committed ok, or run `mmbatch index` first)")
    dim, row = target
    fp = row["model_fingerprint"].replace("'", "''")
    found = index.open(dim).to_table(
        columns=[c for c in COLUMNS if c != "fused_embedding"] + ["run_date", "_distance"],
        filter=f"model_fingerprint = '{fp}'",
        prefilter=True, nearest={"column": "fused_embedding", "q": row["fused_embedding"], "k": k + 1,
                                 "metric": "cosine", "nprobes": nprobes, "refine_factor": refine_factor})
    out = [r for r in found.to_pylist() if not (r["clip_id"] == clip_id and r["run_date"] == row["run_date"])]
    for r in out:
        r["distance"] = r.pop("_distance")
    return out[:k]


def _find(index: ClipIndex, clip_id: str, run_date: dt.date | None) -> tuple[int, dict] | None:
    quoted = clip_id.replace("'", "''")
    where = f"clip_id = '{quoted}'" + (f" AND run_date = '{run_date.isoformat()}'" if run_date else "")
    best = None
    for dim in index.dims():
        t = index.open(dim).to_table(filter=where, columns=["model_fingerprint", "run_date", "fused_embedding"])
        for r in t.to_pylist():
            if best is None or r["run_date"] > best[1]["run_date"]:
                best = (dim, r)
    return best
