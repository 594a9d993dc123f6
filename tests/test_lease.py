"""The lease on a night is a compare-and-swap: of two runs taking it at once exactly one holds it,
on a local folder (a folder lock) and on S3 (conditional writes, checked against moto)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import pytest

from mmbatch import storage
from mmbatch.night.cas import Changed, ObjectSlot
from mmbatch.night.lock import Lease, LeaseLostError, LockedError

ROUNDS = 50


def _contender(root: str, name: str, barrier, results, options: dict | None = None) -> None:
    fs, base = storage.filesystem(root, options)
    for i in range(ROUNDS):
        lease = Lease(fs, f"{base}/_locks/round-{i}.json", f"{name}-{i}", ttl_s=60)
        barrier.wait()  # both try at the same moment
        try:
            lease.acquire()
            results.put((i, name))
        except LockedError:
            pass
        barrier.wait()  # both have tried: the winner may let go
        if lease.version is not None:
            lease.release()


def race(root: str, options: dict | None = None) -> dict[int, list[str]]:
    """Two processes take the lease of each of ROUNDS nights at the same moment: who got each."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(root, n, barrier, results, options)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    winners: dict[int, list[str]] = {}
    while not results.empty():
        i, name = results.get()
        winners.setdefault(i, []).append(name)
    return winners


def test_two_processes_racing_for_the_lease_fifty_times_one_holds_it_each_time(tmp_path):
    winners = race(str(tmp_path))
    assert sorted(winners) == list(range(ROUNDS)) and all(len(w) == 1 for w in winners.values()), winners
    assert not (tmp_path / "_locks").exists()  # every winner released


def test_two_processes_racing_on_s3_one_holds_it_each_time(bucket):
    """The same race on moto's S3 endpoint, through conditional writes."""
    winners = race("s3://leases/race", bucket.storage_options)
    assert sorted(winners) == list(range(ROUNDS)) and all(len(w) == 1 for w in winners.values()), winners


@pytest.fixture(scope="module")
def bucket():
    from s3server import moto_server, storage_options

    with moto_server() as endpoint:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="leases")
        yield storage.filesystem("s3://leases/", storage_options(endpoint))[0]


def test_conditional_writes_on_s3_refuse_the_writer_that_lost(bucket):
    slot = ObjectSlot(bucket, "leases/night.json")
    first = slot.write(b"a", None)  # create-if-absent
    with pytest.raises(Changed):
        slot.write(b"b", None)  # it exists now
    second = slot.write(b"c", first)  # replace the version read
    with pytest.raises(Changed):
        slot.write(b"d", first)  # a stale version
    assert slot.conditional and slot.read() == (b"c", second) and first != second


def test_the_s3_lease_is_taken_once_renewed_and_never_taken_back(bucket):
    path = "leases/_locks/run_date=2026-11-27.json"
    a = Lease(bucket, path, "2026-11-27_aaaa", ttl_s=60)
    b = Lease(bucket, path, "2026-11-27_bbbb", ttl_s=60)
    b.me["pid"] = os.getpid() + 1  # another live run
    a.acquire()
    with pytest.raises(LockedError, match="another run holds .*2026-11-27_aaaa"):
        b.acquire()
    a.renew()
    assert json.loads(bucket.cat_file(path))["expires_at"] > time.time() + 50
    # The night lapses and another run takes it: the old holder cannot write it back.
    bucket.pipe_file(path, json.dumps({**b.me, "expires_at": time.time() + 60}).encode())
    with pytest.raises(LeaseLostError, match="another run took over"):
        a.renew()
    assert json.loads(bucket.cat_file(path))["holder"] == "2026-11-27_bbbb"
    a.release()  # not ours any more: left alone
    assert bucket.exists(path)


def test_a_night_released_while_its_lease_is_being_taken_gives_it_back(tmp_path):
    """A stop during the plan releases the night from another thread, maybe while its lease is still
    being taken: the take then gives it back at once instead of leaving it for its lifetime."""
    import datetime as dt

    from mmbatch.night.night import Night

    night = Night(str(tmp_path), dt.date(2026, 11, 27), "fp")
    night.release()  # the stop came first; the plan's thread is still inside take()
    night.take()
    assert not night.held and not list((tmp_path / "_locks").glob("*.json"))
    again = Night(str(tmp_path), dt.date(2026, 11, 27), "fp").take()  # nothing left in the way
    assert again.held
    again.release()
