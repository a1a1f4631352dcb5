"""The payment and refund topics and the dead-letter topic, created on first use."""

from __future__ import annotations

import contextlib

from models import outbox, refunds

PAYMENT_TOPIC = outbox.PAYMENT_TOPIC
REFUND_TOPIC = refunds.REFUND_TOPIC
DLT_TOPIC = f"{PAYMENT_TOPIC}.DLT"  # one dead-letter topic: each dead letter names its topic


def ensure_topics(bootstrap_servers: str) -> None:
    """Create the payment and refund topics (3 partitions each) and the DLT if missing."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), request_timeout_ms=5000)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(t, n, 1) for t, n in ((PAYMENT_TOPIC, 3), (REFUND_TOPIC, 3), (DLT_TOPIC, 1)) if t not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()
