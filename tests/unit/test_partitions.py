"""Partition ownership (workers/partitions.py) on fakeredis: fair split, exclusivity, takeover of a dead member."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import fakeredis
import pytest
from dramatiq.brokers.redis import RedisBroker

from workers.partitions import LEASE_PREFIX, PartitionWorker

PARTITIONS = 16


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def make_worker(server: fakeredis.FakeServer, *, lease_ttl: float, tick_interval: float = 0.1) -> PartitionWorker:
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    broker = RedisBroker(client=fakeredis.FakeRedis(server=server))
    return PartitionWorker(
        client, broker, lambda message: None, partitions=PARTITIONS, lease_ttl=lease_ttl, tick_interval=tick_interval
    )


def owned(worker: PartitionWorker) -> set[int]:
    """The partitions a worker consumes now (read from another thread: retry a dict resized under us)."""
    while True:
        try:
            return set(worker.consumers)
        except RuntimeError:
            continue


def leases(server: fakeredis.FakeServer) -> dict[int, str]:
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    return {int(k[len(LEASE_PREFIX) :]): client.get(k) for k in client.scan_iter(f"{LEASE_PREFIX}*")}


@contextmanager
def running(*workers: PartitionWorker) -> Iterator[None]:
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()


def watch(
    server: fakeredis.FakeServer, workers: list[PartitionWorker], until: Callable[[], bool], timeout: float
) -> list[str]:
    """Sample ownership until `until()` holds; return every moment two workers consumed one partition."""
    overlaps: list[str] = []
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        sets = [owned(w) for w in workers]
        held = leases(server)
        for i, mine in enumerate(sets):
            for other in sets[i + 1 :]:
                if mine & other:
                    overlaps.append(f"both consume {sorted(mine & other)}")
            foreign = {p for p in mine if held.get(p) not in (None, workers[i].member)}
            if foreign:
                overlaps.append(f"{workers[i].member} consumes {sorted(foreign)} under another member's lease")
        time.sleep(0.02)
    return overlaps


def test_two_workers_split_the_partitions_8_and_8_and_never_share_one(server):
    first, second = make_worker(server, lease_ttl=10), make_worker(server, lease_ttl=10)

    with running(first):
        watch(server, [first], lambda: len(owned(first)) == PARTITIONS, timeout=5)
        assert owned(first) == set(range(PARTITIONS))
        with running(second):
            overlaps = watch(server, [first, second], lambda: len(owned(second)) == 8, timeout=15)
            time.sleep(0.5)  # a few more ticks: the split is stable
            a, b = owned(first), owned(second)

    assert overlaps == []
    assert (len(a), len(b)) == (8, 8)
    assert a.isdisjoint(b) and a | b == set(range(PARTITIONS))


def test_a_stopped_worker_releases_its_partitions_and_the_other_takes_them_at_once(server):
    first, second = make_worker(server, lease_ttl=10), make_worker(server, lease_ttl=10)
    first.tick()
    assert len(first.owned) == PARTITIONS

    with running(second):
        second_alone = watch(server, [second], lambda: False, timeout=0.5)
        assert owned(second) == set()  # every partition is leased to the first worker
        started = time.monotonic()
        first.shutdown()
        watch(server, [second], lambda: len(owned(second)) == PARTITIONS, timeout=5)
        took = time.monotonic() - started

    assert second_alone == []
    assert leases(server) == {}  # released again by the second worker's shutdown
    assert took < 1.5, f"takeover after a clean stop took {took:.2f} s"


def test_a_crashed_workers_partitions_are_taken_over_after_its_lease_ttl_and_not_before(server):
    # Given a worker that renewed its 16 leases a moment ago and then died without releasing them
    dead, survivor = make_worker(server, lease_ttl=1.0), make_worker(server, lease_ttl=1.0)
    dead.tick()
    last_renewal = time.monotonic()
    assert leases(server) == dict.fromkeys(range(PARTITIONS), dead.member)
    for consumer in dead.consumers.values():
        consumer.stop()

    # When the survivor keeps ticking, it claims nothing while the dead member's leases live
    with running(survivor):
        overlaps = watch(server, [survivor], lambda: len(owned(survivor)) == PARTITIONS, timeout=5)
        took = time.monotonic() - last_renewal
    for consumer in dead.consumers.values():
        consumer.join()

    assert overlaps == []
    assert 0.95 <= took <= 2.0, f"took {took:.2f} s with a 1 s lease"


def test_a_rebalance_never_lets_two_workers_consume_one_partition_with_a_short_lease(server):
    # Shedding 8 idle partitions (each consumer polls every ~0.5 s) outlasts a 1 s lease unless the
    # extras are stopped together and the kept leases renewed right after.
    first, second = make_worker(server, lease_ttl=1.0), make_worker(server, lease_ttl=1.0)

    with running(first):
        watch(server, [first], lambda: len(owned(first)) == PARTITIONS, timeout=5)
        time.sleep(1.5)  # idle long enough that each consumer polls its queue every ~0.5 s
        with running(second):
            overlaps = watch(server, [first, second], lambda: len(owned(first)) == len(owned(second)) == 8, timeout=4)
            a, b = owned(first), owned(second)

    assert overlaps == []
    assert (len(a), len(b)) == (8, 8)
