"""workers/events on the unit tier, with fakes for Kafka: the consumer's per-poll handling and the
embedded bus's dead letters (the real broker runs in tests/integration/test_payments_kafka.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import fakeredis
from flask import Flask
from kafka import TopicPartition

from workers.events.consumer import STATS_KEY, PoisonEvent, _Poll
from workers.events.dead_letters import inprocess_letters
from workers.events.publisher import InProcessBus, _outcome
from workers.events.topics import DLT_TOPIC, PAYMENT_TOPIC


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[int, int]] = []  # (partition, next offset)
        self.seeks: list[tuple[int, int]] = []

    def commit(self, offsets: dict[Any, Any]) -> None:
        for tp, meta in offsets.items():
            self.commits.append((tp.partition, meta.offset))

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp.partition, offset))


class FakeDlt:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, topic: str, **kwargs: Any) -> Any:
        self.sent.append({"topic": topic, **kwargs})
        return SimpleNamespace(get=lambda timeout: None)


def record(partition: int, offset: int, value: bytes) -> Any:
    return SimpleNamespace(topic=PAYMENT_TOPIC, partition=partition, offset=offset, key=b"k", value=value)


def handler(value: bytes) -> None:
    if value == b"poison":
        raise PoisonEvent("unreadable")


def test_a_poll_handles_good_records_dead_letters_a_poison_one_and_commits_once_after_all() -> None:
    redis = fakeredis.FakeRedis(decode_responses=True)
    consumer, dlt = FakeConsumer(), FakeDlt()
    poll = _Poll(consumer, dlt, redis, handler, retries=2, interval=0)
    tp = TopicPartition(PAYMENT_TOPIC, 0)

    settled = poll([(tp, [record(0, 5, b"ok"), record(0, 6, b"poison"), record(0, 7, b"ok")])])

    assert settled is True
    assert consumer.commits == [(0, 8)]  # one commit for the poll, after every record was settled
    assert [d["topic"] for d in dlt.sent] == [DLT_TOPIC]
    headers = dict(dlt.sent[0]["headers"])
    assert headers["attempts"] == b"3" and headers["original-offset"] == b"6"
    assert headers["error"].startswith(b"PoisonEvent")
    assert redis.hgetall(STATS_KEY) == {"consumed_total": "3", "dead_lettered_total": "1"}


def test_when_redis_is_down_the_poll_rewinds_and_neither_commits_nor_dead_letters() -> None:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    consumer, dlt = FakeConsumer(), FakeDlt()

    def needs_redis(value: bytes) -> None:
        server.connected = False  # Redis goes away while the record is handled
        raise ConnectionError("Redis is down")

    poll = _Poll(consumer, dlt, redis, needs_redis, retries=1, interval=0)
    first, second = TopicPartition(PAYMENT_TOPIC, 0), TopicPartition(PAYMENT_TOPIC, 1)

    settled = poll([(first, [record(0, 3, b"e1"), record(0, 4, b"e2")]), (second, [record(1, 9, b"e3")])])

    assert settled is False
    assert consumer.seeks == [(0, 3), (1, 9)]  # back to the held record and to the unhandled partition
    assert consumer.commits == [] and dlt.sent == []


def test_the_embedded_bus_keeps_an_event_it_cannot_handle_as_a_dead_letter(app: Flask) -> None:
    rows = [SimpleNamespace(id=1, topic=PAYMENT_TOPIC, payload="not json")]
    assert InProcessBus()(rows) == [None]  # type: ignore[arg-type]
    letters = [json.loads(x) for x in inprocess_letters()]
    assert len(letters) == 1
    assert letters[0]["value"] == "not json" and letters[0]["attempts"] == 4
    assert letters[0]["error"].startswith("PoisonEvent")


def test_a_publish_outcome_is_none_only_for_an_acknowledged_send() -> None:
    def failed(timeout: float) -> None:
        raise TimeoutError("no ack")

    refused = ValueError("buffer full")
    assert _outcome(SimpleNamespace(get=lambda timeout: None)) is None
    assert _outcome(refused) is refused
    assert isinstance(_outcome(SimpleNamespace(get=failed)), TimeoutError)
