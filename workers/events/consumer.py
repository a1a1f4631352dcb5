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

from config import heartbeat
from config.bootstrap import current
from models.outbox import PAYMENT_COMPLETED
from models.refunds import PAYMENT_REFUNDED
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
    """The payment-completed consumer: handle, retry, dead-letter, then commit each poll's records."""
    from kafka import KafkaConsumer, KafkaProducer

    ensure_topics(bootstrap_servers)
    servers = bootstrap_servers.split(",")
    consumer = KafkaConsumer(
        PAYMENT_TOPIC,
        REFUND_TOPIC,
        bootstrap_servers=servers,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **CONSUMER_OPTS,
    )
    dlt = KafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True)
    run = _Poll(consumer, dlt, current().redis, handler, retries=retries, interval=interval)
    last_lag = 0.0
    try:
        while not stop.is_set():
            heartbeat.beat()  # the poll loop is alive (docker-compose.yml's health check)
            if not run(list(consumer.poll(timeout_ms=500, max_records=100).items())):
                stop.wait(interval)
                continue
            if time.monotonic() - last_lag > LAG_EVERY_S:
                last_lag = time.monotonic()
                with contextlib.suppress(Exception):  # metrics only: never worth stopping the consumer
                    run.redis.hset(STATS_KEY, "lag", _lag(consumer))
    finally:
        consumer.close()
        dlt.close(timeout=5)


class _Poll:
    """Handle the records of one poll in order: each is handled or dead-lettered; then one commit
    for the poll (after processing: a crash replays at most one poll, which the event-id check
    makes harmless)."""

    def __init__(
        self, consumer: Any, dlt: Any, redis: Any, handler: Callable[[bytes], object], *, retries: int, interval: float
    ) -> None:
        self.consumer, self.dlt, self.redis, self.handler = consumer, dlt, redis, handler
        self.retries, self.interval = retries, interval

    def __call__(self, batches: list[tuple[Any, list[Any]]]) -> bool:
        """True when every record was settled; False when Redis went away and the rest was rewound."""

        done: dict[Any, Any] = {}  # partition -> next offset, committed once for the whole poll
        try:
            return self._settle(batches, done)
        finally:
            if done:
                self.consumer.commit(done)

    def _settle(self, batches: list[tuple[Any, list[Any]]], done: dict[Any, Any]) -> bool:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        for i, (tp, records) in enumerate(batches):
            for rec in records:
                ok, error, attempts = with_retries(
                    self.handler, rec.value, retries=self.retries, interval=self.interval
                )
                if not ok and not _reachable(self.redis):
                    # Redis (where the handler works) is down: the event is fine, so it is neither
                    # dead-lettered nor committed. Rewind to it (and to every record of this poll not
                    # handled yet) and come back once Redis answers.
                    log.warning("Redis unreachable: holding %s[%s]@%s until it returns", *_where(rec))
                    self.consumer.seek(tp, rec.offset)
                    for later_tp, later in batches[i + 1 :]:
                        self.consumer.seek(later_tp, later[0].offset)
                    return False
                if not ok:
                    self._dead_letter(rec, error, attempts)
                _stat(self.redis, "consumed_total")
                done[TopicPartition(tp.topic, tp.partition)] = OffsetAndMetadata(rec.offset + 1, "", -1)
        return True

    def _dead_letter(self, rec: Any, error: str, attempts: int) -> None:
        self.dlt.send(
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
        _stat(self.redis, "dead_lettered_total")


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
