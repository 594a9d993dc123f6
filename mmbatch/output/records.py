"""Typed records at the driver's boundary: what the write stage reports, how a video ended, and
the `videos` row the commit writes. Workers exchange numpy column dicts; these classes are how
the driver reads them (`from_columns`, `from_dict`) and writes them back (`to_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from mmbatch.schema import COLUMNS, MODALITIES


@dataclass
class ModalityCounts:
    """Clips of a video (or a night) where a modality was scored, and where it failed."""

    scored: int = 0
    failed: int = 0

    def add(self, other: ModalityCounts) -> None:
        self.scored += other.scored
        self.failed += other.failed

    @property
    def failed_fraction(self) -> float:
        tried = self.scored + self.failed
        return round(self.failed / tried, 4) if tried else 0.0


@dataclass(frozen=True)
class CompletionRecord:
    """One write stage report: this many rows of one (video, chunk) landed in `file` ("" when
    none of them was a clip row), out of `expected_rows` rows that chunk has."""

    video_id: str
    chunk_index: int
    n_chunks: int
    expected_rows: int
    rows: int  # rows of the chunk in this bundle
    clip_rows: int  # of which clip rows (written to `file`)
    ok_rows: int
    file: str
    file_rows: int  # all rows of `file`
    duration_s: float
    decode_seconds: float
    error_stage: str
    error: str
    attempt: str
    modalities: dict[str, ModalityCounts] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str, int]:
        """Identifies a report within its video: a retried write reports the same key again."""
        return self.chunk_index, self.file, self.rows

    @classmethod
    def from_columns(cls, columns: dict[str, np.ndarray]) -> list[CompletionRecord]:
        """The records of one write (numpy columns, as the write stage returns and stages them)."""
        n = len(columns["video_id"])
        attempts = columns.get("attempt", np.full(n, ""))
        present = [m for m in MODALITIES if COLUMNS[m].scored in columns]
        return [cls(
            video_id=str(columns["video_id"][i]), chunk_index=int(columns["chunk_index"][i]),
            n_chunks=int(columns["n_chunks"][i]), expected_rows=int(columns["expected_rows"][i]),
            rows=int(columns["rows"][i]), clip_rows=int(columns["clip_rows"][i]), ok_rows=int(columns["ok_rows"][i]),
            file=str(columns["file"][i]), file_rows=int(columns["file_rows"][i]),
            duration_s=float(columns["duration_s"][i]), decode_seconds=float(columns["decode_seconds"][i]),
            error_stage=str(columns["error_stage"][i]), error=str(columns["error"][i]), attempt=str(attempts[i]),
            modalities={m: ModalityCounts(int(columns[COLUMNS[m].scored][i]), int(columns[COLUMNS[m].failed][i]))
                        for m in present},
        ) for i in range(n)]


@dataclass
class VideoOutcome:
    """How one video of this run ended, and where its clip rows were staged."""

    video_id: str
    status: str  # ok (at least one clip scored) | error
    n_clips: int  # clip rows staged (ok and error clips)
    duration_s: float | None
    decode_seconds: float
    error_stage: str | None
    error: str | None
    etag: str = ""
    size_bytes: int = 0
    files: list[str] = field(default_factory=list)  # staged part files holding its rows
    file_rows: list[int] = field(default_factory=list)  # its rows in each of them
    file_totals: list[int] = field(default_factory=list)  # all rows of each of them
    modalities: dict[str, ModalityCounts] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoRow:
    """One row of the `videos` table (schema.VIDEOS_SCHEMA, the partition key left out)."""

    video_id: str
    uri: str
    etag: str
    size_bytes: int
    duration_s: float | None
    n_clips: int
    status: str  # ok | error | skipped
    error_stage: str | None
    error: str | None
    decode_seconds: float | None
    model_fingerprint: str
    run_id: str
    skipped_from: str | None = None  # a skipped video: the run that scored it (not a column)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> VideoRow:
        """A row as read from a committed `videos` file (other keys, such as run_date, ignored)."""
        return cls(**{f.name: row.get(f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _VIDEO_ROW_FIELDS}

    def replace(self, **changes) -> VideoRow:
        from dataclasses import replace

        return replace(self, **changes)

    @property
    def has_clips(self) -> bool:
        return (self.n_clips or 0) > 0


_VIDEO_ROW_FIELDS = tuple(f.name for f in fields(VideoRow))
