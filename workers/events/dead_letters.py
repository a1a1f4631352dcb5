"""The payment topic's dead letters: list them, replay them (and the embedded bus's DLT list).

Redis keys: `dlt:replayed` (SET of DLT offsets replayed), `dlt:inprocess` (LIST, the embedded
bus's dead letters).
"""

from __future__ import annotations

import time
from typing import Any

from config.bootstrap import current
from workers.events.topics import DLT_TOPIC, PAYMENT_TOPIC, ensure_topics

REPLAYED_KEY = "dlt:replayed"
INPROCESS_KEY = "dlt:inprocess"


def inprocess_letters() -> list[str]:
    """The embedded bus's dead letters (JSON), oldest first."""
    return list(current().redis.lrange(INPROCESS_KEY, 0, -1))  # type: ignore[arg-type]


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
                out.extend(_letter(tp.partition, rec) for rec in records)
        return sorted(out, key=lambda r: (r["partition"], r["offset"]))
    finally:
        consumer.close()


def _letter(partition: int, rec: Any) -> dict[str, Any]:
    return {
        "partition": partition,
        "offset": rec.offset,
        "key": rec.key.decode() if rec.key else None,
        "headers": {k: v.decode(errors="replace") for k, v in rec.headers},
        "value": rec.value.decode(errors="replace"),
    }


def replay(bootstrap_servers: str, *, offset: int | None = None, include_replayed: bool = False) -> list[int]:
    """Send DLT records (one offset, or all not yet replayed) back to the main topic; return their offsets."""
    from kafka import KafkaProducer

    redis = current().redis
    letters = dead_letters(bootstrap_servers)
    chosen = [r for r in letters if offset is None or r["offset"] == offset]
    if offset is None and not include_replayed:
        done = {int(x) for x in redis.smembers(REPLAYED_KEY)}  # type: ignore[union-attr]
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
            redis.sadd(REPLAYED_KEY, r["offset"])
    finally:
        producer.close(timeout=5)
    return [r["offset"] for r in chosen]
