"""The transactional outbox: events written in the same transaction as the state they announce."""

from __future__ import annotations

import peewee as pw

from models.db import BaseModel, UtcDateTimeField, utcnow

PENDING, PUBLISHED, FAILED = "PENDING", "PUBLISHED", "FAILED"


class OutboxEvent(BaseModel):
    """One event to publish to Kafka after commit (PENDING -> PUBLISHED, or FAILED after retries)."""

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
        indexes = ((("status", "id"), False),)
