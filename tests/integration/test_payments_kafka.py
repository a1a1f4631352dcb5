"""Payments end to end on real MariaDB + Redis + a Kafka-protocol broker (Tansu, started per test).

The web app runs as a Flask test client; the partition worker, the outbox relay (standing in for
the scheduler's outbox job, every 0.2 s) and the payment-completed consumer run as threads of the
test, over the same production code. Redis db 11 is flushed before and after every test.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import bootstrap
from config.settings import Settings
from models import check, outbox, payments, points
from models.concerts import RESERVED, Schedule, Seat
from models.db import db
from models.errors import AlreadyPaid
from models.outbox import OutboxEvent
from models.payments import Payment
from models.points import LedgerEntry
from models.seed import seed_demo
from tests.support.env import redis_db_url
from tests.support.helpers import active_token, hold_directly, make_app, problem_of, wait_for, worker_thread
from tests.support.kafka_broker import TansuBroker, kafka_broker_fixture
from workers.events import publisher as event_publisher
from workers.events.consumer import RETRIES, RETRY_INTERVAL, consume, handle_payment_completed
from workers.events.dead_letters import dead_letters, replay
from workers.events.publisher import KafkaPublisher, relay_outbox
from workers.events.topics import PAYMENT_TOPIC, ensure_topics
from workers.jobs import FAILED, SUCCEEDED, JobStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 11
PRICE = 50_000
RELAY_EVERY = 0.2
log = logging.getLogger("tests.payments_kafka")

kafka_broker = kafka_broker_fixture()
# the outage test kills and restarts its broker: always a Tansu of its own, even with TEST_KAFKA_BOOTSTRAP set
own_kafka_broker = kafka_broker_fixture(restartable=True)


@pytest.fixture
def redis11(redis_url: str) -> str:
    """The integration Redis server, database 11 (this module's own)."""
    return redis_db_url(REDIS_DB, redis_url)


@dataclass
class Stack:
    """The app on real servers plus the background parts, each started on demand and always stopped."""

    app: Flask
    settings: Settings
    broker: TansuBroker
    stops: list[Callable[[], None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    relay_paused: threading.Event = field(default_factory=threading.Event)

    @property
    def redis(self) -> Any:
        return bootstrap.current().redis

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def start_worker(self) -> None:
        """The partition worker (`python -m workers run`) as a thread."""
        running = worker_thread(tick_interval=0.05)
        running.__enter__()
        self.stops.append(lambda: running.__exit__(None, None, None))

    def start_relay(self) -> None:
        """The scheduler's outbox job: relay_outbox() every 0.2 s; a pass that raises is recorded."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(RELAY_EVERY):
                if self.relay_paused.is_set():
                    continue
                try:
                    with db.connection_context():
                        relay_outbox()
                except Exception as exc:  # the scheduler logs a failed tick and runs the next one
                    log.exception("relay pass failed")
                    self.errors.append(f"relay pass raised {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=loop, name="outbox-relay", daemon=True)
        thread.start()
        self.stops.append(lambda: (stop.set(), thread.join(timeout=30)))

    def start_consumer(
        self,
        handler: Callable[[bytes], object] = handle_payment_completed,
        *,
        retries: int = RETRIES,
        interval: float = RETRY_INTERVAL,
    ) -> None:
        """`python -m workers consume` as a thread; returns once it has handled a warm-up event."""
        stop = threading.Event()

        def run() -> None:
            try:
                consume(
                    stop, bootstrap_servers=self.broker.bootstrap, handler=handler, retries=retries, interval=interval
                )
            except Exception as exc:
                log.exception("consumer died")
                self.errors.append(f"consumer raised {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=run, name="consumer", daemon=True)
        thread.start()
        self.stops.append(lambda: (stop.set(), thread.join(timeout=30)))
        # Ready = its group join is done and it handles records: send one and wait for it.
        warmup = f"warmup-{uuid.uuid4().hex}"
        ensure_topics(self.broker.bootstrap)
        produce(self.broker, [event_value(warmup, user_id=999_999, concert_id=1)], key=b"warmup")
        waited = wait_for(lambda: self.redis.exists(f"events:done:{warmup}"), 30, step=0.05)
        assert waited is not None, f"the consumer never handled the warm-up event; {self.errors}"

    def close(self) -> None:
        for stop in reversed(self.stops):
            stop()
        self.stops.clear()


@pytest.fixture
def make_stack(mysql_url: str, redis11: str, kafka_broker: TansuBroker) -> Iterator[Callable[..., Stack]]:
    """Build the stack with some settings changed; everything is stopped and flushed afterwards."""
    stacks: list[Stack] = []

    def build(broker: TansuBroker | None = None, **overrides: Any) -> Stack:
        broker = broker or kafka_broker
        settings = Settings().with_(
            database_url=mysql_url,
            redis_url=redis11,
            kafka_bootstrap_servers=broker.bootstrap,
            admin_token="test-admin-token",
            partitions=4,
            **overrides,
        )
        previous, event_publisher._publisher = event_publisher._publisher, None
        if isinstance(previous, KafkaPublisher):
            with contextlib.suppress(Exception):
                previous.producer.close(timeout=0)
        # Finalize dropped producers now: a KafkaProducer.__del__ run by the GC in the middle of
        # werkzeug's rule compilation (it builds ASTs) tripped CPython 3.11.7's "AST constructor
        # recursion depth mismatch" (gh-106905) about one run in five.
        gc.collect()
        app = make_app(settings)
        bootstrap.current().redis.flushdb()
        with db.connection_context():
            seed_demo()
        stack = Stack(app, settings, broker)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.close()
    publisher, event_publisher._publisher = event_publisher._publisher, None
    if isinstance(publisher, KafkaPublisher):
        with contextlib.suppress(Exception):
            publisher.producer.close(timeout=0)
    with contextlib.suppress(Exception):
        bootstrap.current().redis.flushdb()
    db.close()


# --- helpers ----------------------------------------------------------------------------------
def event_value(event_id: str, *, user_id: int, concert_id: int) -> bytes:
    return json.dumps(
        {"eventId": event_id, "eventType": "PaymentCompleted", "userId": user_id, "concertId": concert_id}
    ).encode()


def produce(broker: TansuBroker, values: list[bytes], *, key: bytes) -> list[Any]:
    """Send records straight to payment-completed (acks=all); return their metadata."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        return [producer.send(PAYMENT_TOPIC, key=key, value=v).get(timeout=10) for v in values]
    finally:
        producer.close(timeout=5)


def read_topic(broker: TansuBroker, topic: str = PAYMENT_TOPIC) -> list[Any]:
    """Every record of a topic now, read with assign() (no group), in partition/offset order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert parts, f"topic {topic} does not exist"
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + 15
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, "could not read the topic to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def poll_status(client: FlaskClient, token: str) -> int:
    return int(client.get("/api/v1/queue/token", headers={"X-Queue-Token": token}).status_code)


def demo_seats() -> tuple[int, list[Seat]]:
    """(concert id, seats of its first schedule by number)."""
    with db.connection_context():
        schedule = Schedule.select().order_by(Schedule.id).first()
        return schedule.concert_id, list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number))


def given_held(user_id: int, seat: Seat, *, points_to_charge: int = 100_000) -> int:
    """A user with points holding a seat (through the domain functions); the reservation id."""
    with db.connection_context():
        points.charge(user_id=user_id, amount=points_to_charge, max_charge=1_000_000, max_balance=100_000_000)
        view = hold_directly(seat, user_id)
    return int(view.reservation_id)


def pay_over_http(client: FlaskClient, token: str, reservation_id: int, **headers: str) -> Any:
    return client.post(
        "/api/v1/payments",
        json={"reservationId": reservation_id},
        headers={"X-Queue-Token": token, **headers},
    )


# --- (a) end to end ---------------------------------------------------------------------------
def test_pay_end_to_end_publishes_the_event_and_the_consumer_expires_the_token(
    make_stack: Callable[..., Stack], record_property: Callable[[str, object], None]
) -> None:
    # Given the worker, the relay and the consumer running, and a user with an ACTIVE token
    stack = make_stack()
    stack.start_worker()
    stack.start_relay()
    stack.start_consumer()
    client = stack.client()
    concert_id, seats = demo_seats()
    seat = seats[9]
    user = 101
    token = active_token(client, user, concert_id)
    charged = client.post(f"/api/v1/users/{user}/points/charge", json={"amount": 80_000})
    assert charged.get_json() == {"userId": user, "balance": 80_000}
    held = client.post(
        "/api/v1/reservations",
        json={"scheduleId": seat.schedule_id, "seatId": seat.id},
        headers={"X-Queue-Token": token, "Prefer": "wait=5"},
    )
    assert held.status_code == 201, held.get_json()
    rid = held.get_json()["reservationId"]

    # When the user pays
    paid = pay_over_http(client, token, rid, Prefer="wait=5")
    committed = time.monotonic()

    # Then the payment is answered, published, consumed: the token is gone (the delay is printed)
    assert paid.status_code == 201, paid.get_json()
    payment = paid.get_json()
    assert (payment["reservationId"], payment["userId"], payment["amount"], payment["balance"]) == (
        rid,
        user,
        PRICE,
        30_000,
    )
    # polled at ~8/s, under the per-token polling limit (10/s), so a 429 never hides the 401
    expired = wait_for(lambda: poll_status(client, token) == 401, 30, step=0.12)
    assert expired is not None, f"the token was still valid 30 s after the payment; {stack.errors}"
    consumed_after = time.monotonic() - committed
    response = client.get("/api/v1/queue/token", headers={"X-Queue-Token": token})
    assert problem_of(response)["code"] == "TOKEN_INVALID"

    with db.connection_context():
        row = OutboxEvent.get(OutboxEvent.aggregate_id == payment["paymentId"])
        assert row.status == outbox.PUBLISHED
        publish_lag = (row.published_at - row.created_at).total_seconds()
    records = [r for r in read_topic(stack.broker) if r.key == str(rid).encode()]
    assert len(records) == 1
    value = json.loads(records[0].value)
    assert {k: value[k] for k in ("eventId", "paymentId", "reservationId", "userId", "concertId", "amount")} == {
        "eventId": row.event_id,
        "paymentId": payment["paymentId"],
        "reservationId": rid,
        "userId": user,
        "concertId": concert_id,
        "amount": PRICE,
    }
    assert dict(records[0].headers) == {"eventId": row.event_id.encode(), "eventType": b"PaymentCompleted"}

    history = client.get(f"/api/v1/users/{user}/points/history").get_json()["entries"]
    assert [(e["type"], e["amount"], e["balanceAfter"]) for e in history] == [
        ("USE", -PRICE, 30_000),
        ("CHARGE", 80_000, 80_000),
    ]
    viewer = active_token(client, 102, concert_id)
    seat_map = client.get(f"/api/v1/schedules/{seat.schedule_id}/seats", headers={"X-Queue-Token": viewer})
    assert {s["seatId"]: s["status"] for s in seat_map.get_json()["seats"]}[seat.id] == "RESERVED"
    with db.connection_context():
        assert Seat.get_by_id(seat.id).status == RESERVED
        assert check.violations() == []
    assert stack.errors == []
    print(
        f"\n[payments e2e] commit->published {publish_lag * 1000:.0f} ms (outbox created_at->published_at), "
        f"commit->consumed (token expired, seen by polling) {consumed_after * 1000:.0f} ms"
    )
    record_property("commit_to_published_ms", round(publish_lag * 1000))
    record_property("commit_to_consumed_ms", round(consumed_after * 1000))


# --- (b) 100 concurrent payments of one reservation --------------------------------------------
def test_a_hundred_concurrent_payments_of_one_reservation_charge_once(make_stack: Callable[..., Stack]) -> None:
    # Given one held reservation and 100 threads with their own clients: 40 send key k1, 30 k2, 30 none
    stack = make_stack(rate_limit_enabled=False)
    stack.start_worker()
    concert_id, seats = demo_seats()
    user = 202
    rid = given_held(user, seats[0])
    token = active_token(stack.client(), user, concert_id)
    keys = ["k1"] * 40 + ["k2"] * 30 + [None] * 30
    barrier = threading.Barrier(len(keys))
    answers: list[tuple[str | None, int, dict[str, Any]]] = []
    lock = threading.Lock()

    def payer(key: str | None) -> None:
        client = stack.client()
        headers = {"Idempotency-Key": key} if key else {}
        barrier.wait(timeout=30)
        response = pay_over_http(client, token, rid, **headers)
        with lock:
            answers.append((key, response.status_code, response.get_json()))

    threads = [threading.Thread(target=payer, args=(k,)) for k in keys]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    answered = time.monotonic() - started
    assert len(answers) == 100

    # Then every call with one key got that key's one job; 32 jobs ran, one of them paid
    store = JobStore(stack.redis)
    jobs_by_key: dict[str | None, set[str]] = {"k1": set(), "k2": set(), None: set()}
    payment_bodies: list[tuple[str, dict[str, Any]]] = []
    for key, status, body in answers:
        assert status in (201, 202, 409), (status, body)
        if status == 201:  # the job had already finished when the call looked: its payment, made by that job
            with db.connection_context():
                job_id = Payment.get_by_id(body["paymentId"]).job_id
            payment_bodies.append((job_id, body))
        else:
            job_id = body["jobId"]
        jobs_by_key[key].add(job_id)
    assert len(jobs_by_key["k1"]) == 1
    assert len(jobs_by_key["k2"]) == 1
    assert len(jobs_by_key[None]) == 30
    all_jobs = set().union(*jobs_by_key.values())
    finished = {job_id: store.wait(job_id, 20) for job_id in all_jobs}
    settled = time.monotonic() - started
    print(f"\n[100 payments] all answered in {answered:.2f} s; all {len(all_jobs)} jobs finished in {settled:.2f} s")
    assert all(job is not None and job.status in (SUCCEEDED, FAILED) for job in finished.values()), finished
    winners = [job for job in finished.values() if job.status == SUCCEEDED]  # type: ignore[union-attr]
    assert len(winners) == 1
    losers = [job for job in finished.values() if job.status == FAILED]  # type: ignore[union-attr]
    assert [job.error["code"] for job in losers] == ["ALREADY_PAID"] * 31  # type: ignore[index]
    for job_id, body in payment_bodies:
        assert finished[job_id].result == body  # type: ignore[union-attr]

    with db.connection_context():
        assert Payment.select().where(Payment.reservation == rid).count() == 1
        assert LedgerEntry.select().where((LedgerEntry.user_id == user) & (LedgerEntry.type == points.USE)).count() == 1
        assert points.get_balance(user_id=user).balance == 100_000 - PRICE
        assert OutboxEvent.select().count() == 1
        assert check.violations() == []


def test_overlapping_workers_paying_one_reservation_directly_charge_once(make_stack: Callable[..., Stack]) -> None:
    # Given 20 threads calling the domain function at once, as if two workers owned the partition
    make_stack()
    _, seats = demo_seats()
    user = 303
    rid = given_held(user, seats[1])
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        barrier.wait(timeout=30)
        try:
            with db.connection_context():
                payments.pay(reservation_id=rid, user_id=user, job_id=f"overlap-{n}")
            outcome = "paid"
        except AlreadyPaid:
            outcome = "ALREADY_PAID"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(outcomes) == ["ALREADY_PAID"] * 19 + ["paid"]
    with db.connection_context():
        assert Payment.select().where(Payment.reservation == rid).count() == 1
        assert LedgerEntry.select().where((LedgerEntry.user_id == user) & (LedgerEntry.type == points.USE)).count() == 1
        assert points.get_balance(user_id=user).balance == 100_000 - PRICE
        assert check.violations() == []


# --- (c) broker down --------------------------------------------------------------------------
def test_payments_succeed_while_the_broker_is_down_and_every_row_is_published_in_order_when_it_returns(
    make_stack: Callable[..., Stack], own_kafka_broker: TansuBroker, record_property: Callable[[str, object], None]
) -> None:
    # Given a running relay that has published once (its producer is connected), OUTBOX_MAX_ATTEMPTS=1
    stack = make_stack(own_kafka_broker, outbox_max_attempts=1)
    stack.start_worker()
    stack.start_relay()
    client = stack.client()
    concert_id, seats = demo_seats()
    first_rid = given_held(400, seats[0])
    first = pay_over_http(client, active_token(client, 400, concert_id), first_rid, Prefer="wait=5")
    assert first.status_code == 201, first.get_json()
    with db.connection_context():
        assert wait_for(lambda: outbox.stats().published == 1, 10) is not None, stack.errors

    # When the broker dies and five users pay (the relay paused so that one pass claims all five)
    stack.relay_paused.set()
    stack.broker.stop()
    users = list(range(401, 406))
    rids = []
    for n, user in enumerate(users, start=1):
        rid = given_held(user, seats[n])
        response = pay_over_http(client, active_token(client, user, concert_id), rid, Prefer="wait=5")
        assert response.status_code == 201, response.get_json()  # the job SUCCEEDED without the broker
        rids.append(rid)

    def rows() -> list[OutboxEvent]:
        with db.connection_context():
            return list(
                OutboxEvent.select().where(OutboxEvent.message_key.in_([str(r) for r in rids])).order_by(OutboxEvent.id)
            )

    assert [(r.status, r.retry_count) for r in rows()] == [(outbox.PENDING, 0)] * 5
    stack.relay_paused.clear()

    # Then failed attempts are counted, but a broker outage never makes a row FAILED
    counted = wait_for(lambda: stack.errors or all(r.retry_count >= 1 for r in rows()), 30, step=0.1)
    assert stack.errors == []
    assert counted is not None, [(r.id, r.status, r.retry_count, r.last_error) for r in rows()]
    assert [r.status for r in rows()] == [outbox.PENDING] * 5
    assert all(r.last_error for r in rows())
    with db.connection_context():
        stats = outbox.stats()
    assert (stats.pending, stats.failed) == (5, 0)

    # When the broker is back (memory storage: empty; the topics are created again, as on a real
    # cluster they would still exist)
    stack.broker.start()
    ensure_topics(stack.broker.bootstrap)
    restarted = time.monotonic()

    # Then every pending row is published, and the topic holds each event in outbox id order
    recovered = wait_for(lambda: all(r.status == outbox.PUBLISHED for r in rows()), 30, step=0.1)
    assert recovered is not None, [(r.id, r.status, r.retry_count, r.last_error) for r in rows()]
    published = rows()
    id_of_event = {r.event_id: r.id for r in published}
    records = [r for r in read_topic(stack.broker) if dict(r.headers).get("eventId", b"").decode() in id_of_event]
    seen = Counter(dict(r.headers)["eventId"].decode() for r in records)
    assert set(seen) == set(id_of_event), "an outbox row is missing from the topic"
    for record in records:
        assert record.key == str(json.loads(record.value)["reservationId"]).encode()
    by_partition: dict[int, list[int]] = {}
    for record in records:
        outbox_id = id_of_event[dict(record.headers)["eventId"].decode()]
        if outbox_id not in by_partition.setdefault(record.partition, []):
            by_partition[record.partition].append(outbox_id)
    for partition, ids in by_partition.items():
        assert ids == sorted(ids), f"partition {partition} has the events out of outbox order: {ids}"
    with db.connection_context():
        assert check.violations() == []
    assert stack.errors == []
    duplicates = sum(seen.values()) - len(seen)
    print(f"\n[broker down] 5 rows published {recovered:.1f} s after the broker returned; duplicates {duplicates}")
    record_property("republish_after_restart_s", round(recovered, 2))
    record_property("restart_wait_s", round(time.monotonic() - restarted, 2))


# --- (d) poison event, DLT, replay --------------------------------------------------------------
def test_a_poison_event_goes_to_the_dlt_after_three_retries_later_events_flow_and_replay_delivers_it_once(
    make_stack: Callable[..., Stack],
) -> None:
    # Given the consumer with the real retry policy (3 retries, 1 s apart) and a handler that fails
    # for one event while a downstream fault lasts
    stack = make_stack()
    client = stack.client()
    concert_id, _ = demo_seats()
    stuck_user, later_user = 501, 502
    stuck_token, later_token = (
        active_token(client, stuck_user, concert_id),
        active_token(client, later_user, concert_id),
    )
    fault = threading.Event()
    fault.set()
    calls: Counter[str] = Counter()

    def handler(value: bytes) -> object:
        try:
            event_id = str(json.loads(value)["eventId"])
        except Exception:
            event_id = "<unreadable>"
        calls[event_id] += 1
        if fault.is_set() and event_id == "stuck":
            raise RuntimeError("the queue service is unavailable")
        return handle_payment_completed(value)

    stack.start_consumer(handler, retries=3, interval=1.0)

    # When a malformed record, the event that will fail, and a good event arrive on one partition
    malformed = b'{"eventId": "broken", "userId": '
    sent = produce(
        stack.broker,
        [
            malformed,
            event_value("stuck", user_id=stuck_user, concert_id=concert_id),
            event_value("later", user_id=later_user, concert_id=concert_id),
        ],
        key=b"same-partition",
    )
    started = time.monotonic()

    # Then both failing records are dead-lettered after exactly 4 attempts and the good one is handled
    handled = wait_for(lambda: stack.redis.exists("events:done:later"), 20, step=0.05)
    assert handled is not None, f"the event behind the poison was never handled; {stack.errors}"
    print(f"\n[poison] the event behind two poison records was handled after {time.monotonic() - started:.1f} s")
    assert poll_status(client, later_token) == 401
    assert poll_status(client, stuck_token) == 200
    assert (calls["<unreadable>"], calls["stuck"], calls["later"]) == (4, 4, 1)
    letters = dead_letters(stack.broker.bootstrap)
    assert len(letters) == 2
    assert letters[0]["value"] == malformed.decode()
    assert json.loads(letters[1]["value"]) == json.loads(
        event_value("stuck", user_id=stuck_user, concert_id=concert_id)
    )
    for letter, original in zip(letters, sent[:2], strict=True):
        headers = letter["headers"]
        assert headers["attempts"] == "4"
        assert headers["original-topic"] == PAYMENT_TOPIC
        assert headers["original-partition"] == str(original.partition)
        assert headers["original-offset"] == str(original.offset)
        assert letter["key"] == "same-partition"
    assert "PoisonEvent" in letters[0]["headers"]["error"]
    assert letters[1]["headers"]["error"] == "RuntimeError: the queue service is unavailable"

    # When the fault is gone and that one dead letter is replayed
    fault.clear()
    replayed = replay(stack.broker.bootstrap, offset=letters[1]["offset"])

    # Then it is delivered once more, handled once, and the payer's token is expired
    assert replayed == [letters[1]["offset"]]
    assert wait_for(lambda: poll_status(client, stuck_token) == 401, 10) is not None, stack.errors
    time.sleep(0.5)
    assert (calls["<unreadable>"], calls["stuck"], calls["later"]) == (4, 5, 1)
    copies = [r for r in read_topic(stack.broker) if r.value == letters[1]["value"].encode()]
    assert len(copies) == 2
    assert dict(copies[1].headers) == {"replayed-from-dlt-offset": str(letters[1]["offset"]).encode()}
    assert len(dead_letters(stack.broker.bootstrap)) == 2

    # And the CLI lists the dead letters
    env = {
        **os.environ,
        "DATABASE_URL": stack.settings.database_url,
        "REDIS_URL": stack.settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap,
    }
    cli = subprocess.run(
        [sys.executable, "-m", "workers", "dlt", "list"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.strip().splitlines()
    assert lines[0] == "2 dead letter(s) in payment-completed.DLT"
    assert [line.split()[:4] for line in lines[1:]] == [["offset", str(x["offset"]), "attempts", "4"] for x in letters]
    as_json = subprocess.run(
        [sys.executable, "-m", "workers", "dlt", "list", "--json"], cwd=REPO, env=env, capture_output=True, text=True
    )
    listed = json.loads(as_json.stdout)
    assert [(x["offset"], x["value"], x["headers"]["attempts"], x["replayed"]) for x in listed] == [
        (letter["offset"], letter["value"], "4", letter is letters[1])
        for letter in letters  # replayed above
    ]
    assert [line.endswith("(replayed)") for line in lines[1:]] == [False, True]
    assert stack.errors == []


# --- (e) a record that can never be sent --------------------------------------------------------
def test_a_row_that_cannot_be_sent_is_failed_after_the_attempts_and_the_rows_around_it_go_out_once(
    make_stack: Callable[..., Stack],
) -> None:
    # Given a payment, an outbox row no producer can send (an invalid topic name), and another payment
    stack = make_stack(outbox_max_attempts=2)
    stack.start_worker()
    stack.start_relay()
    stack.relay_paused.set()
    client = stack.client()
    concert_id, seats = demo_seats()
    for n, user in enumerate((601, 602)):
        rid = given_held(user, seats[n])
        assert pay_over_http(client, active_token(client, user, concert_id), rid, Prefer="wait=5").status_code == 201
        if n == 0:
            with db.connection_context(), db.atomic():
                outbox.add_event(
                    aggregate_type="probe",
                    aggregate_id=1,
                    event_type="Probe",
                    topic="payment completed!",
                    key="probe",
                    payload={"probe": True},
                )

    def rows() -> list[OutboxEvent]:
        with db.connection_context():
            return list(OutboxEvent.select().order_by(OutboxEvent.id))

    # When the relay runs
    stack.relay_paused.clear()

    # Then the bad row is FAILED after exactly 2 attempts, and both payments' events are published once
    settled = wait_for(
        lambda: stack.errors or [r.status for r in rows()] == [outbox.PUBLISHED, outbox.FAILED, outbox.PUBLISHED], 15
    )
    time.sleep(1.0)  # a few more relay passes: nothing may be sent again
    good, bad, good2 = rows()
    sent = Counter(dict(r.headers)["eventId"].decode() for r in read_topic(stack.broker))
    assert sent == {good.event_id: 1, good2.event_id: 1}, f"copies on the topic; relay errors: {stack.errors[:1]}"
    assert settled is not None, [(r.id, r.topic, r.status, r.retry_count, r.last_error) for r in rows()]
    assert (bad.status, bad.retry_count) == (outbox.FAILED, 2)
    assert bad.last_error
    assert stack.errors == []
    env = {
        **os.environ,
        "DATABASE_URL": stack.settings.database_url,
        "REDIS_URL": stack.settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap,
    }
    cli = subprocess.run(
        [sys.executable, "-m", "workers", "outbox"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip().startswith("outbox: 0 pending, 2 published, 1 failed; oldest pending ")
