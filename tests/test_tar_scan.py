"""Tar shards whose headers lie: the scan's work is bounded by the shard's bytes (counted reads,
not wall time), the members before and after the damage are found, and the damage is one region."""

from __future__ import annotations

import io
import tarfile

import pytest

from mmbatch.inputs import sources
from mmbatch.inputs.tar_scan import BLOCK, scan_tar


def shard(path, names=("a", "b", "c"), size=700, fmt=tarfile.USTAR_FORMAT) -> dict[str, int]:
    """A shard of `<name>.mp4` members; returns each member's header offset."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name in names:
            info = tarfile.TarInfo(f"{name}.mp4")
            info.size = size
            tar.addfile(info, io.BytesIO(name.encode() * size))
    raw = path.read_bytes()
    return {n: raw.find(f"{n}.mp4".encode()) for n in names}


def claim_size(path, offset: int, size: int) -> None:
    """Rewrite the header at `offset` to claim `size` bytes (base-256 when large) with a valid checksum."""
    raw = bytearray(path.read_bytes())
    header = bytearray(raw[offset: offset + BLOCK])
    if size < 8**11:
        header[124:136] = b"%011o\0" % size
    else:
        header[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    raw[offset: offset + BLOCK] = header
    path.write_bytes(bytes(raw))


def scan(path):
    with open(path, "rb") as fh:
        return scan_tar(fh, path.stat().st_size)


@pytest.mark.parametrize("claim", [500 * 2**30, 8 * 2**40, 2**80])
@pytest.mark.parametrize("damaged", ["a", "b", "c"])
def test_a_header_claiming_more_than_the_shard_is_one_corrupt_region(tmp_path, claim, damaged):
    path = tmp_path / "shard-0.tar"
    at = shard(path)
    claim_size(path, at[damaged], claim)
    members, corrupt, reads = scan(path)
    assert sorted(m.name for m in members) == sorted(f"{n}.mp4" for n in "abc" if n != damaged)
    assert [c.offset for c in corrupt] == [at[damaged]]
    # Up to the next member's header, or (the last member) to the end of the shard.
    end = at["c"] if damaged == "b" else at["b"] if damaged == "a" else path.stat().st_size
    assert corrupt[0].length == end - at[damaged]
    assert reads <= path.stat().st_size // BLOCK + 1  # every block at most once


def test_discovery_of_the_500_gib_shard_lists_the_good_members_and_one_failed_input(tmp_path):
    path = tmp_path / "shard-0.tar"
    at = shard(path)
    claim_size(path, at["b"], 500 * 2**30)
    refs = {r.video_id: r.error for r in sources.discover(str(path))}
    assert refs == {"shard-0/a": "", "shard-0/c": "",
                    f"shard-0/corrupt-at-{at['b']}": f"corrupt tar member header at byte {at['b']} of the shard "
                                                     f"({at['c'] - at['b']} bytes skipped)"}


def test_random_bytes_and_zeros_take_one_read_a_block(tmp_path):
    path = tmp_path / "noise.tar"
    path.write_bytes(bytes(range(256)) * 400 + b"\0" * 20480)
    members, corrupt, reads = scan(path)
    assert members == [] and [(c.offset, c.length) for c in corrupt] == [(0, path.stat().st_size)]
    assert reads == path.stat().st_size // BLOCK


def test_pax_and_gnu_long_names_are_read_and_a_lying_pax_header_is_bounded(tmp_path):
    long = "clips/" + "x" * 150 + "/v"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = tmp_path / f"long-{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            info = tarfile.TarInfo(f"{long}.mp4")
            info.size = 10
            tar.addfile(info, io.BytesIO(b"0123456789"))
        members, corrupt, _ = scan(path)
        assert [(m.name, m.size) for m in members] == [(f"{long}.mp4", 10)] and corrupt == []
        with open(path, "rb") as fh:
            fh.seek(members[0].offset_data)
            assert fh.read(10) == b"0123456789"
    path = tmp_path / "long-2.tar"
    claim_size(path, 0, 2**40)  # the pax header itself claims a terabyte
    members, corrupt, reads = scan(path)
    # The scan goes on at the member's own ustar header (its name cut to ustar's 100 bytes).
    assert [(m.offset, m.size) for m in members] == [(2 * BLOCK, 10)] and long.startswith(members[0].name)
    assert [(c.offset, c.length) for c in corrupt] == [(0, 2 * BLOCK)] and reads <= path.stat().st_size // BLOCK + 1


def test_the_members_around_the_damage_are_read_back_exactly(tmp_path):
    """What decode reads (by range, from the same scan): the good members' own bytes."""
    import fsspec

    from mmbatch.inputs import containers

    path = tmp_path / "shard-0.tar"
    at = shard(path, size=1500)
    claim_size(path, at["b"], 500 * 2**30)
    fs = fsspec.filesystem("file")
    for name in ("a", "c"):
        with containers.open_tar_member(fs, str(path), f"{name}.mp4") as fh:
            assert fh.read() == name.encode() * 1500
    with pytest.raises(FileNotFoundError):
        containers.open_tar_member(fs, str(path), "b.mp4")
