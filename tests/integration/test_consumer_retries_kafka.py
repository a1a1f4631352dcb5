"""The payment-completed consumer's retries on a real Kafka-protocol broker (Tansu) and real Redis.

A failing event is retried from the consumer's in-memory retry queue while the events behind it on
its partition go on; the partition's committed offset never passes it, so a crash redelivers it
(and everything after it), and the event-id marker absorbs what was already handled.

Hidden ways this can fail, each checked below: retries inline (the partition stalls for the whole
retry window: the old code, 3 x 1 s); a commit past the record in retry (a crash then loses it);
a same-reservation event overtaking the failing one; a redelivered event changing something twice;
a retry counted while the failing event is still in its window being dead-lettered early or twice.
Own Redis database 12 (flushed), own broker per test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config import bootstrap
from config.settings import Settings
from tests.support.consumer_probe import CALLS, CRASH_AFTER, EFFECTS, FAULTS, counts, probe_handler
from tests.support.env import redis_db_url
from tests.support.helpers import wait_for
from tests.support.kafka_broker import TansuBroker, kafka_broker_fixture
from workers.events.consumer import GROUP, consume
from workers.events.dead_letters import dead_letters
from workers.events.topics import PAYMENT_TOPIC, ensure_topics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 12
RETRIES, INTERVAL = 3, 1.0  # the production policy: a 3 s retry window
GOOD = 20

kafka_broker = kafka_broker_fixture()


@pytest.fixture
def probe_redis(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """The app bootstrapped on Redis db 12 (flushed before and after) and a raw client of it."""
    url = redis_db_url(REDIS_DB, redis_url)
    bootstrap.bootstrap(Settings().with_(database_url=f"sqlite:///{tmp_path / 'unused.db'}", redis_url=url))
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


def event(event_id: str) -> bytes:
    return f'{{"eventId": "{event_id}", "eventType": "PaymentCompleted", "userId": 7, "concertId": 1}}'.encode()


def produce(broker: TansuBroker, events: list[tuple[str, bytes]]) -> list[Any]:
    """Send (key, value) records to partition 0 of payment-completed, in order; their metadata."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        return [producer.send(PAYMENT_TOPIC, key=k.encode(), value=v, partition=0).get(timeout=10) for k, v in events]
    finally:
        producer.close(timeout=5)


def committed(broker: TansuBroker) -> int | None:
    """The group's committed offset of payment-completed partition 0 (None before any commit)."""
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:  # committed() reads the group's offset without joining the group
        offset = reader.committed(TopicPartition(PAYMENT_TOPIC, 0))
        return None if offset is None or offset < 0 else int(offset)
    finally:
        reader.close(autocommit=False)


class ConsumerThread:
    """`python -m workers consume` as a thread of the test, with the probe handler."""

    def __init__(self, broker: TansuBroker, client: redis.Redis) -> None:
        self.stop, self.errors = threading.Event(), []  # type: ignore[var-annotated]
        self.thread = threading.Thread(target=self._run, args=(broker, client), name="consumer", daemon=True)
        self.thread.start()

    def _run(self, broker: TansuBroker, client: redis.Redis) -> None:
        try:
            consume(
                self.stop,
                bootstrap_servers=broker.bootstrap,
                handler=probe_handler(client),
                retries=RETRIES,
                interval=INTERVAL,
            )
        except Exception as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture
def consumer_thread(kafka_broker: TansuBroker) -> Iterator[Callable[[redis.Redis], ConsumerThread]]:
    started: list[ConsumerThread] = []

    def start(client: redis.Redis) -> ConsumerThread:
        started.append(ConsumerThread(kafka_broker, client))
        return started[-1]

    yield start
    for c in started:
        c.close()


