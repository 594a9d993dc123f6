"""Where everything lives under an output root (local path or any fsspec URI).

    clips/run_date=D/part-*.parquet      clip rows, many videos a file; _SUCCESS once published
    videos/run_date=D/videos.parquet     one row per input video of the night
    state/state.parquet                  one row per video ever scored ok (the skip check)
    _runs/<run_id>.json                  run manifests: the commit record, written before publishing
    _locks/run_date=D.json               the lease of the run that holds the night
    _staging/<run_id>/                   in-flight: parts/ (clip and records files), inputs-<attempt>.parquet,
                                         publish/, commit.json (Delta/Iceberg: the record before the table commit)
"""

from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import dataclass

SUCCESS_MARKER = "_SUCCESS"


def run_id_for(run_date: dt.date, fingerprint: str) -> str:
    return f"{run_date.isoformat()}_{fingerprint[:8]}"


@dataclass(frozen=True)
class OutputLayout:
    root: str  # a path inside the output filesystem, no trailing slash
    run_date: dt.date
    run_id: str

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def partition(self) -> str:
        return f"run_date={self.run_date.isoformat()}"

    @property
    def clips(self) -> str:
        return self._join("clips", self.partition)

    @property
    def videos(self) -> str:
        return self._join("videos", self.partition)

    def partition_of(self, table: str) -> str:
        """The night's partition of the `clips` or `videos` table."""
        return {"clips": self.clips, "videos": self.videos}[table]

    @property
    def videos_file(self) -> str:
        return posixpath.join(self.videos, "videos.parquet")

    @property
    def runs(self) -> str:
        return self._join("_runs")

    @property
    def manifest(self) -> str:
        """This run's record: `_runs/<run_id>.json`, the commit record."""
        return self.run_record(self.run_id)

    def run_record(self, run_id: str) -> str:
        return self._join("_runs", f"{run_id}.json")

    def replaced_record(self, commit_id: str, suffix: str = ".json") -> str:
        """Where an earlier commit of this run id keeps its record (and report) once a rerun of the
        date replaced it: `_runs/<run_id>/<commit_id>.json`; `_runs/<run_id>.json` is the current one."""
        return self._join("_runs", self.run_id, f"{commit_id}{suffix}")

    def of_run(self, run_id: str) -> "OutputLayout":
        """The layout of another run of the same output and date."""
        return OutputLayout(self.root, self.run_date, run_id)

    @property
    def lock(self) -> str:
        return self._join("_locks", f"{self.partition}.json")

    @property
    def state_lock(self) -> str:
        return self._join("_locks", "state.json")

    @property
    def state(self) -> str:
        return self._join("state", "state.parquet")

    @property
    def staging(self) -> str:
        return self._join("_staging", self.run_id)

    @property
    def parts(self) -> str:
        """Where the write stage puts clip files while the run is in flight."""
        return posixpath.join(self.staging, "parts")

    def inputs_file(self, attempt: str) -> str:
        """The identities (etag, size) of the inputs one attempt of the run was given."""
        return posixpath.join(self.staging, f"inputs-{attempt}.parquet")

    @property
    def intent(self) -> str:
        """Delta/Iceberg: the run record between the assembly and the table commits."""
        return posixpath.join(self.staging, "commit.json")

    @property
    def publish(self) -> str:
        """The next content of the night's partitions, assembled before the commit."""
        return posixpath.join(self.staging, "publish")
