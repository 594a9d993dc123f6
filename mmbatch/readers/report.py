"""The run report: one self-contained HTML page per night, with its plots inline as SVG.

Status (committed, or degraded by the command's own rule), counts, failure reasons and the failed
and slowest videos, the models and revisions that scored it, the sentiment distribution, per-video
sentiment timelines for the most negative and most positive videos, how often the modalities agree
with the fused score, time by stage, the change from the previous night and the trend over the last
nights. It reads the night's committed `videos`
and `clips` partitions (a few scalar columns) and its manifest, on any fsspec root; it is
written next to the manifest at the end of each run (`_runs/<run_id>.html`) and by
`mmbatch report --output <root> [--run-date D]`.
"""

from __future__ import annotations

import datetime as dt
import html
import posixpath
from typing import Any

from mmbatch import storage
from mmbatch.night.runs import degraded_reasons, list_run_records, read_run_record
from mmbatch.schema import COLUMNS, MODALITIES
from mmbatch.tables.formats import open_tables
from mmbatch.tables.tables import Tables

TREND_NIGHTS = 14  # nights in the report's trend table
CLIP_COLUMNS = ["video_id", "clip_index", "start_s", "end_s", "status", "sentiment", "valence",
                *(COLUMNS[m].valence for m in MODALITIES)]
COLORS = {"negative": "#c0392b", "neutral": "#7f8c8d", "positive": "#27ae60", "bar": "#2c7fb8"}


def _busy_pools(timings: dict) -> str:
    """Each actor pool's busy share of the night, the one the others waited for named."""
    shares = timings.get("pool_busy_share") or {}
    if not shares:
        return ""
    busiest = max(shares, key=shares.get)
    rows = [[name, f"{share:.0%}"] for name, share in sorted(shares.items(), key=lambda kv: -kv[1])]
    return (f"<p>Share of each actor pool's time spent working over the {timings.get('execution_seconds', 0):.1f} s "
            f"the graph ran: <b>{html.escape(busiest)}</b> was the busiest, the pool the others waited for when near "
            "100% (more actors for it, or fewer elsewhere; docs/tuning.md).</p>"
            + _table(rows, ["pool", "busy"]))


# -- data ---------------------------------------------------------------------------------------
def _manifests(fs, root: str) -> list[dict]:
    runs = posixpath.join(root, "_runs")
    found = [read_run_record(fs, posixpath.join(runs, f"{run_id}.json")) for run_id in list_run_records(fs, runs)]
    return [m for m in found if m and not m.get("superseded_by") and not m.get("rolled_back_at")]


def _partition(tables: Tables, table: str, day: str, columns: list[str] | None = None):
    t = tables.read_date(table, dt.date.fromisoformat(day), columns)
    return None if t is None else t.to_pandas()


def night_data(output: str, run_date: dt.date | None = None, storage_options: dict | None = None,
               output_config=None) -> dict[str, Any]:
    """The committed night's manifest, rows and previous night, read through the output's format."""
    tables = open_tables(output, storage_options, output_config)
    fs, root = tables.fs, tables.root
    manifests = sorted(_manifests(fs, root), key=lambda m: (m["run_date"], m.get("committed_at", "")))
    if not manifests:
        raise FileNotFoundError(f"no committed run under {output}")
    day = run_date.isoformat() if run_date else manifests[-1]["run_date"]
    mine = [m for m in manifests if m["run_date"] == day]
    if not mine:
        raise FileNotFoundError(f"no committed run for {day} under {output}")
    earlier = [m for m in manifests if m["run_date"] < day]
    previous = None
    if earlier:
        prev_day = earlier[-1]["run_date"]
        prev_clips = _partition(tables, "clips", prev_day, ["status", "valence"])
        prev_ok = prev_clips[prev_clips["status"] == "ok"] if prev_clips is not None else None
        previous = {"run_date": prev_day, "counts": earlier[-1]["counts"],
                    "mean_valence": float(prev_ok["valence"].mean()) if prev_ok is not None and len(prev_ok) else None}
    trend = []
    for m in [m for m in manifests if m["run_date"] <= day][-TREND_NIGHTS:]:
        t = _partition(tables, "clips", m["run_date"], ["status", "valence"])
        ok = t[t["status"] == "ok"] if t is not None else None
        trend.append({"run_date": m["run_date"], "counts": m["counts"],
                      "mean_valence": float(ok["valence"].mean()) if ok is not None and len(ok) else None})
    return {"manifest": mine[-1], "videos": _partition(tables, "videos", day),
            "clips": _partition(tables, "clips", day, CLIP_COLUMNS), "previous": previous, "trend": trend,
            "root": root, "fs": fs}


