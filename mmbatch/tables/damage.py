"""Which of a table format's own files are damaged: the output's files are untrusted input.

Called when a table's library fails to read its log or metadata, to tell a damaged file (a person
must restore it: exit 2, the file named) from a store that does not answer (a retry may pass); and,
for Iceberg, before pyiceberg reads its Avro files at all (its native decoder can crash the process
on a garbled one). Each check reads the file whole and parses only what proves it intact; a read
that the store fails is raised as it is (not damage: a retry may pass); nothing here repairs.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re

from mmbatch import storage

_DELTA_COMMIT = re.compile(r"\d{20}\.json")
_DELTA_CHECKPOINT = re.compile(r"\d{20}\.checkpoint(\.\d+\.\d+)?\.parquet")


def delta_damaged(fs, log_dir: str) -> list[str]:
    """A Delta log's commit files that are empty or not JSON lines, checkpoints whose footer cannot
    be read, and the versions missing after the last checkpoint (the log must be whole from there)."""
    if not fs.exists(log_dir):
        return []
    bad, versions, checkpoints = [], set(), []
    for path in sorted(fs.ls(log_dir, detail=False)):
        name = posixpath.basename(path)
        if _DELTA_COMMIT.fullmatch(name):
            versions.add(int(name[:20]))
            if not _json_lines(fs, path):
                bad.append(path)
        elif _DELTA_CHECKPOINT.fullmatch(name):
            checkpoints.append(int(name[:20]))
            bad += storage.unreadable_parquet(fs, [path])
    if versions:
        top = max(versions)
        last_checkpoint = max((c for c in checkpoints if c <= top), default=-1)
        bad += [posixpath.join(log_dir, f"{v:020d}.json") for v in range(last_checkpoint + 1, top + 1) if v not in versions]
    return bad


def iceberg_metadata_files(fs, folder: str) -> list[str]:
    """An Iceberg table's `<n>-<uuid>.metadata.json` files, oldest first."""
    names = fs.glob(posixpath.join(folder, "*.metadata.json")) if fs.exists(folder) else []
    return sorted((p for p in names if re.match(r"\d+-", posixpath.basename(p))),
                  key=lambda p: int(posixpath.basename(p).split("-", 1)[0]))


def iceberg_damaged(fs, folder: str, catalog_db: str | None = None) -> list[str]:
    """The embedded SQLite catalog when SQLite's own check fails; metadata files that are not JSON;
    Avro manifests and manifest lists that are not whole."""
    from concurrent.futures import ThreadPoolExecutor

    bad = []
    if catalog_db and os.path.exists(catalog_db) and os.path.getsize(catalog_db) and not _sqlite_whole(catalog_db):
        bad.append(catalog_db)
    paths = [p for p in (sorted(fs.glob(posixpath.join(folder, "*"))) if fs.exists(folder) else [])
             if p.endswith((".metadata.json", ".avro"))]

    def whole(path: str) -> bool:
        return _is_json(fs, path) if path.endswith(".json") else _is_whole_avro(fs, path)

    with ThreadPoolExecutor(max_workers=min(16, len(paths) or 1)) as pool:
        return bad + [p for p, ok in zip(paths, pool.map(whole, paths)) if not ok]


def _json_lines(fs, path: str) -> bool:
    """A Delta commit file: one or more lines, each a JSON object."""
    try:
        lines = [line for line in fs.cat_file(path).decode().splitlines() if line.strip()]
        return bool(lines) and all(isinstance(json.loads(line), dict) for line in lines)
    except (ValueError, UnicodeDecodeError, FileNotFoundError):  # another OSError: the store, not the file
        return False


def _is_json(fs, path: str) -> bool:
    try:
        return isinstance(json.loads(fs.cat_file(path)), dict)
    except (ValueError, UnicodeDecodeError, FileNotFoundError):
        return False


def _sqlite_whole(path: str) -> bool:
    """SQLite's own quick check of the catalog file, opened read-only."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.Error:
        return False


def _is_whole_avro(fs, path: str) -> bool:
    """An Avro object container file whose last 16 bytes are the sync marker its header declares,
    so a truncated one fails too. Hand-written (a dozen lines): pyiceberg's reader fails only later,
    mid-file, with errors that do not name the file."""
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return False
    try:
        if data[:4] != b"Obj\x01":
            return False
        pos = 4
        while True:  # the header's metadata map: blocks of (count, then count x (key, value)), 0 ends it
            count, pos = _zigzag(data, pos)
            if count == 0:
                break
            if count < 0:
                _, pos = _zigzag(data, pos)  # a negative count is followed by the block's size
            for _ in range(abs(count) * 2):
                size, pos = _zigzag(data, pos)
                pos += size
        sync = data[pos: pos + 16]
        return len(sync) == 16 and len(data) >= pos + 16 and data.endswith(sync)
    except IndexError:
        return False


def _zigzag(data: bytes, pos: int) -> tuple[int, int]:
    """An Avro long (zigzag varint) at `pos`: (value, position after it)."""
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80 or shift > 63:
            return (value >> 1) ^ -(value & 1), pos
