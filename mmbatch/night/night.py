"""One face for a night: `Night` is opened once on an output, a run date and a fingerprint, and
owns what the driver's side of a run needs — the filesystem, the layout, the lease, the tables,
the ledger and the committer — so a run (mmbatch/pipeline/run.py), the fake nights of the tests
and the scale benchmark all drive a night the same way:

    night = Night(output_uri, run_date, fingerprint, storage_options=..., output=config.output)
    night.take()                       # the lease: the first write to the output (or .probe())
    night.open(refs, dims)             # tables, ledger, committer, the write stage's arguments
    night.roll_forward()               # finish an interrupted commit of the date
    work = night.sort(force=False)     # resumed, skipped, refused, to do
    ... the graph writes clips; its completion records go to night.ledger ...
    record = night.commit(extra)       # the commit point, then state and clean-up
    night.report(record)               # the HTML report, named in the record
    night.release()
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from mmbatch import storage
from mmbatch.config import RunConfig
from mmbatch.errors import short_reason
from mmbatch.night.commit import Committer
from mmbatch.night.ledger import RunLedger
from mmbatch.night.lock import Lease, LockedError
from mmbatch.output.layout import OutputLayout, run_id_for
from mmbatch.output.records import VideoOutcome
from mmbatch.output.writer import WriterArgs
from mmbatch.schema import EmbeddingDims
from mmbatch.trust import redact_uri

# A file where a folder belongs, or no permission: a person must act (exit 2); a full disk or a
# store that does not answer may pass (exit 1).
_OUTPUT_MISTAKES = (NotADirectoryError, FileExistsError, IsADirectoryError, PermissionError)
DEFAULT_LEASE_TTL_S = RunConfig.model_fields["lock_ttl_s"].default  # run.lock_ttl_s's default


@dataclass
class Work:
    """The night's inputs sorted before any video is read."""

    resumed: dict = field(default_factory=dict)  # video id → outcome finished by an earlier attempt of this run
    skipped: dict = field(default_factory=dict)  # video id → state row: scored earlier from the same content and models
    refused: list = field(default_factory=list)  # VideoRef refused or unreadable: failed with the reason, never read
    todo: list = field(default_factory=list)  # VideoRef to score now