# -- SVG ----------------------------------------------------------------------------------------
def _svg(width: int, height: int, body: str, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>{body}</svg>')


def bar_chart(items: list[tuple[str, float]], title: str, color: str = COLORS["bar"], width: int = 520) -> str:
    """Horizontal bars with labels and values."""
    if not items:
        return "<p>none</p>"
    top = max(v for _, v in items) or 1.0
    row, label_w = 22, 190
    body = []
    for i, (label, value) in enumerate(items):
        y = 10 + i * row
        w = max(1.0, (width - label_w - 70) * value / top)
        fill = COLORS.get(label, color)
        body.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
                    f'{html.escape(str(label)[:30])}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{fill}"/>'
                    f'<text x="{label_w + w + 5:.1f}" y="{y + 14}" font-size="12">{value:g}</text>')
    return _svg(width, 20 + row * len(items), "".join(body), title)


def histogram(values, title: str, bins: int = 20, lo: float = -1.0, hi: float = 1.0, width: int = 520) -> str:
    import numpy as np

    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=(lo, hi))
    height, pad = 170, 32
    top = max(int(counts.max()), 1)
    bar_w = (width - 2 * pad) / bins
    body = [f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>',
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>',
            f'<text x="{pad - 3}" y="{pad + 4}" text-anchor="end" font-size="11">{top}</text>',
            f'<text x="{pad - 3}" y="{height - pad}" text-anchor="end" font-size="11">0</text>',
            f'<text x="{pad + 4}" y="{pad - 8}" font-size="11">clips</text>']
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        mid = (edges[i] + edges[i + 1]) / 2
        fill = COLORS["negative"] if mid < -0.2 else COLORS["positive"] if mid > 0.2 else COLORS["neutral"]
        body.append(f'<rect x="{pad + i * bar_w:.1f}" y="{height - pad - h:.1f}" width="{bar_w - 1:.1f}" '
                    f'height="{h:.1f}" fill="{fill}"><title>{edges[i]:.2f}..{edges[i + 1]:.2f}: {c}</title></rect>')
    for x, label in ((pad, f"{lo:g}"), (width / 2, "0"), (width - pad, f"{hi:g}")):
        body.append(f'<text x="{x}" y="{height - 8}" text-anchor="middle" font-size="11">{label}</text>')
    return _svg(width, height, "".join(body), title)


