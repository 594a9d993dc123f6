"""Reconcile: one `videos` row per input, and no committed result lost. Pure: no I/O.

Every input of the night ends as one row: scored (`ok`), failed with the reason (`error`; a
video that never came back is failed with `error_stage = "reconcile"`) or `skipped` (scored on
an earlier night from the same content and models). Then what the date already holds is kept:
a video that failed now, but whose result an earlier commit of the same date holds, keeps that
result (its row says why); videos of an earlier commit of the date that this run was not given
are carried over unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmbatch.output.records import ModalityCounts, VideoOutcome, VideoRow
from mmbatch.schema import MODALITIES, EmbeddingDims
from mmbatch.trust import redact_text

NEVER_COMPLETED = "video was never completed by the pipeline (worker lost or decode crashed)"


@dataclass
class Reconciled:
    """The night's `videos` rows and what the counts of its manifest are made of."""

    rows: list[VideoRow]  # sorted by video_id: this night's inputs, then carried videos
    kept: list[str] = field(default_factory=list)  # failed now, earlier result of the date kept
    carried: list[str] = field(default_factory=list)  # committed earlier tonight, not among these inputs
    counts: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, ModalityCounts] = field(default_factory=dict)
    scored_clips: int = 0


def videos_rows(refs: list, outcomes: dict[str, VideoOutcome], skipped: dict[str, dict], fingerprint: str,
                run_id: str) -> list[VideoRow]:
    """One row per input (refs: VideoRef), in input order."""
    rows = []
    for ref in refs:
        base = {"video_id": ref.video_id, "uri": ref.display_uri, "etag": ref.etag, "size_bytes": ref.size_bytes,
                "model_fingerprint": fingerprint, "run_id": run_id}
        if ref.video_id in skipped:
            prev = skipped[ref.video_id]
            rows.append(VideoRow(**{**base, "model_fingerprint": prev["model_fingerprint"]}, duration_s=None, n_clips=0,
                                 status="skipped", error_stage=None, error=None, decode_seconds=0.0,
                                 skipped_from=prev["run_id"]))
        elif (o := outcomes.get(ref.video_id)) is not None:
            rows.append(VideoRow(**base, duration_s=o.duration_s, n_clips=o.n_clips, status=o.status,
                                 error_stage=o.error_stage, error=redact_text(o.error) if o.error else None,
                                 decode_seconds=o.decode_seconds))
        else:
            rows.append(VideoRow(**base, duration_s=None, n_clips=0, status="error", error_stage="reconcile",
                                 error=NEVER_COMPLETED, decode_seconds=None))
    return rows


@dataclass(frozen=True)
class Tonight:
    """What a night knows of its inputs at its commit: every input (VideoRef), the outcomes of
    those it finished (video id → VideoOutcome) and the state rows of those it skipped."""

    refs: list
    outcomes: dict[str, VideoOutcome]
    skipped: dict[str, dict]


def reconcile(tonight: Tonight, previous: dict[str, VideoRow], fingerprint: str, run_id: str,
              dims: EmbeddingDims) -> Reconciled:
    """The night's rows against what the date holds now (`previous`: its committed `videos` rows).
    Raises RuntimeError if the rows do not account for every input exactly once."""
    refs, outcomes = tonight.refs, tonight.outcomes
    rows = videos_rows(refs, outcomes, tonight.skipped, fingerprint, run_id)
    if len(rows) != len(refs) or len({r.video_id for r in rows}) != len(refs):
        raise RuntimeError(f"reconciliation failed: {len(refs)} inputs, {len(rows)} rows")
    input_ids = {r.video_id for r in refs}
    out = Reconciled(rows=[])
    for row in rows:
        prev = previous.get(row.video_id)
        if row.status == "error" and prev is not None and prev.status == "ok" and prev.has_clips:
            row = prev.replace(error_stage=row.error_stage,
                               error=f"this run ({run_id}) failed, so the result committed by run "
                                     f"{prev.run_id} is kept: {row.error}")
            out.kept.append(row.video_id)
        out.rows.append(row)
    for vid, prev in sorted(previous.items()):
        if vid not in input_ids:  # committed earlier tonight from another input: never lost
            out.rows.append(prev)
            out.carried.append(vid)
    out.rows.sort(key=lambda r: r.video_id)

    statuses = {s: sum(1 for r in out.rows if r.video_id in input_ids and r.status == s) for s in ("ok", "error", "skipped")}
    if sum(statuses.values()) != len(refs):
        raise RuntimeError(f"reconciliation failed: {len(refs)} inputs vs {statuses}")
    kept = set(out.kept)
    scored = [o for o in outcomes.values() if o.video_id in input_ids and o.video_id not in kept]
    out.scored_clips = sum(o.n_clips for o in scored)
    out.counts = {"inputs": len(refs), "scored": statuses["ok"] - len(kept), "failed": statuses["error"] + len(kept),
                  "skipped": statuses["skipped"], "clips": out.scored_clips, "kept_after_failure": len(kept),
                  "carried_over": len(out.carried)}
    out.modalities = modality_counts(scored, dims)
    return out


def modality_counts(outcomes: list[VideoOutcome], dims: EmbeddingDims) -> dict[str, ModalityCounts]:
    """Per configured modality: clips scored and clips where it failed, over `outcomes`."""
    out = {}
    for m in MODALITIES:
        if getattr(dims, m):
            out[m] = ModalityCounts()
            for o in outcomes:
                out[m].add(o.modalities.get(m, ModalityCounts()))
    return out


def carry_ids(reconciled: Reconciled, previous: dict[str, VideoRow]) -> list[str]:
    """Videos whose clip rows come from the date's current partition: kept or carried, with clips."""
    return [v for v in reconciled.kept + reconciled.carried if previous[v].has_clips]
