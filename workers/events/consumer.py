"""The payment-completed consumer: expire the payer's queue token, retry, dead-letter, commit.

Redis keys: `events:done:<eventId>` (a consumed event, 7 days: replays change nothing),
`stats:consumer` (HASH, read by /metrics).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener

from config import heartbeat
from config.bootstrap import current
from models.outbox import PAYMENT_COMPLETED
from models.refunds import PAYMENT_REFUNDED
from workers.events.retries import Settler
from workers.events.topics import DLT_TOPIC, PAYMENT_TOPIC, REFUND_TOPIC, ensure_topics

log = logging.getLogger("workers.events")

GROUP = "queue-expirer"
RETRIES = 3
RETRY_INTERVAL = 1.0
CONSUMER_OPTS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
STATS_KEY = "stats:consumer"
LAG_EVERY_S = 5.0


class PoisonEvent(ValueError):
    """Raised when an event cannot be understood (bad JSON or fields); it will go to the DLT."""


def done_key(event_id: str) -> str:
    """The marker of a consumed event."""
    return f"events:done:{event_id}"


def handle_payment_completed(value: bytes | str) -> bool:
    """Expire the payer's queue token; idempotent by event id. True if this call did the work."""
    try:
        event = json.loads(value)
        event_id = str(event["eventId"])
        user_id, concert_id = int(event["userId"]), int(event["concertId"])
        paid_with = event.get("tokenFingerprint")
    except (ValueError, KeyError, TypeError) as exc:
        raise PoisonEvent(f"unreadable PaymentCompleted event: {exc}") from None
    services = current()
    if services.redis.exists(done_key(event_id)):
        return False
    ended = services.waiting_room().expire_user(
        user_id=user_id, concert_id=concert_id, token_fingerprint=str(paid_with) if paid_with else None
    )
    services.redis.set(done_key(event_id), 1, ex=7 * 86_400)
    log.info(
        "PaymentCompleted %s consumed: user %s's queue token for concert %s %s",
        event_id,
        user_id,
        concert_id,
        "ended" if ended else "was already gone",
    )
    return True


def handle_payment_refunded(value: bytes | str) -> bool:
    """Note a refund (the refund's transaction already freed the seat and credited the wallet, so
    this writes nothing a replay could duplicate: only the consumed marker). True if first seen."""
    try:
        event = json.loads(value)
        event_id, payment_id = str(event["eventId"]), int(event["paymentId"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PoisonEvent(f"unreadable PaymentRefunded event: {exc}") from None
    if not current().redis.set(done_key(event_id), 1, ex=7 * 86_400, nx=True):
        return False
    log.info("PaymentRefunded %s consumed: payment %s refunded", event_id, payment_id)
    return True


def handle_event(value: bytes | str) -> bool:
    """Route an outbox event to its handler by `eventType` (PaymentCompleted when absent: older rows)."""
    try:
        event_type = json.loads(value).get("eventType", PAYMENT_COMPLETED)
    except (ValueError, AttributeError) as exc:
        raise PoisonEvent(f"unreadable event: {exc}") from None
    if event_type == PAYMENT_REFUNDED:
        return handle_payment_refunded(value)
    return handle_payment_completed(value)


def with_retries(
    handler: Callable[[bytes], object],
    value: bytes,
    *,
    retries: int = RETRIES,
    interval: float = RETRY_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str, int]:
    """Run a handler; retry `retries` times `interval` apart. Return (ok, last error, attempts)."""
    error = ""
    for attempt in range(1, retries + 2):
        try:
            handler(value)
            return True, "", attempt
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("event handling failed (attempt %s/%s): %s", attempt, retries + 1, error)
            if attempt <= retries:
                sleep(interval)
    return False, error, retries + 1


def consume(
    stop: threading.Event,
    *,
    bootstrap_servers: str,
    handler: Callable[[bytes], object] = handle_event,
    retries: int = RETRIES,
    interval: float = RETRY_INTERVAL,
) -> None:
    """The payment-completed consumer: handle each record; a failing one is retried from the
    in-memory retry queue (workers/events/retries.py) while its partition goes on, then
    dead-lettered; offsets are committed after each poll, never past an unsettled record."""
    from kafka import KafkaConsumer, KafkaProducer

    ensure_topics(bootstrap_servers)
    servers = bootstrap_servers.split(",")
    consumer = KafkaConsumer(
        bootstrap_servers=servers,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **CONSUMER_OPTS,
    )
    dlt = KafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True)
    redis = current().redis
    settler = Settler(
        handler,
        dead_letter=lambda rec, error, attempts: _dead_letter(dlt, redis, rec, error, attempts),
        settled=lambda: _stat(redis, "consumed_total"),
        redis_up=lambda: _reachable(redis),
        retries=retries,
        interval=interval,
    )
    consumer.subscribe([PAYMENT_TOPIC, REFUND_TOPIC], listener=_Rebalance(consumer, settler))
    last_lag = 0.0
    try:
        while not stop.is_set():
            heartbeat.beat()  # the poll loop is alive (docker-compose.yml's health check)
            settler.retry_due()
            due_in = settler.next_due_in()
            wait_ms = 500 if due_in is None else int(min(0.5, due_in) * 1000)
            rewind = settler.take(list(consumer.poll(timeout_ms=wait_ms, max_records=100).items()))
            for tp, offset in rewind:
                consumer.seek(tp, offset)
            _commit(consumer, settler)
            _pace(consumer, settler)
            if rewind:
                stop.wait(interval)
                continue
            if time.monotonic() - last_lag > LAG_EVERY_S:
                last_lag = time.monotonic()
                with contextlib.suppress(Exception):  # metrics only: never worth stopping the consumer
                    redis.hset(STATS_KEY, "lag", _lag(consumer))
    finally:
        consumer.close(autocommit=False)
        dlt.close(timeout=5)


def _commit(consumer: Any, settler: Settler, only: Any = None) -> None:
    """Commit each partition up to its oldest unsettled record (after processing, one request for
    the poll); a refused commit only means a redelivery the event-id marker absorbs."""
    from kafka.structs import OffsetAndMetadata

    points = settler.commit_points()
    if only is not None:
        points = {tp: offset for tp, offset in points.items() if tp in only}
    if not points:
        return
    try:
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in points.items()})
    except Exception as exc:
        log.warning("offset commit failed (the records will be redelivered): %s", exc)
        return
    settler.committed(points)