def warm_up(broker: TansuBroker, client: redis.Redis) -> None:
    """Wait until the consumer has joined its group and handles records (one event through)."""
    warm = f"warm-{uuid.uuid4().hex[:8]}"
    produce(broker, [("warm", event(warm))])
    assert wait_for(lambda: counts(client, EFFECTS).get(warm) == 1, 30, step=0.05) is not None, "consumer not ready"


def test_a_failing_event_never_holds_up_the_good_events_behind_it_and_is_dead_lettered_after_its_attempts(
    kafka_broker: TansuBroker,
    probe_redis: tuple[str, redis.Redis],
    consumer_thread: Callable[[redis.Redis], ConsumerThread],
) -> None:
    # Given a consumer with the production retry policy (3 retries 1 s apart: a 3 s window)
    _, client = probe_redis
    ensure_topics(kafka_broker.bootstrap)
    consumer = consumer_thread(client)
    warm_up(kafka_broker, client)
    client.sadd(FAULTS, "stuck")

    # When an event that keeps failing and 20 good events behind it arrive on the same partition
    sent = produce(kafka_broker, [("r-stuck", event("stuck"))] + [(f"r-{n}", event(f"good-{n}")) for n in range(GOOD)])
    produced = time.monotonic()

    # Then the good ones are all handled well within the retry window (old code: after all of it)
    took = wait_for(lambda: all(counts(client, EFFECTS).get(f"good-{n}") == 1 for n in range(GOOD)), 10, step=0.02)
    assert took is not None, f"the good events were never handled; {consumer.errors}"
    elapsed = time.monotonic() - produced
    print(f"\n[retry queue] {GOOD} good events behind a failing one handled {elapsed * 1000:.0f} ms after sending")
    assert elapsed < 1.0, f"{GOOD} good events waited {elapsed:.2f} s behind the failing one (window 3 s)"
    # and the group's commit stops at the failing event while it is in retry (a crash redelivers it)
    stuck_offset = sent[0].offset
    assert wait_for(lambda: committed(kafka_broker) == stuck_offset, 5) is not None, committed(kafka_broker)
    assert counts(client, CALLS)["stuck"] < RETRIES + 1

    # Then after its 4 attempts it is dead-lettered once, and the commit moves past everything
    assert wait_for(lambda: len(dead_letters(kafka_broker.bootstrap)) == 1, 15, step=0.2) is not None
    letter = dead_letters(kafka_broker.bootstrap)[0]
    assert (letter["headers"]["attempts"], letter["headers"]["original-offset"]) == ("4", str(stuck_offset))
    assert letter["headers"]["error"] == "RuntimeError: downstream fault for stuck"
    assert wait_for(lambda: committed(kafka_broker) == sent[-1].offset + 1, 5) is not None, committed(kafka_broker)
    time.sleep(1.5)  # a further retry round: nothing is retried or dead-lettered again
    calls = counts(client, CALLS)
    assert calls.pop("stuck") == RETRIES + 1
    assert {k: v for k, v in calls.items() if not k.startswith("warm")} == {f"good-{n}": 1 for n in range(GOOD)}
    assert len(dead_letters(kafka_broker.bootstrap)) == 1
    assert consumer.errors == []