class Night:
    """One night (run date × fingerprint) of one output, from the lease to the report."""

    def __init__(self, output_uri: str, run_date: dt.date, fingerprint: str, *, storage_options: dict | None = None,
                 output=None, lease_ttl_s: float = DEFAULT_LEASE_TTL_S):
        """`output`: the OutputConfig (its format and file sizes; None: plain Parquet defaults)."""
        self.output_uri, self.fingerprint, self.storage_options = output_uri, fingerprint, storage_options
        self.output_config = output
        self.fs, root = storage.filesystem(output_uri, storage_options)
        self.layout = OutputLayout(root.rstrip("/"), run_date, run_id_for(run_date, fingerprint))
        self.lease = Lease(self.fs, self.layout.lock, self.layout.run_id, ttl_s=lease_ttl_s,
                           what=f"run date {run_date.isoformat()} of {redact_uri(output_uri)}")
        self.held = False
        self.abandoned = False  # released: a take still under way gives the lease back at once
        self.refs: list = []
        self.work = Work()
        self.tables = self.ledger = self.committer = self.writer = None

    @property
    def run_id(self) -> str:
        return self.layout.run_id

    # -- the lease -------------------------------------------------------------------------------
    def take(self) -> Night:
        """Take the lease on the night: the first write to the output, so an unwritable output
        fails here, before any video work (LockedError: another run holds it)."""
        self._on_output(self.lease.acquire)
        self.held = True
        if self.abandoned:  # released while the lease was being taken (a stop during the plan): give it back
            self.release()
        return self

    def probe(self) -> Night:
        """Prove the lease could be taken (a dry run), without taking it."""
        self._on_output(self.lease.probe)
        return self

    def _on_output(self, step) -> None:
        from mmbatch.errors import OutputError, OutputMistakeError

        try:
            step()
        except LockedError:
            raise
        except Exception as err:
            kind = OutputMistakeError if isinstance(err, _OUTPUT_MISTAKES) else OutputError
            raise kind(f"cannot write to the output {redact_uri(self.output_uri)}: {short_reason(err, 300)}") from None

    def release(self) -> None:
        """Give the lease back, now or, if it is being taken meanwhile (another thread), once taken."""
        self.abandoned = True
        if self.held:
            self.lease.release()
            self.held = False

    # -- the night's objects ---------------------------------------------------------------------
    def open(self, refs: list, dims: EmbeddingDims, *, config_json: str = "{}", row_group_rows: int = 2048,
             attempt: str | None = None) -> Night:
        """The output's tables in their format, the ledger over `refs` (VideoRef), the committer and
        the write stage's arguments of one attempt."""
        from mmbatch.tables.formats import open_tables

        self.refs = refs
        self.tables = open_tables(self.output_uri, self.storage_options, self.output_config)
        self.ledger = RunLedger(self.fs, self.layout, {r.video_id: r for r in refs}, attempt)
        self.writer = WriterArgs(output=self.output_uri, storage_options=self.storage_options,
                                 parts_dir=self.layout.parts, run_id=self.layout.run_id, fingerprint=self.fingerprint,
                                 dims=dims, config_json=config_json, attempt=self.ledger.attempt,
                                 row_group_rows=row_group_rows)
        self.committer = Committer(self.fs, self.layout, self.fingerprint, config_json, dims, self.tables)
        return self

    def roll_forward(self) -> list[str]:
        """Finish any run of this date whose commit was interrupted after its commit point."""
        return self.committer.roll_forward()

    def sort(self, *, force: bool = False) -> Work:
        """The inputs sorted: resumed from this run's staged work, skipped (scored on an earlier
        night from the same content and models), refused (failed with the reason, never read), and
        to do. `force`: nothing resumed or skipped."""
        from mmbatch.night.state import skipped_videos

        resumed = self.ledger.load() if not force else {}
        refused = [r for r in self.refs if r.error]
        for ref in refused:
            self.ledger.done[ref.video_id] = VideoOutcome(ref.video_id, "error", n_clips=0, duration_s=None,
                                                          decode_seconds=0.0, error_stage="input", error=ref.error,
                                                          etag=ref.etag, size_bytes=ref.size_bytes)
        skipped = {} if force else skipped_videos(self.fs, self.layout, self.tables, self.refs, resumed,
                                                  self.fingerprint)
        todo = [r for r in self.refs if r.video_id not in self.ledger.done and r.video_id not in skipped]
        self.work = Work(resumed, skipped, refused, todo)
        return self.work

    # -- during the night ------------------------------------------------------------------------
    def progress(self, interval_s: float, scored=None, listener=None):
        """The progress line's reporter over the videos to do (not started); `listener` gets each
        line's figures."""
        from mmbatch.night.progress import ProgressReporter

        return ProgressReporter(self.ledger, len(self.work.todo), interval_s, scored, listener)

    @staticmethod
    def degraded_reasons(record: dict, run_config) -> list[str]:
        """Why a committed night counts as degraded (exit 3), most serious first; [] when it is not
        (the rule of night/runs.py, which the report reads too)."""
        from mmbatch.night.runs import degraded_reasons

        return degraded_reasons(record, run_config.max_failed_fraction, run_config.max_modality_failed_fraction)

    # -- the commit ------------------------------------------------------------------------------
    def commit(self, extra: dict | None = None) -> dict:
        """Commit the night: every input accounted for, published at once; returns the run record
        as written. A held lease is checked just before the commit point (a lapsed or lost lease
        never commits)."""
        guard = self.lease.check if self.held else None
        return self.committer.commit(self.refs, self.ledger.done, self.work.skipped, extra or {}, guard=guard)

    def report(self, record: dict) -> None:
        """The night's HTML report next to its run record, which then names it; a report is never
        a reason to fail the night (its failure is noted in the record)."""
        import logging

        from mmbatch.readers.report import write_report

        try:
            report = write_report(self.output_uri, self.layout.run_date, self.storage_options,
                                  output_config=self.output_config)
        except Exception as err:
            logging.getLogger(__name__).warning("run report not written: %s", short_reason(err, 300))
            self.committer.amend(record, cleanup_warnings=[*record["cleanup_warnings"],
                                                           f"run report: {short_reason(err, 300)}"])
            return
        self.committer.amend(record, report=report)


def record_json(config) -> str:
    """The config as the night's files carry it (secrets redacted, keys sorted)."""
    return json.dumps(config.redacted(), sort_keys=True)