def _pace(consumer: Any, settler: Settler) -> None:
    """Pause a partition whose retry queue is full, resume it once it drained below the bound."""
    paused = consumer.paused()
    for tp in consumer.assignment():
        if settler.full(tp) and tp not in paused:
            log.warning("%s[%s]: %s records in retry, fetching paused", tp.topic, tp.partition, settler.pending(tp))
            consumer.pause(tp)
        elif tp in paused and not settler.full(tp):
            consumer.resume(tp)


class _Rebalance(ConsumerRebalanceListener):
    """On losing partitions: commit what is settled, then drop their retry queue (the next owner
    redelivers the unsettled records from the committed offset)."""

    def __init__(self, consumer: Any, settler: Settler) -> None:
        self.consumer, self.settler = consumer, settler

    def on_partitions_revoked(self, revoked: Any) -> None:
        _commit(self.consumer, self.settler, only=set(revoked))
        self.settler.forget(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.settler.forget(assigned)  # a fresh start from the committed offsets


def _dead_letter(dlt: Any, redis: Any, rec: Any, error: str, attempts: int) -> None:
    """Publish a record to the DLT with why and where it came from (acks=all, waited for)."""
    dlt.send(
        DLT_TOPIC,
        key=rec.key,
        value=rec.value,
        headers=[
            ("error", error.encode()),
            ("attempts", str(attempts).encode()),
            ("original-topic", rec.topic.encode()),
            ("original-partition", str(rec.partition).encode()),
            ("original-offset", str(rec.offset).encode()),
        ],
    ).get(timeout=10)
    log.warning("dead-lettered %s[%s]@%s after %s attempts: %s", *_where(rec), attempts, error)
    _stat(redis, "dead_lettered_total")


def _reachable(client: Any) -> bool:
    """True when Redis answers a PING."""
    try:
        return bool(client.ping())
    except Exception:
        return False


def _stat(client: Any, name: str) -> None:
    """Count in `stats:consumer`; a Redis error here is logged, never fatal to the consumer."""
    try:
        client.hincrby(STATS_KEY, name, 1)
    except Exception as exc:
        log.warning("could not count %s: %s", name, exc)


def _where(rec: Any) -> tuple[str, int, int]:
    return rec.topic, rec.partition, rec.offset


def _lag(consumer: Any) -> int:
    """Records not yet consumed by this group across the partitions it owns."""
    assigned = list(consumer.assignment())
    if not assigned:
        return 0
    ends = consumer.end_offsets(assigned)
    return int(sum(max(0, ends[tp] - consumer.position(tp)) for tp in assigned))
