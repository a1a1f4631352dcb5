"""workers/events on the unit tier, with fakes for Kafka: the consumer's retry queue and the
embedded bus's dead letters (the real broker runs in tests/integration/test_payments_kafka.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from flask import Flask
from kafka import TopicPartition

from workers.events.dead_letters import inprocess_letters
from workers.events.publisher import InProcessBus, _outcome
from workers.events.retries import Settler
from workers.events.topics import PAYMENT_TOPIC


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(partition: int, offset: int, value: bytes, key: bytes = b"k") -> Any:
    return SimpleNamespace(topic=PAYMENT_TOPIC, partition=partition, offset=offset, key=key, value=value)


def make_settler(
    handler: Any, *, retries: int = 3, interval: float = 1.0, redis_up: Any = lambda: True, max_pending: int = 500
) -> tuple[Settler, list[tuple[int, int]], Clock]:
    """A Settler on a fake clock; its dead letters land in the returned list as (offset, attempts)."""
    letters: list[tuple[int, int]] = []
    clock = Clock()
    settler = Settler(
        handler,
        dead_letter=lambda rec, error, attempts: letters.append((rec.offset, attempts)),
        settled=lambda: None,
        redis_up=redis_up,
        retries=retries,
        interval=interval,
        max_pending=max_pending,
        clock=clock,
    )
    return settler, letters, clock


def test_a_failing_record_is_set_aside_the_rest_of_its_partition_goes_on_and_the_commit_stops_before_it() -> None:
    calls: list[bytes] = []

    def handler(value: bytes) -> None:
        calls.append(value)
        if value == b"bad":
            raise RuntimeError("downstream fault")

    settler, letters, clock = make_settler(handler)
    tp = TopicPartition(PAYMENT_TOPIC, 0)

    rewind = settler.take([(tp, [record(0, 5, b"ok1", b"a"), record(0, 6, b"bad", b"b"), record(0, 7, b"ok2", b"c")])])

    assert rewind == [] and calls == [b"ok1", b"bad", b"ok2"]  # ok2 did not wait for bad's retries
    assert settler.commit_points() == {tp: 6}  # never past the unsettled record
    assert settler.next_due_in() == 1.0
    for _ in range(3):  # 3 retries, 1 s apart
        clock.now += 1.0
        settler.retry_due()
    assert calls.count(b"bad") == 4 and letters == [(6, 4)]
    assert settler.commit_points() == {tp: 8} and settler.pending(tp) == 0


def test_a_later_record_of_the_same_key_waits_behind_the_failing_one_and_follows_it_in_order() -> None:
    fault = {"on": True}
    calls: list[bytes] = []

    def handler(value: bytes) -> None:
        calls.append(value)
        if value == b"pay-1" and fault["on"]:
            raise RuntimeError("downstream fault")

    settler, letters, clock = make_settler(handler)
    tp = TopicPartition(PAYMENT_TOPIC, 0)

    settler.take(
        [(tp, [record(0, 1, b"pay-1", b"r1"), record(0, 2, b"refund-1", b"r1"), record(0, 3, b"pay-2", b"r2")])]
    )

    assert calls == [b"pay-1", b"pay-2"]  # refund-1 (same reservation) waits; pay-2 does not
    assert settler.pending(tp) == 2 and settler.commit_points() == {tp: 1}
    fault["on"] = False
    clock.now += 1.0
    settler.retry_due()
    assert calls == [b"pay-1", b"pay-2", b"pay-1", b"refund-1"] and letters == []
    assert settler.commit_points() == {tp: 4}


def test_when_redis_is_down_the_poll_rewinds_and_a_retry_is_not_counted_as_an_attempt() -> None:
    up = {"redis": True}
    calls: list[bytes] = []

    def handler(value: bytes) -> None:
        calls.append(value)
        if value == b"bad" or not up["redis"]:
            raise ConnectionError("Redis is down")

    settler, letters, clock = make_settler(handler, retries=1, redis_up=lambda: up["redis"])
    first, second = TopicPartition(PAYMENT_TOPIC, 0), TopicPartition(PAYMENT_TOPIC, 1)
    settler.take([(first, [record(0, 2, b"bad", b"x")])])
    up["redis"] = False

    rewind = settler.take([(first, [record(0, 3, b"e1"), record(0, 4, b"e2")]), (second, [record(1, 9, b"e3")])])

    assert rewind == [(first, 3), (second, 9)]  # back to the held record and to the unhandled partition
    for _ in range(5):  # Redis stays down: the record in retry is never dead-lettered
        clock.now += 1.0
        settler.retry_due()
    assert letters == [] and settler.commit_points() == {first: 2}


def test_a_partition_is_full_at_max_pending_and_forget_drops_a_revoked_partitions_queue() -> None:
    def failing(value: bytes) -> None:
        raise RuntimeError("no")

    settler, _, _ = make_settler(failing, max_pending=3)
    tp = TopicPartition(PAYMENT_TOPIC, 0)
    settler.take([(tp, [record(0, n, b"v", str(n).encode()) for n in range(3)])])
    assert settler.full(tp) and settler.pending(tp) == 3

    settler.forget([tp])

    assert not settler.full(tp) and settler.next_due_in() is None and settler.commit_points() == {}


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


def test_losing_a_partition_commits_what_is_settled_and_drops_its_retry_queue() -> None:
    from workers.events.consumer import _Rebalance

    class Committing:
        def __init__(self) -> None:
            self.commits: list[dict[Any, int]] = []

        def commit(self, offsets: dict[Any, Any]) -> None:
            self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def handler(value: bytes) -> None:
        if value == b"bad":
            raise RuntimeError("downstream fault")

    settler, letters, clock = make_settler(handler)
    kept, lost = TopicPartition(PAYMENT_TOPIC, 0), TopicPartition(PAYMENT_TOPIC, 1)
    settler.take(
        [(kept, [record(0, 1, b"ok")]), (lost, [record(1, 4, b"ok"), record(1, 5, b"bad"), record(1, 6, b"ok")])]
    )
    consumer = Committing()

    _Rebalance(consumer, settler).on_partitions_revoked([lost])

    assert consumer.commits == [{lost: 5}]  # up to the record in retry: its next owner redelivers it
    clock.now += 10
    settler.retry_due()
    assert letters == [] and settler.pending(lost) == 0  # nothing of the lost partition is retried here
    assert settler.commit_points() == {kept: 2}
