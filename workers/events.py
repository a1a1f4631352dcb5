"""Events: the outbox relay's publishers (Kafka, or the in-process bus), the payment-completed
consumer with retries and a dead-letter topic, and the DLT tools.

Redis keys: `events:done:<eventId>` (a consumed event, 7 days: replays change nothing),
`stats:outbox` / `stats:consumer` (HASH, read by /metrics), `dlt:replayed` (SET of DLT offsets
replayed), `dlt:inprocess` (LIST, the embedded bus's dead letters).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from config.bootstrap import Services, current
from models import outbox
from models.waiting_room import WaitingRoom

log = logging.getLogger("workers.events")

PAYMENT_TOPIC = outbox.PAYMENT_TOPIC
DLT_TOPIC = f"{PAYMENT_TOPIC}.DLT"
GROUP = "queue-expirer"
RETRIES = 3
RETRY_INTERVAL = 1.0
CONSUMER_OPTS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


class PoisonEvent(ValueError):
    """Raised when an event cannot be understood (bad JSON or fields); it will go to the DLT."""


# --- handling ---------------------------------------------------------------------------------
def handle_payment_completed(value: bytes | str) -> bool:
    """Expire the payer's queue token; idempotent by event id. True if this call did the work."""
    try:
        event = json.loads(value)
        event_id = str(event["eventId"])
        user_id, concert_id = int(event["userId"]), int(event["concertId"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PoisonEvent(f"unreadable PaymentCompleted event: {exc}") from None
    services = current()
    if services.redis.exists(f"events:done:{event_id}"):
        return False
    s = services.settings
    room = WaitingRoom(services.redis, active_limit=s.active_limit, active_ttl=s.active_ttl, waiting_ttl=s.waiting_ttl)
    room.expire_user(user_id=user_id, concert_id=concert_id)
    services.redis.set(f"events:done:{event_id}", 1, ex=7 * 86_400)
    return True


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


# --- publishing -------------------------------------------------------------------------------
class KafkaPublisher:
    """Publish outbox rows with an idempotent, acks=all producer, checking every send's result."""

    def __init__(self, bootstrap_servers: str) -> None:
        from kafka import KafkaProducer

        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_block_ms=3000,
            request_timeout_ms=5000,
            delivery_timeout_ms=10_000,
        )

    def __call__(self, rows: list[outbox.OutboxEvent]) -> list[Exception | None]:
        futures: list[Any] = []
        for row in rows:
            try:
                futures.append(
                    self.producer.send(
                        row.topic,
                        key=(row.message_key or "").encode(),
                        value=row.payload.encode(),
                        headers=[("eventId", row.event_id.encode()), ("eventType", row.event_type.encode())],
                    )
                )
            except Exception as exc:  # metadata/buffer errors: this row and all after it wait
                futures.append(exc)
        try:
            self.producer.flush(timeout=5)
        except Exception:
            log.warning("producer flush failed", exc_info=True)
        outcomes: list[Exception | None] = []
        for f in futures:
            if isinstance(f, Exception):
                outcomes.append(f)
                continue
            try:
                f.get(timeout=0.5)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def close(self) -> None:
        """Flush and close the producer."""
        self.producer.close(timeout=5)


class InProcessBus:
    """Embedded mode: hand each event to the same consumer handler, with the same retries and a DLT list."""

    def __call__(self, rows: list[outbox.OutboxEvent]) -> list[Exception | None]:
        for row in rows:
            ok, error, attempts = with_retries(
                handle_payment_completed, row.payload.encode(), retries=RETRIES, interval=0.05
            )
            if not ok:
                current().redis.rpush(
                    "dlt:inprocess",
                    json.dumps({"error": error, "attempts": attempts, "topic": row.topic, "value": row.payload}),
                )
        return [None] * len(rows)


_publisher: KafkaPublisher | InProcessBus | None = None
_publisher_lock = threading.Lock()


def publisher(services: Services) -> KafkaPublisher | InProcessBus:
    """This process's publisher: Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else the in-process bus."""
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            servers = services.settings.kafka_bootstrap_servers
            if servers:
                ensure_topics(servers)
                _publisher = KafkaPublisher(servers)
            else:
                _publisher = InProcessBus()
        return _publisher


def is_transient(error: Exception) -> bool:
    """Broker unreachable, slow or restarted (retry forever), as opposed to a record the broker refuses."""
    from kafka import errors

    transient = (
        errors.KafkaConnectionError,
        errors.KafkaTimeoutError,
        errors.UnknownProducerIdError,
        errors.OutOfOrderSequenceNumberError,
    )
    return bool(getattr(error, "retriable", False)) or isinstance(error, transient) or "ProducerId" in str(error)


def _drop_publisher(pub: KafkaPublisher | InProcessBus) -> None:
    global _publisher
    with _publisher_lock:
        if _publisher is pub:
            _publisher = None
    if isinstance(pub, KafkaPublisher):
        try:
            pub.producer.close(timeout=0)
        except Exception:
            log.debug("closing the failed producer raised", exc_info=True)


def relay_outbox() -> int:
    """One relay pass (the scheduler's outbox job): publish pending rows, record stats; return published."""
    services = current()
    try:
        pub = publisher(services)
    except Exception as exc:
        log.warning("event broker unreachable, outbox rows stay PENDING: %s", exc)
        return 0
    result = outbox.relay_once(
        publish=pub, batch=200, max_attempts=services.settings.outbox_max_attempts, transient=is_transient
    )
    if result.failed_attempts:
        _drop_publisher(pub)  # an idempotent producer does not recover from a long outage: start afresh
    if result.claimed:
        pipe = services.redis.pipeline()
        pipe.hincrby("stats:outbox", "published_total", result.published)
        pipe.hincrby("stats:outbox", "failed_attempts_total", result.failed_attempts)
        if result.latencies_s:
            pipe.hincrbyfloat("stats:outbox", "latency_sum_s", sum(result.latencies_s))
            pipe.hset("stats:outbox", "last_latency_s", max(result.latencies_s))
        pipe.execute()
    return result.published


def ensure_topics(bootstrap_servers: str) -> None:
    """Create the payment topic (3 partitions) and its DLT if missing."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), request_timeout_ms=5000)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, n, 1) for t, n in ((PAYMENT_TOPIC, 3), (DLT_TOPIC, 1)) if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()


# --- consuming --------------------------------------------------------------------------------
def consume(
    stop: threading.Event,
    *,
    bootstrap_servers: str,
    handler: Callable[[bytes], object] = handle_payment_completed,
    retries: int = RETRIES,
    interval: float = RETRY_INTERVAL,
) -> None:
    """The payment-completed consumer: handle, retry, dead-letter, then commit each record."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    ensure_topics(bootstrap_servers)
    servers = bootstrap_servers.split(",")
    consumer = KafkaConsumer(
        PAYMENT_TOPIC,
        bootstrap_servers=servers,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **CONSUMER_OPTS,
    )
    dlt = KafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True)
    redis = current().redis
    last_lag = 0.0
    try:
        while not stop.is_set():
            batches = list(consumer.poll(timeout_ms=500, max_records=100).items())
            held = False
            for i, (tp, records) in enumerate(batches):
                for rec in records:
                    ok, error, attempts = with_retries(handler, rec.value, retries=retries, interval=interval)
                    if not ok and not _reachable(redis):
                        # Redis (where the handler works) is down: the event is fine, so it is neither
                        # dead-lettered nor committed. Rewind to it (and to every record of this poll not
                        # handled yet) and come back once Redis answers.
                        log.warning("Redis unreachable: holding %s[%s]@%s until it returns", *_where(rec))
                        consumer.seek(tp, rec.offset)
                        for later_tp, later in batches[i + 1 :]:
                            consumer.seek(later_tp, later[0].offset)
                        held = True
                        break
                    if not ok:
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
                        _stat(redis, "dead_lettered_total")
                    _stat(redis, "consumed_total")
                    consumer.commit({TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(rec.offset + 1, "", -1)})
                if held:
                    break
            if held:
                stop.wait(interval)
                continue
            if time.monotonic() - last_lag > 5:
                last_lag = time.monotonic()
                with contextlib.suppress(Exception):  # metrics only: never worth stopping the consumer
                    redis.hset("stats:consumer", "lag", _lag(consumer))
    finally:
        consumer.close()
        dlt.close(timeout=5)


