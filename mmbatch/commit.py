"""The commit: a night's files are published at once, and no committed result is lost.

1. **Reconcile**: one `videos` row per input: scored, failed (with the reason; a video that
   never came back is failed with `error_stage = "reconcile"`) or skipped.
2. **Keep what was committed**: a video that now failed, but whose result an earlier commit of
   the same date holds, keeps that result (its row says why); videos of an earlier commit of
   the date that this run was not given are carried over unchanged.
3. **Assemble** the night's next partitions under `_staging/<run_id>/publish/`: staged part
   files are linked or copied in; a part that also holds rows that must not be published
   (a video redone after a crash, a failure that keeps its earlier result) is rewritten without
   them; carried rows go to one file; then `videos.parquet` and `_SUCCESS`.
4. **Commit record**: `_runs/<run_id>.json` lists the exact files. Nothing is visible before it.
5. **Publish**: locally the assembled folder replaces the partition in one atomic rename
   (`renameat2(RENAME_EXCHANGE)` on Linux); on object stores the files are copied in and the
   superseded ones deleted. A publish interrupted after step 4 is finished by the next run of
   the date (`roll_forward`).
6. **State**: the state table takes the night's scored videos.
7. **Clean-up** (staging, superseded manifests marked): failures here are logged, never fatal.
"""

from __future__ import annotations

import copy
import ctypes
import datetime as dt
import json
import logging
import os
import posixpath
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mmbatch import schema, storage
from mmbatch.errors import MmbatchError
from mmbatch.layout import SUCCESS_MARKER, OutputLayout
from mmbatch.ledger import VideoOutcome
from mmbatch.trust import redact_text

log = logging.getLogger(__name__)
COMMIT_STEPS = ("assemble", "manifest", "publish", "state", "cleanup")


class CommitError(MmbatchError):
    """The commit failed at `step`; `committed` says whether the commit record was written."""

    def __init__(self, step: str, committed: bool, cause: BaseException):
        self.step, self.committed = step, committed
        where = "after the commit record was written (the next run of this date finishes publishing)" if committed \
            else "before anything was published (the staged work is kept: a rerun resumes)"
        super().__init__(f"commit failed while {step} {where}: {type(cause).__name__}: {str(cause)[:300]}")


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two local paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, exchange = -100, 2
    return fn(at_fdcwd, a.encode(), at_fdcwd, b.encode(), exchange) == 0


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Rows written by an older schema version, in today's: columns it lacked are null, types
    are cast (v1's fixed-size embedding lists to lists)."""
    n = table.num_rows
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type) for f in target]
    return pa.Table.from_arrays(columns, schema=target)


def read_manifest(fs, path: str) -> dict | None:
    """A manifest, or None (with a warning) when it is damaged: never fatal."""
    try:
        data = json.loads(fs.cat_file(path))
        if not isinstance(data, dict) or "run_id" not in data:
            raise ValueError("not a run manifest")
        return data
    except FileNotFoundError:
        return None
    except Exception as err:
        log.warning("skipping damaged run manifest %s: %s", path, err)
        return None