def timeline(points: list[tuple[float, float]], title: str, end: float | None = None, width: int = 520,
             height: int = 130) -> str:
    """Valence (-1..1) over time in the video: a point at each clip's middle, the time axis from
    0 s to `end` (the last clip's end), valence on its own axis at the left."""
    left, pad, bottom = 28, 12, 18
    if not points:
        return "<p>no scored clips</p>"
    end = end or max(t for t, _ in points) or 1.0
    mid = pad + (height - bottom - pad) / 2
    xy = [(left + (width - left - pad) * t / end, mid - (height - bottom - pad) / 2 * v) for t, v in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{COLORS["bar"]}"/>' for x, y in xy)
    axis_y = height - bottom
    body = (f'<line x1="{left}" y1="{mid}" x2="{width - pad}" y2="{mid}" stroke="#bbb" stroke-dasharray="4 3"/>'
            f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{axis_y}" stroke="#333"/>'
            f'<line x1="{left}" y1="{axis_y}" x2="{width - pad}" y2="{axis_y}" stroke="#333"/>'
            f'<polyline points="{path}" fill="none" stroke="{COLORS["bar"]}" stroke-width="1.5"/>{dots}'
            f'<text x="{left - 3}" y="{pad + 4}" font-size="10" text-anchor="end">+1</text>'
            f'<text x="{left - 3}" y="{mid + 3}" font-size="10" text-anchor="end">0</text>'
            f'<text x="{left - 3}" y="{axis_y}" font-size="10" text-anchor="end">-1</text>'
            f'<text x="{left}" y="{height - 3}" font-size="10">0 s</text>'
            f'<text x="{width - pad}" y="{height - 3}" font-size="10" text-anchor="end">{end:.0f} s</text>')
    return _svg(width, height, body, title)


# -- page -----------------------------------------------------------------------------------------
def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _sentiment_sections(ok, timelines: int) -> list[str]:
    """The scored clips: sentiment classes, valence, the most negative and positive videos'
    timelines and how often each modality agrees with the fused score."""
    import numpy as np

    sections = []
    classes = [(s, float((ok["sentiment"] == s).sum())) for s in ("negative", "neutral", "positive")]
    sections.append("<h2>Sentiment</h2>" + bar_chart(classes, "clips by sentiment")
                    + histogram(ok["valence"], "distribution of clip valence"))
    per_video = ok.groupby("video_id")["valence"].mean().sort_values()
    k = min(timelines, max(1, len(per_video) // 2))  # the two lists never show the same video
    for label, ids in (("Most negative videos", list(per_video.index[:k])),
                       ("Most positive videos", list(per_video.index[::-1][:k]))):
        parts = [f"<h2>{label}</h2>"]
        for vid in ids:
            v = ok[ok["video_id"] == vid].sort_values("start_s")
            middles = (v["start_s"].astype(float) + v["end_s"].astype(float)) / 2
            parts.append(f"<h3>{html.escape(str(vid))} (mean valence {per_video[vid]:+.2f})</h3>"
                         + timeline(list(zip(middles, v["valence"].astype(float))), f"valence over time, {vid}",
                                    float(v["end_s"].max())))
        sections.append("".join(parts))
    agreement = []
    for mod in MODALITIES:
        col = ok[COLUMNS[mod].valence].astype(float)
        present = col.notna()
        if present.any():
            same = np.sign(col[present]) == np.sign(ok.loc[present, "valence"].astype(float))
            agreement.append((mod, round(100.0 * float(same.mean()), 1)))
    sections.append("<h2>Modality agreement</h2><p>Share of clips (%) where the modality's own valence has the "
                    "sign of the fused valence.</p>" + bar_chart(agreement, "modality agreement, %"))
    return sections


def _status(m: dict) -> str:
    """Committed, or degraded by the rule the command's exit code follows (the night's own limits)."""
    run = (m.get("config") or {}).get("run") or {}
    reasons = degraded_reasons(m, run.get("max_failed_fraction", 0.2), run.get("max_modality_failed_fraction", 0.2))
    if not reasons:
        return "<h2>Status</h2><p>committed (exit code 0)</p>"
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    return f"<h2>Status</h2><p><b>committed, degraded</b> (exit code 3):</p><ul>{items}</ul>"


def _models(m: dict) -> str:
    """Each configured model: its task, source, revision and the identity the fingerprint hashed."""
    models = (m.get("config") or {}).get("models") or {}
    identities = m.get("model_identities") or {}
    rows = [[name, s.get("task", ""), s.get("source", ""), s.get("revision") or "", identities.get(name, "")]
            for name, s in models.items() if s]
    if (m.get("config") or {}).get("fusion", {}).get("mode") == "trained":
        fusion = m["config"]["fusion"]
        rows.append(["fusion", "trained", fusion.get("checkpoint") or "", fusion.get("revision") or "",
                     identities.get("fusion", "")])
    return "<h2>Models</h2>" + _table(rows, ["section", "task", "source", "revision", "identity"])


def _video_tables(videos, limit: int = 15) -> tuple[str, str]:
    """The failed videos (with their reasons) and the slowest to decode."""
    if videos is None or not len(videos):
        return "", ""
    failed = videos[videos["status"] == "error"].sort_values("video_id").head(limit)
    failed_rows = [[r.video_id, r.error_stage or "", (r.error or "")[:160]] for r in failed.itertuples()]
    slow = videos[videos["decode_seconds"].notna()].sort_values("decode_seconds", ascending=False).head(limit)
    slow_rows = [[r.video_id, f"{r.decode_seconds:.1f}", r.n_clips,
                  "" if r.duration_s is None or r.duration_s != r.duration_s else f"{r.duration_s:.0f}"]
                 for r in slow.itertuples()]
    return ((f"<h2>Failed videos</h2>{_table(failed_rows, ['video', 'stage', 'reason'])}" if failed_rows else ""),
            f"<h2>Slowest videos to decode</h2>{_table(slow_rows, ['video', 'decode s', 'clips', 'duration s'])}")


def _trend(trend: list[dict]) -> str:
    if len(trend) < 2:
        return ""
    rows = [[t["run_date"], *(t["counts"].get(k, 0) for k in ("inputs", "scored", "failed", "skipped", "clips")),
             "" if t["mean_valence"] is None else f"{t['mean_valence']:+.3f}"] for t in trend]
    return (f"<h2>The last {len(trend)} nights</h2>"
            + _table(rows, ["night", "inputs", "scored", "failed", "skipped", "clips", "mean clip valence"]))


def render(data: dict[str, Any], timelines: int = 3) -> str:
    m, videos, clips, prev = data["manifest"], data["videos"], data["clips"], data["previous"]
    c = m["counts"]
    sections = [f"<h1>mmbatch run {html.escape(m['run_id'])}</h1>",
                f"<p>Night {m['run_date']} · committed {m.get('committed_at', '')} · model fingerprint "
                f"{html.escape(m['model_fingerprint'])} · schema v{m.get('schema_version')}</p>"]
    counts = [("inputs", c["inputs"]), ("scored", c["scored"]), ("failed", c["failed"]), ("skipped", c["skipped"]),
              ("clips", c["clips"])]
    sections += [_status(m), "<h2>Counts</h2>" + _table([[k, v] for k, v in counts], ["", "count"])]
    failed_videos, slowest = _video_tables(videos)
    reasons: list[tuple[str, float]] = []
    if videos is not None and len(videos):
        failed = videos[videos["status"] == "error"]
        grouped = failed.groupby([failed["error_stage"].fillna(""), failed["error"].fillna("")]).size()
        reasons = [(f"{stage}: {err}"[:60], float(n)) for (stage, err), n in grouped.sort_values(ascending=False).items()]
    sections += ["<h2>Failure reasons</h2>" + bar_chart(reasons[:12], "failed videos by reason", COLORS["negative"]),
                 failed_videos, _models(m)]

    ok = clips[clips["status"] == "ok"] if clips is not None else None
    if ok is not None and len(ok):
        sections += _sentiment_sections(ok, timelines)
    else:
        sections.append("<h2>Sentiment</h2><p>No clip was scored this night.</p>")

    stages = (m.get("timings") or {}).get("stages") or []
    stage_bars = [(s["operator"], float(s["wall_seconds"] or 0)) for s in stages]
    sections.append(f"<h2>Time by stage</h2><p>Wall time {m.get('timings', {}).get('wall_seconds', 0):.1f} s; "
                    "busy seconds summed over each operator's tasks (Ray Data stats).</p>"
                    + bar_chart(stage_bars, "busy seconds by stage") + _busy_pools(m.get("timings") or {}) + slowest)
    if prev is not None:
        now = float(ok["valence"].mean()) if ok is not None and len(ok) else None
        rows = [[k, prev["counts"].get(k, 0), c.get(k, 0), c.get(k, 0) - prev["counts"].get(k, 0)]
                for k in ("inputs", "scored", "failed", "skipped", "clips")]
        if now is not None and prev["mean_valence"] is not None:
            rows.append(["mean clip valence", f"{prev['mean_valence']:+.3f}", f"{now:+.3f}",
                         f"{now - prev['mean_valence']:+.3f}"])
        sections.append(f"<h2>Change from the previous night ({prev['run_date']})</h2>"
                        + _table(rows, ["", prev["run_date"], m["run_date"], "change"]))
    sections.append(_trend(data.get("trend") or []))
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}svg{display:block;margin:8px 0}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mmbatch {html.escape(m['run_id'])}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")


def write_report(output: str, run_date: dt.date | None = None, storage_options: dict | None = None,
                 path: str | None = None, output_config=None) -> str:
    """Render the night's report and write it (default: next to its manifest); returns where."""
    data = night_data(output, run_date, storage_options, output_config)
    target = path or posixpath.join(data["root"], "_runs", f"{data['manifest']['run_id']}.html")
    page = render(data).encode()
    if path and "://" not in path and not path.startswith(data["root"]):
        with open(path, "wb") as fh:
            fh.write(page)
    else:
        storage.write_bytes_atomic(data["fs"], target, page)
    return target

