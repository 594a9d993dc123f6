"""The schema page lists exactly the columns and types of mmbatch.schema."""

import re
from pathlib import Path

import pytest

from mmbatch.schema import CLIPS_SCHEMA, STATE_SCHEMA, VIDEOS_SCHEMA

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
TYPES = {"string": "string", "int32": "int32", "int64": "int64", "double": "double", "float": "float",
         "bool": "bool", "date32[day]": "date32", "list<item: float>": "list<float>"}


def documented(table: str) -> list[tuple[str, str]]:
    section = DOC.read_text().split(f"## {table}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines()
            if re.match(r"\| [a-z_]+ \|", line) and not line.startswith("| column ")]
    return [(name.strip(), kind.strip()) for name, kind in rows]


@pytest.mark.parametrize("table, schema", [("clips", CLIPS_SCHEMA), ("videos", VIDEOS_SCHEMA), ("state", STATE_SCHEMA)])
def test_schema_page_matches_the_code(table, schema):
    assert documented(table) == [(f.name, TYPES[str(f.type)]) for f in schema]


def test_schema_page_lists_the_modalities_as_declared():
    from mmbatch.modalities import REGISTRY

    section = DOC.read_text().split("## Modalities\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.split("|")[1:5]] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| modality ")]
    assert rows == [[m.name, m.doc, m.has_column or "—", ", ".join(m.tasks)] for m in REGISTRY]


QUERIES = DOC.parent / "queries.md"


@pytest.fixture(scope="module", params=["parquet", "delta", "iceberg"])
def two_nights(request, tmp_path_factory):
    """Night 1: a (happy face, sad words), b (negative), bad (fails). Night 2, other models: a again, c.
    In each output format; returns (root, format)."""
    import datetime as dt

    import numpy as np
    from nights import DAY, Night, clip_rows, refs

    from mmbatch.config import OutputConfig
    from mmbatch.schema import EmbeddingDims

    root = tmp_path_factory.mktemp("queries")
    output = OutputConfig(format=request.param)

    def rows(vid, n, valence, vision=None, text=None, dims=None, **kw):
        b = clip_rows(vid, n, dims=dims, **kw) if dims else clip_rows(vid, n, **kw)
        b["valence"] = np.full(n, valence, np.float32)
        b["sentiment"] = np.array(["negative" if valence < -0.2 else "positive" if valence > 0.2 else "neutral"] * n)
        if vision is not None:
            b["vision_valence"] = np.full(n, vision, np.float32)
        if text is not None:
            b["text_valence"] = np.full(n, text, np.float32)
        b["fused_embedding"] = np.random.default_rng(len(vid) + n).normal(size=b["fused_embedding"].shape).astype(np.float32)
        return b

    Night(root, refs("a", "b", "bad"), output=output).write(
        rows("a", 2, 0.5, vision=0.8, text=-0.6), rows("b", 3, -0.7), clip_rows("bad", 1, "error", first=-1)).commit()
    other = EmbeddingDims(8, 5, 0)
    Night(root, refs("a", "c"), day=DAY + dt.timedelta(days=1), fp="fp2", dims=other, output=output).write(
        rows("a", 1, 0.1, dims=other), rows("c", 2, -0.3, dims=other)).commit()
    return root, request.param


def sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", QUERIES.read_text(), re.S)


def python_blocks() -> dict[str, str]:
    """The page's Python blocks by what they are for: `delta`, `iceberg` (views), `pandas`."""
    blocks = re.findall(r"```python\n(.*?)```", QUERIES.read_text(), re.S)
    named = {}
    for b in blocks:
        first = b.splitlines()[0]
        named[first.split("output.format: ", 1)[1].split()[0].rstrip(",") if "output.format" in first else "pandas"] = b
    return named


def connection(root, fmt: str):
    """A DuckDB connection with the `clips` and `videos` views, as the page makes them for the format."""
    import duckdb

    if fmt == "parquet":
        con = duckdb.connect()
        for statement in [s for s in sql_blocks()[0].replace("{root}", str(root)).split(";") if s.strip()]:
            con.execute(statement)
        return con
    scope = {"root": str(root)}
    exec(python_blocks()[fmt], scope)
    return scope["con"]


def test_every_duckdb_query_runs(two_nights):
    root, fmt = two_nights
    con = connection(root, fmt)
    results = []
    for block in sql_blocks()[1:]:
        for statement in [s for s in block.replace("{root}", str(root)).split(";") if s.strip()]:
            results.append(con.execute(statement).fetchall())
    latest, most_negative, trend, disagree, nearest, failed = [r for r in results if r]
    assert [(v, str(d), round(val, 2), n) for v, d, val, n in latest] == [
        ("a", "2026-11-28", 0.1, 1), ("b", "2026-11-27", -0.7, 3), ("c", "2026-11-28", -0.3, 2)]
    assert [(v, round(val, 2)) for v, val, _ in most_negative] == [("b", -0.7), ("a", 0.5)]
    assert [(str(d), n) for d, n, *_ in trend] == [("2026-11-27", 2), ("2026-11-28", 2)]
    assert [(v, i) for v, i, *_ in disagree] == [("a", 0), ("a", 1)]
    assert sorted(c for c, *_ in nearest) == ["a-1", "b-0", "b-1", "b-2"]  # same models as a-0 only
    assert [s for *_, s in nearest] == sorted((s for *_, s in nearest), reverse=True)
    assert failed == [(failed[0][0], "decode", "boom", 1)]


def test_pandas_snippet_agrees_with_duckdb(two_nights):
    root, fmt = two_nights
    code = python_blocks()["pandas"]
    if fmt != "parquet":  # the page's way for table formats: the views, then a DataFrame
        code = code.replace('clips = pd.read_parquet(f"{root}/clips", partitioning=partitioning())',
                            'clips = con.sql("SELECT * FROM clips").df()')
    scope = {"root": str(root), "con": connection(root, fmt) if fmt != "parquet" else None}
    exec(code, scope)
    latest = scope["latest"]
    assert latest[["video_id", "clips"]].values.tolist() == [["a", 1], ["b", 3], ["c", 2]]
    assert [round(v, 2) for v in latest["valence"]] == [0.1, -0.7, -0.3]
    assert [round(v, 2) for v in scope["most_negative"]] == [-0.7, 0.5]
