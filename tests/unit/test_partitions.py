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


class IdleWatch(fakeredis.FakeRedis):
    """The consumers' Redis, noting which partitions' consumers have gone idle (blocked on BLPOP)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.idle: set[str] = set()

    def blpop(self, keys, timeout=0):  # type: ignore[no-untyped-def]
        self.idle.update(keys)
        return super().blpop(keys, timeout)


def make_worker(server: fakeredis.FakeServer, *, lease_ttl: float, tick_interval: float = 0.1) -> PartitionWorker:
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    broker = RedisBroker(client=IdleWatch(server=server))
    worker = PartitionWorker(
        client, broker, lambda message: None, partitions=PARTITIONS, lease_ttl=lease_ttl, tick_interval=tick_interval
    )
    worker.ticks = 0  # type: ignore[attr-defined]
    tick = worker.tick

    def counted_tick() -> None:
        tick()
        worker.ticks += 1  # type: ignore[attr-defined]

    worker.tick = counted_tick  # type: ignore[method-assign]
    return worker


def idle_partitions(worker: PartitionWorker) -> int:
    """How many partitions' consumers have blocked on their wake-up list at least once."""
    return len(worker.broker.client.idle)  # type: ignore[attr-defined]


def ticks(worker: PartitionWorker) -> int:
    return int(worker.ticks)  # type: ignore[attr-defined]


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
            # and three more ticks of each: the split is stable
            more = ticks(first) + 3, ticks(second) + 3
            overlaps += watch(server, [first, second], lambda: (ticks(first), ticks(second)) >= more, timeout=15)
            a, b = owned(first), owned(second)

    assert overlaps == []
    assert (len(a), len(b)) == (8, 8)
    assert a.isdisjoint(b) and a | b == set(range(PARTITIONS))


def test_a_stopped_worker_releases_its_partitions_and_the_other_takes_them_at_once(server):
    # Given leases of an hour: a takeover can only come from a release, never from an expiry
    first, second = make_worker(server, lease_ttl=3600), make_worker(server, lease_ttl=3600)
    first.tick()
    assert len(first.owned) == PARTITIONS

    with running(second):
        second_alone = watch(server, [second], lambda: ticks(second) >= 3, timeout=10)
        assert owned(second) == set()  # every partition is leased to the first worker
        first.shutdown()
        assert set(leases(server).values()) <= {second.member}  # released, not left to expire
        second_alone += watch(server, [second], lambda: len(owned(second)) == PARTITIONS, timeout=10)
        taken = owned(second)

    assert second_alone == []
    assert taken == set(range(PARTITIONS))
    assert leases(server) == {}  # released again by the second worker's shutdown


def test_a_crashed_workers_partitions_are_taken_over_after_its_lease_ttl_and_not_before(server):
    # Given a worker that renewed its 16 leases a moment ago and then died without releasing them
    dead, survivor = make_worker(server, lease_ttl=1.0), make_worker(server, lease_ttl=1.0)
    dead.tick()
    assert leases(server) == dict.fromkeys(range(PARTITIONS), dead.member)
    for consumer in dead.consumers.values():
        consumer.stop()

    # When the survivor keeps ticking: at every sample it consumes no partition whose lease the
    # dead member still holds (watch() records any), and once the leases lapse it takes them all
    with running(survivor):
        overlaps = watch(server, [survivor], lambda: len(owned(survivor)) == PARTITIONS, timeout=10)
        taken = owned(survivor)
    for consumer in dead.consumers.values():
        consumer.join()

    assert overlaps == []
    assert taken == set(range(PARTITIONS))
    assert dead.member not in leases(server).values()


def test_a_rebalance_never_lets_two_workers_consume_one_partition_with_a_short_lease(server):
    # Shedding 8 idle partitions (each consumer polls every ~0.5 s) outlasts a 1 s lease unless the
    # extras are stopped together and the kept leases renewed right after.
    first, second = make_worker(server, lease_ttl=1.0), make_worker(server, lease_ttl=1.0)

    with running(first):
        watch(server, [first], lambda: len(owned(first)) == PARTITIONS, timeout=5)
        # idle: every consumer blocks up to 0.5 s on its wake-up list
        watch(server, [first], lambda: idle_partitions(first) == PARTITIONS, timeout=10)
        with running(second):
            overlaps = watch(server, [first, second], lambda: len(owned(first)) == len(owned(second)) == 8, timeout=4)
            a, b = owned(first), owned(second)

    assert overlaps == []
    assert (len(a), len(b)) == (8, 8)


def test_partitions_shed_for_a_newcomer_are_consumed_again_within_a_fraction_of_a_tick(server):
    # Given a worker owning all 16 partitions, ticked by hand, and a newcomer ticking every 5 s
    first = make_worker(server, lease_ttl=10)
    second = make_worker(server, lease_ttl=10, tick_interval=5.0)
    first.tick()
    assert len(first.owned) == PARTITIONS

    with running(second):
        watch(server, [second], lambda: ticks(second) >= 1, timeout=5)
        assert owned(second) == set()  # under its share of 8: every partition is leased to the first
        # When the first worker sees two members and sheds its extra 8 (its own tick, between the
        # newcomer's 5 s ticks)
        first.tick()
        shed_at = time.monotonic()
        assert len(first.owned) == 8
        # Then the newcomer consumes all 8 well before its next regular tick (before: up to a
        # whole tick, 2 s by default, with nobody consuming them, and their requests waiting)
        overlaps = watch(server, [first, second], lambda: len(owned(second)) == 8, timeout=8)
        gap = time.monotonic() - shed_at
        taken, kept = owned(second), set(first.owned)
        first.shutdown()

    assert overlaps == []
    assert taken | kept == set(range(PARTITIONS)) and len(taken) == 8
    assert gap < 1.5, f"shed partitions had no consumer for {gap:.2f} s"
