"""The outbox relay's publishers: Kafka (idempotent, acks=all), or the embedded in-process bus.

Redis key: `stats:outbox` (HASH, read by /metrics).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config.bootstrap import Services, current
from models import outbox
from models.db import db
from workers.events.consumer import RETRIES, handle_event, with_retries
from workers.events.dead_letters import INPROCESS_KEY
from workers.events.topics import ensure_topics

log = logging.getLogger("workers.events")

STATS_KEY = "stats:outbox"


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
        return [_outcome(f) for f in futures]

    def close(self) -> None:
        """Flush and close the producer."""
        self.producer.close(timeout=5)


def _outcome(future: Any) -> Exception | None:
    """None when a send was acknowledged, else why not."""
    if isinstance(future, Exception):
        return future
    try:
        future.get(timeout=0.5)
        return None
    except Exception as exc:
        return exc


class InProcessBus:
    """Embedded mode: hand each event to the same consumer handler, with the same retries and a DLT list."""

    def __call__(self, rows: list[outbox.OutboxEvent]) -> list[Exception | None]:
        for row in rows:
            ok, error, attempts = with_retries(handle_event, row.payload.encode(), retries=RETRIES, interval=0.05)
            if not ok:
                log.warning("event %s dead-lettered after %s attempts: %s", row.id, attempts, error)
                current().redis.rpush(
                    INPROCESS_KEY,
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
                ensure_topics(
                    servers,
                    partitions=services.settings.kafka_partitions,
                    replication_factor=services.settings.kafka_replication_factor,
                )
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


DRAIN_BATCH = 500  # rows per publish round trip
DRAIN_BUDGET_S = 5.0  # one scheduler tick drains for at most this long, then yields to the next tick


def relay_outbox() -> int:
    """The scheduler's outbox job: drain the pending rows, OUTBOX_RELAYS shards side by side; published.

    Each shard publishes batch after batch until it is drained (a batch shorter than DRAIN_BATCH),
    a publish fails, or DRAIN_BUDGET_S passes: a backlog goes out at the broker's pace instead of
    one batch per OUTBOX_INTERVAL (200 rows a second before).
    """
    services = current()
    try:
        pub = publisher(services)
    except Exception as exc:
        log.warning("event broker unreachable, outbox rows stay PENDING: %s", exc)
        return 0
    relays = services.settings.outbox_relays
    if relays == 1:
        return _drain(services, pub, None)
    with ThreadPoolExecutor(relays, thread_name_prefix="outbox-relay") as pool:
        return sum(pool.map(lambda k: _drain_on_own_connection(services, pub, (k, relays)), range(relays)))


def _drain_on_own_connection(services: Services, pub: KafkaPublisher | InProcessBus, shard: tuple[int, int]) -> int:
    with db.connection_context():
        return _drain(services, pub, shard)


def _drain(services: Services, pub: KafkaPublisher | InProcessBus, shard: tuple[int, int] | None) -> int:
    total, deadline = 0, time.monotonic() + DRAIN_BUDGET_S
    while True:
        result = outbox.relay_once(
            publish=pub,
            batch=DRAIN_BATCH,
            max_attempts=services.settings.outbox_max_attempts,
            transient=is_transient,
            shard=shard,
        )
        total += result.published
        _record(services, result)
        if result.failed_attempts:
            _drop_publisher(pub)  # an idempotent producer does not recover from a long outage: start afresh
            return total
        if result.claimed < DRAIN_BATCH or time.monotonic() > deadline:
            return total


def _record(services: Services, result: outbox.RelayResult) -> None:
    if result.published:
        log.info("outbox: published %s event(s)", result.published)
    if result.claimed:
        pipe = services.redis.pipeline()
        pipe.hincrby(STATS_KEY, "published_total", result.published)
        pipe.hincrby(STATS_KEY, "failed_attempts_total", result.failed_attempts)
        if result.latencies_s:
            pipe.hincrbyfloat(STATS_KEY, "latency_sum_s", sum(result.latencies_s))
            pipe.hset(STATS_KEY, "last_latency_s", max(result.latencies_s))
        pipe.execute()
