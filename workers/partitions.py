"""Exclusive partition ownership and one consumer thread per owned partition.

Why not `dramatiq` workers: a Dramatiq Worker consumes its queues with a shared thread pool
and prefetch, so two threads may run two messages of one queue at once, and it has no notion
of a queue owned by one process. We keep Dramatiq's Redis broker (message format, acks,
redelivery of a dead process's unacked messages, dead-letter queue) and run our own loop:

* membership: every process heartbeats into `workers:members` (ZSET member -> ms);
* fair share: ceil(PARTITIONS / live members) partitions per process;
* leases: `partition:lease:<N>` = member, SET NX PX, renewed every tick by compare-and-expire;
  a process over its share stops the extra consumers (after the message in hand) and then
  deletes their leases; a process under its share claims free ones;
* consumers: one thread per owned partition; it fetches up to `batch_size` waiting messages at
  once and runs them in order as one batch (workers/batch.py), acknowledged after the batch.

A killed process stops renewing: its leases lapse after LEASE_TTL and the survivors claim
them; Dramatiq's maintenance (heartbeat_timeout, see config/bootstrap.py) puts its
unacknowledged messages back on their queues, where the new owner picks them up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import dramatiq
import redis
from dramatiq.broker import MessageProxy

from config import heartbeat
from models.leases import Leases, holder_id
from models.redis_support import ANY_REDIS_ERROR, NOW_MS_LUA
from workers.broker import (
    ack_all,
    fetched_ahead,
    partition_broker,
    queue_of,
    recover_dead_consumers,
    requeue_own_unacked,
    wake_key,
)

log = logging.getLogger("workers.partitions")

MEMBERS_KEY = "workers:members"

# Heartbeat on the Redis server's clock and count the live members, one round trip: a worker
# host whose clock is off neither drops the others' heartbeats nor is dropped itself.
_HEARTBEAT = (
    NOW_MS_LUA
    + """
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""
)
LEASE_PREFIX = "partition:lease:"

Handler = Callable[[MessageProxy], None]
BatchHandler = Callable[[Sequence[MessageProxy]], None]


class Keeper(Protocol):
    """Work a partition's consumer does between batches (workers/marks.py's MarkKeeper)."""

    def seen(self, messages: Sequence[MessageProxy]) -> None:
        """Note a batch that ran."""

    def tick(self) -> float:
        """Do what is due; seconds until something is due again."""

    def stop(self) -> None:
        """The worker is shutting down: end any thread of the keeper's own."""


CLAIM_RETRY_S = 0.1  # a worker under its fair share after a membership change ticks this often
IDLE_WAIT_S = 0.5  # an idle consumer blocks this long on its wake-up list (also bounds stop latency)
RECOVER_EVERY_S = 1.0  # an idle consumer re-queues dead processes' unacked messages this often