def _reachable(client: Any) -> bool:
    """True when Redis answers a PING."""
    try:
        return bool(client.ping())
    except Exception:
        return False


def _stat(client: Any, name: str) -> None:
    """Count in `stats:consumer`; a Redis error here is logged, never fatal to the consumer."""
    try:
        client.hincrby("stats:consumer", name, 1)
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


# --- dead letters -----------------------------------------------------------------------------
def dead_letters(bootstrap_servers: str) -> list[dict[str, Any]]:
    """Every record of the DLT, oldest first, with its headers."""
    from kafka import KafkaConsumer, TopicPartition

    ensure_topics(bootstrap_servers)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","), enable_auto_commit=False)
    try:
        parts = [TopicPartition(DLT_TOPIC, p) for p in (consumer.partitions_for_topic(DLT_TOPIC) or {0})]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for rec in records:
                    out.append(
                        {
                            "partition": tp.partition,
                            "offset": rec.offset,
                            "key": rec.key.decode() if rec.key else None,
                            "headers": {k: v.decode(errors="replace") for k, v in rec.headers},
                            "value": rec.value.decode(errors="replace"),
                        }
                    )
        return sorted(out, key=lambda r: (r["partition"], r["offset"]))
    finally:
        consumer.close()


def replay(bootstrap_servers: str, *, offset: int | None = None, include_replayed: bool = False) -> list[int]:
    """Send DLT records (one offset, or all not yet replayed) back to the main topic; return their offsets."""
    from kafka import KafkaProducer

    redis = current().redis
    letters = dead_letters(bootstrap_servers)
    chosen = [r for r in letters if offset is None or r["offset"] == offset]
    if offset is None and not include_replayed:
        done = {int(x) for x in redis.smembers("dlt:replayed")}  # type: ignore[union-attr]
        chosen = [r for r in chosen if r["offset"] not in done]
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), acks="all", enable_idempotence=True)
    try:
        for r in chosen:
            producer.send(
                PAYMENT_TOPIC,
                key=(r["key"] or "").encode(),
                value=r["value"].encode(),
                headers=[("replayed-from-dlt-offset", str(r["offset"]).encode())],
            ).get(timeout=10)
            redis.sadd("dlt:replayed", r["offset"])
    finally:
        producer.close(timeout=5)
    return [r["offset"] for r in chosen]