def test_when_the_fault_clears_the_event_succeeds_once_and_its_reservations_later_event_follows_it(
    kafka_broker: TansuBroker,
    probe_redis: tuple[str, redis.Redis],
    consumer_thread: Callable[[redis.Redis], ConsumerThread],
) -> None:
    # Given a consumer and an event whose handling fails for now
    _, client = probe_redis
    ensure_topics(kafka_broker.bootstrap)
    consumer = consumer_thread(client)
    warm_up(kafka_broker, client)
    client.sadd(FAULTS, "first")

    # When it arrives, then a later event of the same reservation, then one of another reservation
    sent = produce(kafka_broker, [("r-1", event("first")), ("r-1", event("second")), ("r-2", event("other"))])

    # Then the other reservation's event goes through at once; the same reservation's waits
    assert wait_for(lambda: counts(client, EFFECTS).get("other") == 1, 5) is not None, consumer.errors
    assert "second" not in counts(client, CALLS)
    assert wait_for(lambda: committed(kafka_broker) == sent[0].offset, 5) is not None, committed(kafka_broker)

    # When the fault clears before the retries run out
    client.srem(FAULTS, "first")

    # Then the failing event succeeds on a retry, the waiting one follows it, each changed things once
    assert wait_for(lambda: counts(client, EFFECTS).get("second") == 1, 5) is not None, consumer.errors
    effects = counts(client, EFFECTS)
    assert {k: effects[k] for k in ("first", "second", "other")} == {"first": 1, "second": 1, "other": 1}
    assert 2 <= counts(client, CALLS)["first"] <= RETRIES + 1 and counts(client, CALLS)["second"] == 1
    assert wait_for(lambda: committed(kafka_broker) == sent[-1].offset + 1, 5) is not None, committed(kafka_broker)
    assert dead_letters(kafka_broker.bootstrap) == []
    assert consumer.errors == []


def test_a_crash_mid_batch_redelivers_from_the_event_in_retry_and_the_event_id_marker_absorbs_the_rest(
    kafka_broker: TansuBroker,
    probe_redis: tuple[str, redis.Redis],
    consumer_thread: Callable[[redis.Redis], ConsumerThread],
) -> None:
    # Given e0..e9 on one partition, e3 failing, and a consumer process (retry interval 5 s)
    url, client = probe_redis
    ensure_topics(kafka_broker.bootstrap)
    client.sadd(FAULTS, "e3")
    first = produce(kafka_broker, [(f"r-{n}", event(f"e{n}")) for n in range(10)])
    env = {
        **os.environ,
        "REDIS_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "DATABASE_URL": "sqlite:///:memory:",
        "PROBE_RETRY_INTERVAL": "5",
    }
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.consumer_probe"], cwd=REPO, env=env)
    try:
        # When it has handled the batch around e3 (e3 in its retry queue; committed up to e3)
        done = wait_for(lambda: all(counts(client, EFFECTS).get(f"e{n}") == 1 for n in range(10) if n != 3), 60, 0.05)
        assert done is not None, counts(client, CALLS)
        assert wait_for(lambda: committed(kafka_broker) == first[3].offset, 10) is not None, committed(kafka_broker)

        # and it is killed -9 in the middle of the next batch, after handling e12 (before any commit)
        client.set(CRASH_AFTER, "e12")
        produce(kafka_broker, [(f"r-{n}", event(f"e{n}")) for n in range(10, 15)])
        assert proc.wait(timeout=30) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert counts(client, EFFECTS).get("e12") == 1 and "e13" not in counts(client, CALLS)

    # When the fault has cleared and another consumer of the group takes the partition over
    client.srem(FAULTS, "e3")
    client.delete(CRASH_AFTER)
    survivor = consumer_thread(client)

    # Then everything from e3 on is redelivered: e3 and the unhandled e13, e14 change things once,
    # and the already handled e4..e12 come again but change nothing (the event-id marker)
    settled = wait_for(lambda: all(counts(client, EFFECTS).get(f"e{n}") == 1 for n in (3, 13, 14)), 60, 0.1)
    assert settled is not None, (counts(client, CALLS), survivor.errors)
    calls, effects = counts(client, CALLS), counts(client, EFFECTS)
    assert effects == {f"e{n}": 1 for n in range(15)}, "an event was lost or changed things twice"
    assert all(calls[f"e{n}"] == 2 for n in range(4, 13)), f"e4..e12 were not redelivered: {calls}"
    assert all(calls[f"e{n}"] == 1 for n in (0, 1, 2, 13, 14)), calls
    assert wait_for(lambda: committed(kafka_broker) == first[-1].offset + 6, 10) is not None
    assert dead_letters(kafka_broker.bootstrap) == []
    assert survivor.errors == []
