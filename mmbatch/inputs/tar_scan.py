"""A tar header scan whose work is bounded by the shard's bytes, however its headers lie.

Python's `tarfile` trusts each header's size: a header claiming 500 GiB in a 100 KB shard sends
the next read 500 GiB past the end, and a reader that steps over unreadable blocks from there
takes about a billion steps. This scan reads headers itself (`TarInfo.frombuf` checks each
checksum and decodes base-256 sizes) and treats any header whose data would run past the end
of the object as corrupt: the scan resumes at the next block, looking for the next header with
a valid checksum, and the span it skipped is a corrupt region.

Bound: the scan only moves forward. Every 512-byte block is read once, as a candidate header or
as the data of a GNU long-name or pax header (capped at MAX_META_BYTES), so the reads and the
bytes read are linear in the shard's size. Member data is never read.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = tarfile.BLOCKSIZE
MAX_META_BYTES = 1 << 20  # a GNU long name or a pax header larger than this is corrupt
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


@dataclass(frozen=True)
class TarMember:
    name: str
    offset: int  # of its (first) header
    offset_data: int
    size: int


@dataclass(frozen=True)
class CorruptRegion:
    offset: int  # byte offset of the first unreadable header
    length: int  # bytes skipped until the next readable header (or the end of the shard)


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


class _Reader:
    """Positioned reads of a seekable file object; counts them (the bound is tested)."""

    def __init__(self, fh: BinaryIO, size: int):
        self.fh, self.size, self.reads = fh, size, 0

    def read(self, offset: int, n: int) -> bytes:
        self.reads += 1
        self.fh.seek(offset)
        return self.fh.read(n)


ZEROS = "zeros"  # an end-of-archive or padding block: not damage


def _header(reader: _Reader, offset: int) -> tarfile.TarInfo | str | None:
    """The header at `offset`; ZEROS for a zero block; None when the block is not a valid header."""
    buf = reader.read(offset, BLOCK)
    if len(buf) < BLOCK:
        return None
    if buf.count(0) == BLOCK:
        return ZEROS
    try:
        return tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return None


def _pax_values(data: bytes) -> dict[str, str]:
    """`path` and `size` from pax records ("<len> <key>=<value>\\n"); anything malformed ends them."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        if space < 0 or not data[pos:space].isdigit():
            break
        length = int(data[pos:space])
        record = data[space + 1: pos + length]
        if length <= space - pos or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            break
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


@dataclass(frozen=True)
class _Step:
    """What the headers at one offset hold: a member (or None: not a regular file, or corrupt)
    and where the scan goes on."""

    member: TarMember | None
    next_offset: int
    corrupt: bool = False


def _member_at(reader: _Reader, offset: int) -> _Step | str:
    """The member whose first header is at `offset` (after any GNU long-name and pax headers),
    ZEROS for a zero block, or a corrupt step (an invalid header, or data past the end of the
    object) that goes on at the block after the failing header: blocks consumed as the data of
    valid long-name/pax headers are never read again."""
    name = size = None
    pos = offset
    while True:
        info = _header(reader, pos)
        if info is ZEROS and pos == offset:
            return ZEROS
        if info is None or info is ZEROS or info.size < 0:
            return _Step(None, pos + BLOCK, corrupt=True)
        data_at = pos + BLOCK
        if info.type in (tarfile.GNUTYPE_LONGNAME, *_PAX_TYPES):
            if info.size > MAX_META_BYTES or data_at + info.size > reader.size:
                return _Step(None, pos + BLOCK, corrupt=True)
            data = reader.read(data_at, info.size)
            if info.type == tarfile.GNUTYPE_LONGNAME:
                name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type != tarfile.XGLTYPE:
                values = _pax_values(data)
                name = values.get("path", name)
                if values.get("size", "").isdigit():
                    size = int(values["size"])
            pos = data_at + _padded(info.size)
            continue
        real_size = info.size if size is None else size
        if data_at + real_size > reader.size:  # a lying header: its data would run past the end
            return _Step(None, pos + BLOCK, corrupt=True)
        member = TarMember(name or info.name, offset, data_at, real_size) if info.type in _FILE_TYPES else None
        return _Step(member, data_at + _padded(real_size))


def scan_tar(fh: BinaryIO, size: int) -> tuple[list[TarMember], list[CorruptRegion], int]:
    """Regular-file members of a tar, the corrupt regions between them, and the reads it took."""
    reader = _Reader(fh, size)
    members: list[TarMember] = []
    corrupt: list[CorruptRegion] = []
    offset, bad_from = 0, None
    while offset + BLOCK <= size:
        step = _member_at(reader, offset)
        if step is ZEROS:
            offset += BLOCK
            continue
        if step.corrupt:  # look for the next plausible header
            bad_from = offset if bad_from is None else bad_from
            offset = step.next_offset
            continue
        if bad_from is not None:
            corrupt.append(CorruptRegion(bad_from, offset - bad_from))
            bad_from = None
        if step.member is not None:
            members.append(step.member)
        offset = step.next_offset
    if bad_from is not None:
        corrupt.append(CorruptRegion(bad_from, size - bad_from))
    return members, corrupt, reader.reads
