"""The payment and refund topics and the dead-letter topic, created on first use."""

from __future__ import annotations

import contextlib

from config.bootstrap import current
from models import outbox, refunds

PAYMENT_TOPIC = outbox.PAYMENT_TOPIC
REFUND_TOPIC = refunds.REFUND_TOPIC
DLT_TOPIC = f"{PAYMENT_TOPIC}.DLT"  # one dead-letter topic: each dead letter names its topic


def ensure_topics(
    bootstrap_servers: str, *, partitions: int | None = None, replication_factor: int | None = None
) -> None:
    """Create the payment and refund topics (KAFKA_PARTITIONS each) and the DLT if missing, each
    with KAFKA_REPLICATION_FACTOR copies and min.insync.replicas = RF - 1 (at least 1): with
    acks=all a publish survives the loss of one broker and still succeeds while one broker is
    down (RF 3: 2 in sync; with min.insync.replicas = RF a single broker down stops every publish)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    settings = current().settings
    partitions = partitions or settings.kafka_partitions
    replication_factor = replication_factor or settings.kafka_replication_factor
    configs = {"min.insync.replicas": str(max(1, replication_factor - 1))}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), request_timeout_ms=5000)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(topic, n, replication_factor, topic_configs=configs)
            for topic, n in ((PAYMENT_TOPIC, partitions), (REFUND_TOPIC, partitions), (DLT_TOPIC, 1))
            if topic not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()