class Committer:
    def __init__(self, fs, layout: OutputLayout, fingerprint: str, config_json: str, dims: schema.EmbeddingDims):
        self.fs, self.layout, self.fingerprint = fs, layout, fingerprint
        self.videos_schema = schema.with_metadata(schema.file_schema(schema.VIDEOS_SCHEMA), config_json, dims)
        self.clips_schema = schema.with_metadata(schema.file_schema(schema.CLIPS_SCHEMA), config_json, dims)
        self.run_date = layout.run_date
        self.dims = dims

    # -- step 1 and 2 ---------------------------------------------------------------------------
    def videos_rows(self, refs: list, outcomes: dict[str, VideoOutcome], skipped: dict[str, dict]) -> list[dict]:
        rows = []
        for ref in refs:
            base = {"video_id": ref.video_id, "uri": ref.display_uri, "etag": ref.etag, "size_bytes": ref.size,
                    "model_fingerprint": self.fingerprint, "run_id": self.layout.run_id}
            if ref.video_id in skipped:
                prev = skipped[ref.video_id]
                rows.append({**base, "duration_s": None, "n_clips": 0, "status": "skipped", "error_stage": None,
                             "error": None, "decode_seconds": 0.0, "model_fingerprint": prev["model_fingerprint"],
                             "skipped_from": prev["run_id"]})
            elif (o := outcomes.get(ref.video_id)) is not None:
                rows.append({**base, "duration_s": o.duration_s, "n_clips": o.n_clips, "status": o.status,
                             "error_stage": o.error_stage, "error": redact_text(o.error) if o.error else None,
                             "decode_seconds": o.decode_seconds})
            else:
                rows.append({**base, "duration_s": None, "n_clips": 0, "status": "error", "error_stage": "reconcile",
                             "error": "video was never completed by the pipeline (worker lost or decode crashed)",
                             "decode_seconds": None})
        return rows

    def published_videos(self) -> dict[str, dict]:
        """The `videos` rows of the date as committed now (empty for a new date)."""
        if not self.fs.exists(self.layout.videos):
            return {}
        out = {}
        for path in sorted(self.fs.glob(posixpath.join(self.layout.videos, "*.parquet"))):
            for row in storage.read_parquet(self.fs, path).to_pylist():
                out[row["video_id"]] = row
        return out

    # -- the whole commit -----------------------------------------------------------------------
    def commit(self, refs: list, outcomes: dict[str, VideoOutcome], skipped: dict[str, dict],
               manifest_extra: dict[str, Any]) -> dict[str, Any]:
        step, committed = "assemble", False
        try:
            manifest = self._assemble(refs, outcomes, skipped, manifest_extra)
            step = "manifest"
            storage.write_bytes_atomic(self.fs, self.layout.manifest,
                                       json.dumps(manifest, indent=2, default=str).encode())
            committed = True
            step = "publish"
            self.publish(manifest["commit_id"])
            step = "state"
            self._update_state()
        except Exception as err:
            raise CommitError(step, committed, err) from err
        manifest["cleanup_warnings"] = self.cleanup(manifest)
        return manifest

    def _assemble(self, refs, outcomes, skipped, manifest_extra) -> dict[str, Any]:
        fs, lay = self.fs, self.layout
        rows = self.videos_rows(refs, outcomes, skipped)
        if len(rows) != len(refs) or len({r["video_id"] for r in rows}) != len(refs):
            raise RuntimeError(f"reconciliation failed: {len(refs)} inputs, {len(rows)} rows")
        previous = self.published_videos()
        input_ids = {r.video_id for r in refs}
        kept, carried = [], []
        for i, row in enumerate(rows):
            prev = previous.get(row["video_id"])
            if row["status"] == "error" and prev and prev["status"] == "ok" and (prev["n_clips"] or 0) > 0:
                rows[i] = {**prev, "error_stage": row["error_stage"],
                           "error": f"this run ({lay.run_id}) failed, so the result committed by run "
                                    f"{prev['run_id']} is kept: {row['error']}"}
                kept.append(row["video_id"])
        for vid, prev in sorted(previous.items()):
            if vid not in input_ids:  # committed earlier tonight from another input: never lost
                rows.append(prev)
                carried.append(vid)
        rows.sort(key=lambda r: r["video_id"])

        if fs.exists(lay.publish):
            fs.rm(lay.publish, recursive=True)  # a commit attempt that never wrote its record
        clips_dir, videos_dir = posixpath.join(lay.publish, "clips"), posixpath.join(lay.publish, "videos")
        fs.makedirs(clips_dir, exist_ok=True)
        fs.makedirs(videos_dir, exist_ok=True)
        files = self._stage_parts(outcomes, set(kept), clips_dir)
        carry_ids = [v for v in kept + carried if (previous[v]["n_clips"] or 0) > 0]
        if carry_ids:
            files.append(self._carry(carry_ids, clips_dir))
        storage.write_parquet(fs, posixpath.join(videos_dir, "videos.parquet"),
                     pa.Table.from_pylist([{k: r.get(k) for k in self.videos_schema.names} for r in rows],
                                          schema=self.videos_schema))
        commit_id = str(uuid.uuid4())
        for d in (clips_dir, videos_dir):
            storage.write_bytes_atomic(fs, posixpath.join(d, SUCCESS_MARKER), commit_id.encode())

        counts = {s: sum(1 for r in rows if r["video_id"] in input_ids and r["status"] == s)
                  for s in ("ok", "error", "skipped")}
        if sum(counts.values()) != len(refs):
            raise RuntimeError(f"reconciliation failed: {len(refs)} inputs vs {counts}")
        scored = [o for o in outcomes.values() if o.video_id in input_ids and o.video_id not in kept]
        scored_clips = sum(o.n_clips for o in scored)
        return {
            "run_id": lay.run_id, "commit_id": commit_id, "run_date": self.run_date.isoformat(),
            "model_fingerprint": self.fingerprint, "schema_version": schema.SCHEMA_VERSION,
            "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "counts": {"inputs": len(refs), "scored": counts["ok"] - len(kept), "failed": counts["error"] + len(kept),
                       "skipped": counts["skipped"], "clips": scored_clips, "kept_after_failure": len(kept),
                       "carried_over": len(carried)},
            "modalities": self._modality_counts(scored),
            "kept_after_failure": kept, "carried_over": carried,
            "outputs": {"clips": lay.clips, "videos": lay.videos, "clip_files": sorted(files),
                        "videos_file": lay.videos_file, "manifest": lay.manifest},
            **manifest_extra,
        }

    def _modality_counts(self, outcomes: list[VideoOutcome]) -> dict[str, dict[str, Any]]:
        """Per configured modality: clips scored, clips where it failed, and the failed share."""
        out = {}
        for m in schema.MODALITIES:
            if not getattr(self.dims, m):
                continue
            scored = sum(o.modalities.get(m, [0, 0])[0] for o in outcomes)
            failed = sum(o.modalities.get(m, [0, 0])[1] for o in outcomes)
            out[m] = {"scored": scored, "failed": failed,
                      "failed_fraction": round(failed / (scored + failed), 4) if scored + failed else 0.0}
        return out

    def _stage_parts(self, outcomes: dict[str, VideoOutcome], excluded: set[str], clips_dir: str) -> list[str]:
        """Link each needed staged part into the publish folder; rewrite those with extra rows."""
        wanted: dict[str, set[str]] = {}
        rows_wanted: dict[str, int] = {}
        totals: dict[str, int] = {}
        for o in outcomes.values():
            if o.video_id in excluded:
                continue
            for f, n, total in zip(o.files, o.file_rows, o.file_totals):
                wanted.setdefault(f, set()).add(o.video_id)
                rows_wanted[f] = rows_wanted.get(f, 0) + n
                totals[f] = total
        for name in sorted(wanted):
            src, dst = posixpath.join(self.layout.parts, name), posixpath.join(clips_dir, name)
            if rows_wanted[name] == totals[name]:
                self._link(src, dst)
            else:  # rows of videos that are not published (redone, or kept from before) share the file
                t = storage.read_parquet(self.fs, src)
                t = t.filter(pc.is_in(t["video_id"], value_set=pa.array(sorted(wanted[name]))))
                storage.write_parquet(self.fs, dst, t)
        return sorted(wanted)

    def _link(self, src: str, dst: str) -> None:
        if _is_local(self.fs):
            os.link(src, dst)  # the staged file stays for a resume until the commit is done
        else:
            self.fs.copy(src, dst)  # server-side copy on object stores

    def _carry(self, video_ids: list[str], clips_dir: str) -> str:
        """Rows committed earlier tonight that stay: read from the current partition, one file."""
        tables = []
        for path in sorted(self.fs.glob(posixpath.join(self.layout.clips, "*.parquet"))):
            t = storage.read_parquet(self.fs, path)
            t = t.filter(pc.is_in(t["video_id"], value_set=pa.array(video_ids)))
            if t.num_rows:
                tables.append(_conform(t, self.clips_schema))
        name = f"carried-{uuid.uuid5(uuid.NAMESPACE_URL, self.layout.run_id + '|' + '|'.join(video_ids))}.parquet"
        table = pa.concat_tables(tables) if tables else self.clips_schema.empty_table()
        storage.write_parquet(self.fs, posixpath.join(clips_dir, name), table)
        return name

    # -- step 5: publish (also the roll-forward) ------------------------------------------------
    def publish(self, commit_id: str) -> None:
        for table in ("clips", "videos"):
            staged = posixpath.join(self.layout.publish, table)
            target = self.layout.clips if table == "clips" else self.layout.videos
            if _is_local(self.fs):
                self._publish_local(staged, target, commit_id)
            else:
                self._publish_remote(staged, target)

    def _publish_local(self, staged: str, target: str, commit_id: str) -> None:
        if not os.path.isdir(staged):
            return  # published already
        marker = posixpath.join(staged, SUCCESS_MARKER)
        if not os.path.exists(marker) or open(marker).read() != commit_id:
            self.fs.rm(staged, recursive=True)  # the old partition, swapped out before a crash
            return
        os.makedirs(posixpath.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            os.rename(staged, target)
        elif _exchange(staged, target):  # one atomic step: readers see the old or the new night
            self.fs.rm(staged, recursive=True)
        else:  # no renameat2: the date is absent for an instant, never partial
            old = staged + ".old"
            os.rename(target, old)
            os.rename(staged, target)
            self.fs.rm(old, recursive=True)

    def _publish_remote(self, staged: str, target: str) -> None:
        if not self.fs.exists(staged):
            return
        new = [p for p in self.fs.find(staged) if posixpath.basename(p) != SUCCESS_MARKER]
        names = {posixpath.basename(p) for p in new}
        for p in new:
            self.fs.copy(p, posixpath.join(target, posixpath.basename(p)))
        if self.fs.exists(target):
            for p in self.fs.find(target):
                if posixpath.basename(p) not in names:
                    self.fs.rm(p)  # superseded: gone only once the new files are in place
        self.fs.copy(posixpath.join(staged, SUCCESS_MARKER), posixpath.join(target, SUCCESS_MARKER))
        self.fs.rm(staged, recursive=True)

    def roll_forward(self) -> list[str]:
        """Finish any run of this date whose commit record was written but whose publish,
        state update or clean-up was interrupted; discard half-assembled folders of runs that
        never wrote one (their staged parts and ledger stay, for a resume)."""
        done = []
        staging_root = posixpath.dirname(self.layout.staging)
        if not self.fs.exists(staging_root):
            return done
        for path in sorted(self.fs.ls(staging_root, detail=False)):
            run_id = posixpath.basename(path.rstrip("/"))
            publish = posixpath.join(path, "publish")
            if not run_id.startswith(self.run_date.isoformat() + "_") or not self.fs.exists(publish):
                continue
            manifest = read_manifest(self.fs, posixpath.join(self.layout.runs, f"{run_id}.json"))
            other = copy.copy(self)
            other.layout = OutputLayout(self.layout.root, self.run_date, run_id)
            if manifest is None or self._assembly_uncommitted(publish, manifest.get("commit_id")):
                self.fs.rm(publish, recursive=True)
                continue
            log.warning("finishing the interrupted commit of run %s", run_id)
            other.publish(manifest["commit_id"])
            other._update_state()
            other.cleanup(manifest)
            done.append(run_id)
        return done

    def _assembly_uncommitted(self, publish: str, commit_id: str | None) -> bool:
        """True when publish/ holds a folder that is not the committed one (an attempt that
        crashed while assembling). No folder left means publishing finished."""
        for table in ("clips", "videos"):
            folder = posixpath.join(publish, table)
            if not self.fs.exists(folder):
                continue
            try:
                if self.fs.cat_file(posixpath.join(folder, SUCCESS_MARKER)).decode() == commit_id:
                    continue
            except FileNotFoundError:
                pass
            return True
        return False

    # -- steps 6 and 7 --------------------------------------------------------------------------
    def _update_state(self) -> None:
        from mmbatch.lock import Lease
        from mmbatch.state import update_state

        lease = Lease(self.fs, self.layout.state_lock, self.layout.run_id, ttl_s=120, what="the state table")
        lease.acquire_waiting(timeout_s=300)
        try:
            update_state(self.fs, self.layout)
        finally:
            lease.release()

    def cleanup(self, manifest: dict[str, Any]) -> list[str]:
        warnings = []
        try:
            self._mark_superseded(manifest)
        except Exception as err:
            warnings.append(f"marking superseded manifests: {err}")
        try:
            if self.fs.exists(self.layout.staging):
                self.fs.rm(self.layout.staging, recursive=True)
            staging_root = posixpath.dirname(self.layout.staging)
            if self.fs.exists(staging_root) and not self.fs.ls(staging_root):
                self.fs.rm(staging_root, recursive=True)
        except Exception as err:
            warnings.append(f"removing {self.layout.staging}: {err}")
        for w in warnings:
            log.warning("clean-up after the commit: %s (the run is committed)", w)
        return warnings

    def _mark_superseded(self, manifest: dict[str, Any]) -> None:
        prefix = posixpath.join(self.layout.runs, self.run_date.isoformat() + "_")
        for path in self.fs.glob(prefix + "*.json"):
            if path == self.layout.manifest:
                continue
            other = read_manifest(self.fs, path)
            if other is None or other.get("superseded_by"):
                continue
            other["superseded_by"] = manifest["run_id"]
            other["superseded_at"] = manifest["committed_at"]
            storage.write_bytes_atomic(self.fs, path, json.dumps(other, indent=2, default=str).encode())
