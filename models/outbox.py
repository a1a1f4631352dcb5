"""The transactional outbox: events written in the same transaction as the state they announce,
published to Kafka (or the in-process bus) after commit by the relay."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee as pw

from models.db import BaseModel, UtcDateTimeField, db, is_mysql, utcnow

PENDING, PUBLISHED, FAILED = "PENDING", "PUBLISHED", "FAILED"
PAYMENT_COMPLETED = "PaymentCompleted"
PAYMENT_TOPIC = "payment-completed"


class OutboxEvent(BaseModel):
    """One event to publish after commit (PENDING -> PUBLISHED, or FAILED after max attempts)."""

    id = pw.BigAutoField()
    event_id = pw.CharField(max_length=36, unique=True)
    aggregate_type = pw.CharField(max_length=32)
    aggregate_id = pw.BigIntegerField()
    event_type = pw.CharField(max_length=64)
    topic = pw.CharField(max_length=128)
    message_key = pw.CharField(max_length=64, null=True)
    payload = pw.TextField()
    status = pw.CharField(max_length=16, default=PENDING)
    created_at = UtcDateTimeField(default=utcnow)
    published_at = UtcDateTimeField(null=True)
    retry_count = pw.IntegerField(default=0)
    last_error = pw.TextField(null=True)

    class Meta:
        table_name = "outbox_events"
        indexes = ((("status", "id"), False), (("aggregate_type", "aggregate_id"), False))


@dataclass(frozen=True)
class OutboxStats:
    """Counts by status and the age of the oldest PENDING row."""

    pending: int
    published: int
    failed: int
    oldest_pending_age_s: float


@dataclass(frozen=True)
class RelayResult:
    """What one relay pass did."""

    claimed: int
    published: int
    failed_attempts: int
    latencies_s: list[float]


def add_event(
    *, aggregate_type: str, aggregate_id: int, event_type: str, topic: str, key: str, payload: dict[str, Any]
) -> str:
    """Write an event inside the caller's transaction; return its event id."""
    event_id = str(uuid.uuid4())
    OutboxEvent.create(
        event_id=event_id,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event_type,
        topic=topic,
        message_key=key,
        payload=json.dumps({"eventId": event_id, "eventType": event_type, **payload}),
    )
    return event_id


Publish = Callable[[list[OutboxEvent]], list[Exception | None]]


def relay_once(
    *, publish: Publish, batch: int = 100, max_attempts: int = 50, transient: Callable[[Exception], bool] | None = None
) -> RelayResult:
    """Claim up to `batch` PENDING rows in id order (FOR UPDATE SKIP LOCKED on MySQL), publish, record.

    `publish` sends the rows in order and returns, per row, None (acknowledged) or the error.
    Rows stay locked while they are published, so two relays never publish the same row at once.
    Every failure counts in retry_count/last_error; only failures that are not `transient`
    (broker unreachable, timeouts) move a row to FAILED after `max_attempts`, so an outage of
    any length leaves rows PENDING until the broker is back.

    On MySQL the claim runs at READ COMMITTED: at REPEATABLE READ the locking read also takes
    next-key locks on the `(status, id)` index, which block the insert of every new outbox row —
    every payment — for as long as `publish` takes (a hung broker stopped all payments in the
    chaos run). READ COMMITTED locks only the claimed rows.
    """
    if is_mysql() and not db.in_transaction():
        db.execute_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")  # the next transaction only
    with db.atomic():
        query = OutboxEvent.select().where(OutboxEvent.status == PENDING).order_by(OutboxEvent.id).limit(batch)
        if is_mysql():
            query = query.for_update("FOR UPDATE SKIP LOCKED")  # type: ignore[arg-type]
        rows = list(query)
        if not rows:
            return RelayResult(0, 0, 0, [])
        outcomes = publish(rows)
        now = utcnow()
        published: list[int] = []
        latencies: list[float] = []
        failures = 0
        for row, error in zip(rows, outcomes, strict=True):
            if error is None:
                published.append(row.id)
                latencies.append((now - row.created_at).total_seconds())
                continue
            failures += 1
            retriable = transient is not None and transient(error)
            status = FAILED if row.retry_count + 1 >= max_attempts and not retriable else PENDING
            OutboxEvent.update(
                retry_count=OutboxEvent.retry_count + 1, last_error=str(error)[:2000], status=status
            ).where(OutboxEvent.id == row.id).execute()
        if published:
            OutboxEvent.update(status=PUBLISHED, published_at=now).where(OutboxEvent.id.in_(published)).execute()
    return RelayResult(len(rows), len(published), failures, latencies)


def stats() -> OutboxStats:
    """Counts by status and the oldest pending age (seconds)."""
    counts = {
        s: n
        for s, n in OutboxEvent.select(OutboxEvent.status, pw.fn.COUNT(OutboxEvent.id))
        .group_by(OutboxEvent.status)
        .tuples()
    }
    oldest = OutboxEvent.select(pw.fn.MIN(OutboxEvent.created_at)).where(OutboxEvent.status == PENDING).scalar()
    if isinstance(oldest, str):
        oldest = dt.datetime.fromisoformat(oldest)
    age = (utcnow() - oldest).total_seconds() if oldest else 0.0
    return OutboxStats(counts.get(PENDING, 0), counts.get(PUBLISHED, 0), counts.get(FAILED, 0), max(0.0, age))


def retry_failed() -> int:
    """Put FAILED rows back to PENDING (attempts reset); return how many."""
    return int(OutboxEvent.update(status=PENDING, retry_count=0).where(OutboxEvent.status == FAILED).execute())
