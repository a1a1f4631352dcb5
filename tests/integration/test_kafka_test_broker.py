"""SPEC §8: the Kafka tests find a broker through TEST_KAFKA_BOOTSTRAP, and each starts from an empty one.

A second Tansu stands in for a broker someone else runs: records and committed offsets left there
by an earlier test (or run) are gone when the next test gets it, and a test that kills its broker
still gets one of its own.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.support import env
from tests.support.kafka_broker import ExternalBroker, TansuBroker, empty_broker, tansu
from workers.events.topics import DLT_TOPIC, PAYMENT_TOPIC, REFUND_TOPIC

GROUP = "test-kafka-test-broker"


def create_topics(bootstrap: str) -> None:
    """The service's topics with one partition each (what ensure_topics makes, without a bootstrapped service)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in (PAYMENT_TOPIC, REFUND_TOPIC, DLT_TOPIC)])
    finally:
        admin.close()


def leave_records(bootstrap: str) -> None:
    """What an earlier test leaves behind: three payment events, one dead letter, a committed offset."""
    create_topics(bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for n in range(3):
            producer.send(PAYMENT_TOPIC, key=b"r-1", value=f"old-{n}".encode(), partition=0).get(timeout=10)
        producer.send(DLT_TOPIC, key=b"r-1", value=b"old-letter").get(timeout=10)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        tp = TopicPartition(PAYMENT_TOPIC, 0)
        consumer.assign([tp])
        consumer.commit({tp: OffsetAndMetadata(3, "", -1)})
    finally:
        consumer.close()


def end_offset_and_committed(bootstrap: str) -> tuple[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        tp = TopicPartition(PAYMENT_TOPIC, 0)
        return consumer.end_offsets([tp])[tp], consumer.committed(tp)
    finally:
        consumer.close()


@pytest.fixture
def shared() -> Iterator[TansuBroker]:
    try:
        with tansu() as broker:
            yield broker
    except Exception as exc:
        env.need_service("Kafka-protocol broker (Tansu)", exc)


def test_a_test_gets_the_named_broker_emptied_of_what_an_earlier_test_left(
    shared: TansuBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given TEST_KAFKA_BOOTSTRAP naming a broker that holds an earlier test's records and offsets
    leave_records(shared.bootstrap)
    assert end_offset_and_committed(shared.bootstrap) == (3, 3)
    monkeypatch.setattr(env, "TEST_KAFKA_BOOTSTRAP", shared.bootstrap)

    # When the next test asks for a broker
    with empty_broker() as broker:
        # Then it is that broker, without the service's topics (records, dead letters, offsets gone)
        assert isinstance(broker, ExternalBroker)
        assert broker.bootstrap == shared.bootstrap
        assert not {PAYMENT_TOPIC, DLT_TOPIC} & set(broker.list_topics())
        create_topics(broker.bootstrap)
        assert end_offset_and_committed(broker.bootstrap) == (0, None)
        # and it is not the test's to kill
        with pytest.raises(RuntimeError, match="restartable"):
            broker.stop()


def test_a_test_that_kills_its_broker_gets_its_own_even_when_one_is_named(
    shared: TansuBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(env, "TEST_KAFKA_BOOTSTRAP", shared.bootstrap)
    with empty_broker(restartable=True) as own:
        assert isinstance(own, TansuBroker)
        assert own.bootstrap != shared.bootstrap
        own.stop()
        own.start()
        assert own.list_topics() == []
    # the named broker was not touched
    assert shared.running


def test_a_named_broker_that_does_not_answer_skips_naming_it_or_fails_under_require_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(env, "TEST_KAFKA_BOOTSTRAP", dead)
    monkeypatch.setattr(env, "REQUIRE_SERVICES", False)
    with pytest.raises(pytest.skip.Exception, match=f"TEST_KAFKA_BOOTSTRAP={dead}"), empty_broker():
        pass
    monkeypatch.setattr(env, "REQUIRE_SERVICES", True)
    with pytest.raises(pytest.fail.Exception, match=f"TEST_KAFKA_BOOTSTRAP={dead}"), empty_broker():
        pass
