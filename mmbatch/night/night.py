"""One function wires a run attempt's objects on its output: where things live (layout), the
lease on the night, the driver's ledger, the committer and the write stage's arguments. The
job (mmbatch/pipeline/run.py), the fake nights of the tests and the scale benchmark all use it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mmbatch import storage
from mmbatch.night.commit import Committer
from mmbatch.night.ledger import RunLedger
from mmbatch.night.lock import Lease
from mmbatch.output.layout import OutputLayout, run_id_for
from mmbatch.output.writer import WriterArgs
from mmbatch.schema import EmbeddingDims
from mmbatch.tables.tables import Tables
from mmbatch.trust import redact_uri


@dataclass
class NightOutput:
    fs: object
    layout: OutputLayout
    ledger: RunLedger
    committer: Committer
    writer: WriterArgs
    lease: Lease | None = None


def night_layout(output_uri: str, storage_options: dict | None, run_date: dt.date,
                 fingerprint: str) -> tuple[object, OutputLayout]:
    """The output's filesystem and the layout of this run (its id: the date and fingerprint)."""
    fs, root = storage.filesystem(output_uri, storage_options)
    return fs, OutputLayout(root.rstrip("/"), run_date, run_id_for(run_date, fingerprint))


def night_lease(fs, layout: OutputLayout, output_uri: str, ttl_s: float) -> Lease:
    """The lease that lets one run at a time hold this output's night (not taken yet)."""
    return Lease(fs, layout.lock, layout.run_id, ttl_s=ttl_s,
                 what=f"run date {layout.run_date.isoformat()} of {redact_uri(output_uri)}")


def open_night(fs, layout: OutputLayout, refs: list, *, output_uri: str, fingerprint: str, dims: EmbeddingDims,
               config_json: str = "{}", storage_options: dict | None = None, attempt: str | None = None,
               row_group_rows: int = 2048, lease: Lease | None = None, tables: Tables | None = None) -> NightOutput:
    """The ledger over `refs` (VideoRef), the committer and the writer's arguments of one attempt;
    `tables`: the output's tables in their format (None: plain Parquet)."""
    ledger = RunLedger(fs, layout, {r.video_id: r for r in refs}, attempt)
    writer = WriterArgs(output=output_uri, storage_options=storage_options, parts_dir=layout.parts,
                        run_id=layout.run_id, fingerprint=fingerprint, dims=dims, config_json=config_json,
                        attempt=ledger.attempt, row_group_rows=row_group_rows)
    committer = Committer(fs, layout, fingerprint, config_json, dims, tables)
    return NightOutput(fs, layout, ledger, committer, writer, lease)
