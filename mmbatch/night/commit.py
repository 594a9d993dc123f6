"""The commit: a night's files are published at once, and no committed result is lost.

`Committer` is the sequence of steps; each step lives in a module of its own.

1. **Reconcile** (reconcile.py): one `videos` row per input: scored, failed (with the reason; a video that
   never came back is failed with `error_stage = "reconcile"`) or skipped.
2. **Keep what was committed** (reconcile.py): a video that now failed, but whose result an earlier commit of
   the same date holds, keeps that result (its row says why); videos of an earlier commit of
   the date that this run was not given are carried over unchanged.
3. **Assemble** (assemble.py) the night's next partitions under `_staging/<run_id>/publish/`: staged part
   files are linked or copied in; a part that also holds rows that must not be published
   (a video redone after a crash, a failure that keeps its earlier result) is rewritten without
   them; carried rows go to one file; then `videos.parquet` and `_SUCCESS`.
4. **Commit record** (runs.py): `_runs/<run_id>.json` lists the exact files. Nothing is visible before it.
   For Delta and Iceberg the table commit of step 5 is the commit: the record is written to
   `_staging/<run_id>/commit.json` first (the intent) and to `_runs/` once the tables committed,
   with their versions.
5. **Publish** (publish.py, one Publisher for the output's format and storage): locally the assembled
   folder replaces the partition in one atomic rename (`renameat2(RENAME_EXCHANGE)` on Linux);
   on object stores the files are copied in and the superseded ones deleted; for a table format,
   one commit a table on the version read in step 2. A publish interrupted after its commit
   point is finished by the next run of the date (`roll_forward`); a table that moved on
   meanwhile (another run committed the date) refuses the commit: nothing is committed and the
   staged work stays for a rerun.
6. **State** (state.py): the state table takes the night's scored videos.
7. **Clean-up** (staging, superseded manifests marked): failures here are logged, never fatal;
   they and the night's report are added to the run record, so the record on disk is the
   one the run returns.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any, Callable

from mmbatch import schema, storage
from mmbatch.errors import DamagedOutputError, MmbatchError, short_reason
from mmbatch.night import runs
from mmbatch.night.assemble import PublishTarget, assemble, is_uncommitted, published_videos
from mmbatch.night.lock import LeaseLostError
from mmbatch.night.publish import publisher_for
from mmbatch.night.reconcile import Tonight, reconcile
from mmbatch.output.layout import OutputLayout
from mmbatch.output.records import VideoOutcome
from mmbatch.tables.tables import RUN_RECORD, TABLE_LOG, ParquetTables, TableConflictError, Tables

log = logging.getLogger(__name__)
COMMIT_STEPS = ("assemble", "manifest", "publish", "state", "cleanup")
STATE_NOT_UPDATED = "the state table was not updated"


class CommitError(MmbatchError):
    """The commit failed at `step`; `committed` says whether the commit record was written."""

    def __init__(self, step: str, committed: bool, cause: BaseException):
        self.step, self.committed = step, committed
        where = "after the commit record was written (the next run of this date finishes publishing)" if committed \
            else "before anything was published (the staged work is kept: a rerun resumes)"
        super().__init__(f"commit failed while {step} {where}: {type(cause).__name__}: {str(cause)[:300]}")


class Committer:
    def __init__(self, fs, layout: OutputLayout, fingerprint: str, config_json: str, dims: schema.EmbeddingDims,
                 tables: Tables | None = None):
        self.fs, self.layout, self.fingerprint, self.dims = fs, layout, fingerprint, dims
        self.videos_schema = schema.with_metadata(schema.file_schema(schema.VIDEOS_SCHEMA), config_json, dims)
        self.clips_schema = schema.with_metadata(schema.file_schema(schema.CLIPS_SCHEMA), config_json, dims)
        self.tables = tables or ParquetTables(fs, layout.root, layout.root)
        self.publisher = publisher_for(fs, self.tables)  # chosen once: the format, local folders or an object store
        self.target = PublishTarget(fs, layout, self.publisher, self.tables, self.clips_schema, self.videos_schema)

    def commit(self, refs: list, outcomes: dict[str, VideoOutcome], skipped: dict[str, dict],
               manifest_extra: dict[str, Any], guard: Callable[[], None] | None = None) -> dict[str, Any]:
        """Steps 1-7; returns the run record as written (clean-up warnings included). `guard()` is
        called just before the commit record is written (the run's lease check): if it raises,
        nothing is committed and its error goes up as it is."""
        lay, tables = self.layout, self.tables
        step, committed = "assemble", False
        try:
            base = tables.pin()  # what this commit reads and builds on
            previous = published_videos(tables, lay)
            night = reconcile(Tonight(refs, outcomes, skipped), previous, self.fingerprint, lay.run_id, self.dims)
            done = assemble(self.target, night, outcomes, previous)
            manifest = runs.build_run_record(lay, self.fingerprint, done.commit_id, night, done.clip_files,
                                             {"format": tables.format, **manifest_extra})
            if tables.commit_point == TABLE_LOG:
                manifest["table_base"] = base
            step = "manifest"
            runs.keep_replaced(self.fs, lay, manifest)  # an earlier commit of this run id keeps its record
            if guard is not None:
                guard()
            committed = self._record(manifest)
            step = "publish"
            committed = self._publish(lay, manifest) or committed
        except (LeaseLostError, TableConflictError):
            raise
        except DamagedOutputError as err:  # a file the date holds is unreadable: a person must look (exit 2)
            if committed:
                raise CommitError(step, committed, err) from err
            raise DamagedOutputError(f"{err}; nothing of this run was committed and its staged work is kept") from None
        except Exception as err:
            raise CommitError(step, committed, err) from err
        finally:
            tables.unpin()
        self.finish(lay, manifest)
        return manifest

    def finish(self, layout: OutputLayout, manifest: dict[str, Any], keep_parts: bool = False) -> None:
        """Steps 6-7, after the commit point, for this run and for a run whose commit was interrupted
        (roll_forward): the state table, then clean-up, and what failed noted in the run's record.
        Nothing here is fatal, since the night is committed: a state table left behind is caught up
        by the next run that reads it (its record names a run the state has not merged), and the
        record says `state_updated: false`."""
        warnings = []
        try:
            self.update_state(layout)
        except Exception as err:
            manifest["state_updated"] = False
            warnings.append(f"{STATE_NOT_UPDATED}: {short_reason(err, 300)}")
            log.warning("%s: %s (the run is committed; the next run catches the state table up)",
                        STATE_NOT_UPDATED, short_reason(err, 300))
        warnings += self.cleanup(layout, manifest, keep_parts)
        if warnings:
            self.amend(manifest, layout, cleanup_warnings=warnings)

    def _record(self, manifest: dict[str, Any]) -> bool:
        """Write the commit record (plain Parquet: the commit point, True) or the intent (tables)."""
        if self.tables.commit_point == RUN_RECORD:
            runs.write_run_record(self.fs, self.layout, manifest)
            return True
        runs.write_intent(self.fs, self.layout, manifest)
        return False

    def _publish(self, layout: OutputLayout, manifest: dict[str, Any]) -> bool:
        """Publish; for a table format, the tables' commits and then the run record (True once committed).
        A table that moved on: nothing committed, the intent and assembly go, the staged work stays."""
        try:
            versions = self.publisher.publish(layout, manifest)
        except TableConflictError:
            runs.drop_intent(self.fs, layout)
            raise
        if self.tables.commit_point == RUN_RECORD:
            return True
        manifest["table_versions"] = versions
        runs.write_run_record(self.fs, layout, manifest)
        runs.drop_intent(self.fs, layout)
        return True

    def amend(self, manifest: dict[str, Any], layout: OutputLayout | None = None, **notes) -> None:
        """Add notes made after the commit (clean-up warnings, the report) to the run record (of
        `layout`'s run: this run's by default), so the record on disk is the one the run returns.
        Never fatal: the night is committed."""
        manifest.update(notes)
        try:
            runs.write_run_record(self.fs, layout or self.layout, manifest)
        except Exception as err:
            log.warning("could not add %s to the run record: %s (the run is committed)", ", ".join(notes), err)

    def roll_forward(self) -> list[str]:
        """Finish any run of this date whose commit record was written but whose publish,
        state update or clean-up was interrupted; discard half-assembled folders of runs that
        never wrote one (their staged parts and ledger stay, for a resume)."""
        done = []
        staging_root = posixpath.dirname(self.layout.staging)
        if not self.fs.exists(staging_root):
            return done
        for path in sorted(self.fs.ls(staging_root, detail=False)):
            other = self.layout.of_run(posixpath.basename(path.rstrip("/")))
            if not other.run_id.startswith(self.layout.run_date.isoformat() + "_") or not self.fs.exists(other.publish):
                continue
            record = runs.pending_record(self.fs, other, intent_first=self.tables.commit_point == TABLE_LOG)
            if record is None or is_uncommitted(self.fs, other, record.get("commit_id")):
                self.fs.rm(other.publish, recursive=True)
                continue
            log.warning("finishing the interrupted commit of run %s", other.run_id)
            try:
                self._publish(other, record)
            except TableConflictError as err:
                log.warning("run %s was not committed: %s (its staged work stays for a rerun)", other.run_id, err)
                self.fs.rm(other.publish, recursive=True)
                continue
            # This run's own record (a retry of the same night): its staged parts stay, so the retry
            # resumes every video the committed attempt scored instead of scoring the night again.
            self.finish(other, record, keep_parts=other.run_id == self.layout.run_id)
            done.append(other.run_id)
        return done

    def update_state(self, layout: OutputLayout) -> None:
        from mmbatch.night.state import update_state_held

        update_state_held(self.fs, layout, self.tables)

    def cleanup(self, layout: OutputLayout, manifest: dict[str, Any], keep_parts: bool = False) -> list[str]:
        """Step 7: superseded records marked, staging removed (`keep_parts`: all but the staged parts,
        records and inputs, for a resume), abandoned temporary files removed; failures are warnings,
        never fatal."""
        warnings = []
        try:
            runs.mark_superseded(self.fs, layout, manifest)
        except Exception as err:
            warnings.append(f"marking superseded manifests: {err}")
        try:
            storage.remove_abandoned_temps(self.fs, [layout.runs, posixpath.dirname(layout.state),
                                                     posixpath.dirname(layout.lock)])
            if keep_parts:
                for path in (layout.publish, layout.intent):
                    if self.fs.exists(path):
                        self.fs.rm(path, recursive=True)
            elif self.fs.exists(layout.staging):
                self.fs.rm(layout.staging, recursive=True)
            staging_root = posixpath.dirname(layout.staging)
            if self.fs.exists(staging_root) and not self.fs.ls(staging_root):
                self.fs.rm(staging_root, recursive=True)
        except Exception as err:
            warnings.append(f"removing {layout.staging}: {err}")
        for w in warnings:
            log.warning("clean-up after the commit: %s (the run is committed)", w)
        return warnings
