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

from models.db import BaseModel, UtcDateTimeField, db, is_mysql, replica_read, utcnow

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
    *,
    publish: Publish,
    batch: int = 100,
    max_attempts: int = 50,
    transient: Callable[[Exception], bool] | None = None,
    shard: tuple[int, int] | None = None,
) -> RelayResult:
    """Read up to `batch` PENDING rows in id order, publish them outside any transaction, record.

    `publish` sends the rows in order and returns, per row, None (acknowledged) or the error.
    No lock or transaction is held while the broker is called (CONVENTIONS habit 5): the chaos
    run showed a locking claim held through a hung publish blocking every new outbox row, i.e.
    every payment. One relay runs at a time (the scheduler's leader lease); if two ever overlap
    during a takeover, a row may be published twice, which invariant 4 allows (at least once,
    idempotent consumer). Every failure counts in retry_count/last_error; only failures that are
    not `transient` (broker unreachable, timeouts) move a row to FAILED after `max_attempts`, so
    an outage of any length leaves rows PENDING until the broker is back.

    `shard=(k, n)` takes only the rows whose aggregate id is k modulo n, so n relays split the
    rows without overlap, and the events of one reservation (the Kafka message key) stay with
    one relay, in id order.
    """
    pending = OutboxEvent.status == PENDING
    if shard is not None:
        # peewee's `%` is LIKE, PyMySQL reads a bare % as a placeholder: MOD() there, % on SQLite
        modulo = (
            pw.fn.MOD(OutboxEvent.aggregate_id, shard[1])
            if is_mysql()
            else pw.Expression(OutboxEvent.aggregate_id, "%", shard[1])
        )
        pending &= modulo == shard[0]
    rows = list(OutboxEvent.select().where(pending).order_by(OutboxEvent.id).limit(batch))
    if not rows:
        return RelayResult(0, 0, 0, [])
    outcomes = publish(rows)
    now = utcnow()
    published: list[int] = []
    latencies: list[float] = []
    failures = 0
    with db.atomic():
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
            ).where((OutboxEvent.id == row.id) & (OutboxEvent.status == PENDING)).execute()
        if published:
            OutboxEvent.update(status=PUBLISHED, published_at=now).where(
                OutboxEvent.id.in_(published) & (OutboxEvent.status == PENDING)
            ).execute()
    return RelayResult(len(rows), len(published), failures, latencies)


@replica_read
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


WAKE_KEY = "outbox:wake"  # LIST: "a row was committed"; the relay's wake-up signal (at most one item)


def wake(client: Any) -> None:
    """After a commit that wrote an outbox row: tell the relay to run now instead of at its next tick.

    Best effort: the relay's tick publishes the row anyway, so a failed signal only costs latency.
    """
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(WAKE_KEY, 1)
        pipe.ltrim(WAKE_KEY, 0, 0)
        pipe.execute()
    except Exception:  # the tick is the fallback
        return