class PartitionConsumer(threading.Thread):
    """Consume one partition's queue in order, a batch of waiting messages at a time, until stopped."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        partition: int,
        handler: Handler,
        batch: BatchHandler | None = None,
        *,
        batch_size: int = 1,
        keeper: Keeper | None = None,
    ) -> None:
        super().__init__(name=f"partition-{partition}", daemon=True)
        self.broker = partition_broker(broker, partition)
        self.partition = partition
        self.handler = handler
        self.batch = batch
        self.keeper = keeper
        self.batch_size = max(1, batch_size) if batch is not None else 1
        self.stopping = threading.Event()
        self.processed = 0

    def run(self) -> None:
        queue = queue_of(self.partition)
        self.broker.declare_queue(queue)
        client = self.broker.client  # type: ignore[attr-defined]
        while not self.stopping.is_set():
            try:
                requeue_own_unacked(self.broker, queue)  # fetched before a dropped connection: run them now
                # Dramatiq's Redis consumer polls, sleeping up to `timeout` ms between empty fetches;
                # at 500 ms a request arriving at an idle partition waited up to half a second. Keep
                # its sleep at 5 ms and block on the partition's wake-up list instead (pushed by send).
                consumer = self.broker.consume(queue, prefetch=self.batch_size, timeout=5)
                recovered_at = 0.0
                try:
                    while not self.stopping.is_set():
                        message = next(consumer)
                        if message is None:
                            # A killed process's fetched-but-unacked messages (up to a batch per
                            # partition) come back only through Dramatiq's maintenance, which runs
                            # on a 10 % dice roll per call *for the calling queue*: at 2 idle fetches
                            # a second that took up to 20 s more after a kill -9. The owner runs it
                            # itself when idle, every RECOVER_EVERY_S.
                            if time.monotonic() - recovered_at > RECOVER_EVERY_S:
                                recover_dead_consumers(self.broker, queue)
                                recovered_at = time.monotonic()
                            wait = IDLE_WAIT_S if self.keeper is None else min(IDLE_WAIT_S, self.keeper.tick())
                            client.blpop([wake_key(self.partition)], timeout=max(0.01, wait))
                            continue
                        # What the fetch brought beside it is already ours (moved to our ack set):
                        # take it as one batch, acknowledged only once all of it ran.
                        batch = [message]
                        while len(batch) < self.batch_size and fetched_ahead(consumer):
                            extra = next(consumer)
                            if extra is None:
                                break
                            batch.append(extra)
                        if self.keeper is not None:  # before the batch runs: a long one must not delay the marks
                            self.keeper.seen(batch)
                        if self.batch is not None:  # a lone hold too (workers/batch.py: the group's path)
                            self.batch(batch)
                        else:
                            self.handler(message)
                        ack_all(consumer, batch)
                        self.processed += len(batch)
                        if self.keeper is not None:
                            self.keeper.tick()
                finally:
                    consumer.close()
            except Exception:  # Redis gone: wait and reconnect; unacked messages stay in Redis
                log.warning("partition %s consumer lost its connection; retrying", self.partition, exc_info=True)
                self.stopping.wait(1.0)

    def stop(self) -> None:
        """Ask the thread to finish the message in hand and exit."""
        self.stopping.set()


class PartitionWorker:
    """Claim a fair share of partitions through Redis leases and run one consumer per partition."""

    def __init__(
        self,
        client: redis.Redis,
        broker: dramatiq.Broker,
        handler: Handler,
        *,
        partitions: int,
        batch: BatchHandler | None = None,
        batch_size: int = 1,
        keeper: Callable[[int], Keeper] | None = None,
        lease_ttl: float = 10.0,
        tick_interval: float = 2.0,
    ) -> None:
        self.r = client
        self._beat = self.r.register_script(_HEARTBEAT)
        self.broker = broker
        self.handler = handler
        self.batch = batch
        self.batch_size = batch_size
        self.keeper = keeper  # a partition's Keeper, made for each consumer
        self.partitions = partitions
        self.lease_ttl_ms = int(lease_ttl * 1000)
        self.tick_interval = tick_interval
        self.member = holder_id()
        self.leases = Leases(client, holder=self.member, ttl_ms=self.lease_ttl_ms)
        self.consumers: dict[int, PartitionConsumer] = {}
        self._keepers: list[Keeper] = []  # every keeper made for a consumer, stopped at shutdown
        self._stop = threading.Event()
        self._live = 0  # members seen at the last tick
        self._changed_at = 0.0  # monotonic time the membership or this process's partitions last changed
        self._under_share = False  # at the last tick: fewer partitions than the fair share

    @property
    def owned(self) -> list[int]:
        """Partitions this process consumes now."""
        return sorted(self.consumers)

    def tick(self) -> None:
        """Heartbeat, renew leases, then shed or claim partitions toward the fair share."""
        live = max(1, int(self._beat(keys=[MEMBERS_KEY], args=[self.member, self.lease_ttl_ms])))
        share = math.ceil(self.partitions / live)
        before = set(self.consumers)

        lost = [p for p in self.consumers if not self._renew_lease(p)]
        for p in lost:
            log.warning("lost the lease of partition %s; stopping its consumer", p)
        self._stop_consumers(lost, release=False)

        # Shed above the share: stop all extras at once (each finishes its message in hand), then
        # renew the kept leases again so a slow drain can never let them lapse.
        extra = sorted(self.consumers)[share:] if len(self.consumers) > share else []
        self._stop_consumers(extra, release=True)
        if extra:
            for p in [p for p in self.consumers if not self._renew_lease(p)]:
                self._stop_consumers([p], release=False)

        if len(self.consumers) < share:
            self._claim(share)
        if live != self._live or set(self.consumers) != before:
            self._live, self._changed_at = live, time.monotonic()
        self._under_share = len(self.consumers) < share

    def next_tick_in(self) -> float:
        """Seconds until the next tick: CLAIM_RETRY_S while a handover is likely, else tick_interval.

        When a member joins, the others shed their extra partitions at their own next tick, and
        the newcomer used to claim them only at its next one: each shed partition had no consumer
        for up to a whole tick_interval (2 s), and its messages waited that long (a request in a
        measured run waited 1.9-2.3 s with every consumer idle). A worker under its share
        therefore ticks every CLAIM_RETRY_S for a lease TTL plus a tick after the last change it
        saw; past that (ceil shares can leave one member short for good) it ticks as usual.
        """
        handover = self.lease_ttl_ms / 1000 + self.tick_interval
        if self._under_share and time.monotonic() - self._changed_at < handover:
            return min(CLAIM_RETRY_S, self.tick_interval)
        return self.tick_interval

    def _claim(self, share: int) -> None:
        """Claim free partitions (from a random start) up to the fair share; one log line for all."""
        claimed = []
        start = random.randrange(self.partitions)
        for i in range(self.partitions):
            p = (start + i) % self.partitions
            if p in self.consumers:
                continue
            if self.leases.take(LEASE_PREFIX + str(p)):
                keeper = None if self.keeper is None else self.keeper(p)
                if keeper is not None and all(k is not keeper for k in self._keepers):
                    self._keepers.append(keeper)
                consumer = PartitionConsumer(
                    self.broker, p, self.handler, self.batch, batch_size=self.batch_size, keeper=keeper
                )
                self.consumers[p] = consumer
                consumer.start()
                claimed.append(p)
                if len(self.consumers) >= share:
                    break
        if claimed:
            log.info("%s claimed partition(s) %s; owns %s", self.member, _ranges(claimed), _ranges(self.owned))

    def run(self) -> None:
        """Tick until stop() is called, then drain and release everything."""
        log.info("partition worker %s started (%s partitions)", self.member, self.partitions)
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except ANY_REDIS_ERROR:
                    log.warning("Redis unavailable during the ownership tick", exc_info=True)
                heartbeat.beat()  # the loop is alive (docker-compose.yml's health check)
                self._stop.wait(self.next_tick_in())
        finally:
            self.shutdown()

    def stop(self) -> None:
        """Ask run() to return (from a signal handler or another thread)."""
        self._stop.set()

    def shutdown(self) -> None:
        """Finish the messages in hand, release every lease and leave the membership."""
        self._stop_consumers(list(self.consumers), release=True)
        for keeper in self._keepers:  # a background mark refresh must not outlive the worker
            keeper.stop()
        with contextlib.suppress(*ANY_REDIS_ERROR):
            self.r.zrem(MEMBERS_KEY, self.member)
        log.info("partition worker %s stopped", self.member)

    def _renew_lease(self, partition: int) -> bool:
        return self.leases.renew(LEASE_PREFIX + str(partition))

    def _stop_consumers(self, partitions: list[int], *, release: bool) -> None:
        """Stop these consumers together (signal all, then wait), then release their leases.

        While a consumer finishes the message in hand (a handler may retry for ~16 s), its lease
        and every kept lease go on being renewed, and a lease is released only once its thread
        has ended: a partition is never handed over while its old consumer still runs.
        """
        consumers = [self.consumers.pop(p) for p in partitions]
        for consumer in consumers:
            consumer.stop()
        while any(c.is_alive() for c in consumers):
            for p in [c.partition for c in consumers if c.is_alive()] + list(self.consumers):
                with contextlib.suppress(*ANY_REDIS_ERROR):
                    self._renew_lease(p)
            for consumer in consumers:
                consumer.join(timeout=min(1.0, self.tick_interval))
        if release:
            for consumer in consumers:
                with contextlib.suppress(*ANY_REDIS_ERROR):
                    self.leases.release(LEASE_PREFIX + str(consumer.partition))
            if consumers:
                log.info(
                    "%s released partition(s) %s; owns %s",
                    self.member,
                    _ranges([c.partition for c in consumers]),
                    _ranges(self.owned) or "none",
                )


def _ranges(partitions: list[int]) -> str:
    """A compact list of partition numbers: [0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for p in sorted(partitions):
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
