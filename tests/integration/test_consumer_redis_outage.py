"""The payment-completed consumer across a Redis outage (found by the chaos run, bench/chaos/).

Before the fix, a Redis restart longer than the three 1 s retries sent a valid event to the DLT
and then killed the consumer process: counting the dead letter in Redis raised ConnectionError
out of the consume loop. Now the event is held (not committed, not dead-lettered) until Redis
answers, and the consumer keeps running. Own redis-server on a free port (it is stopped and
started again), own Tansu broker.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import bootstrap
from config.settings import Settings
from tests.support.helpers import wait_for
from tests.support.kafka_broker import TansuBroker, kafka_broker_fixture
from tests.support.redis_server import RedisServer
from tests.support.redis_server import own_redis as redis_server
from workers.events.consumer import consume
from workers.events.dead_letters import dead_letters
from workers.events.topics import PAYMENT_TOPIC, ensure_topics

pytestmark = pytest.mark.integration

kafka_broker = kafka_broker_fixture()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def publish(broker: TansuBroker, event_id: str) -> None:
    from kafka import KafkaProducer

    value = {"eventId": event_id, "eventType": "PaymentCompleted", "userId": 7, "concertId": 1}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        producer.send(PAYMENT_TOPIC, key=b"7", value=json.dumps(value).encode()).get(timeout=10)
    finally:
        producer.close(timeout=5)


def test_an_event_handled_while_redis_is_down_is_held_not_dead_lettered_and_the_consumer_survives(
    own_redis: RedisServer, kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Given a consumer (3 retries, 0.2 s apart) working against our own Redis
    bootstrap.bootstrap(
        Settings().with_(
            database_url=f"sqlite:///{tmp_path / 'unused.db'}",
            redis_url=f"redis://127.0.0.1:{own_redis.port}/0",
            kafka_bootstrap_servers=kafka_broker.bootstrap,
        )
    )
    ensure_topics(kafka_broker.bootstrap)
    stop = threading.Event()
    died: list[BaseException] = []

    def run() -> None:
        try:
            consume(stop, bootstrap_servers=kafka_broker.bootstrap, retries=3, interval=0.2)
        except BaseException as exc:
            died.append(exc)

    consumer = threading.Thread(target=run, name="consumer", daemon=True)
    consumer.start()
    try:
        first = f"first-{uuid.uuid4().hex}"
        publish(kafka_broker, first)
        assert wait_for(lambda: own_redis.client.exists(f"events:done:{first}"), 30) is not None, died

        # When Redis goes away and an event arrives, for longer than all the retries take
        own_redis.stop()
        second = f"second-{uuid.uuid4().hex}"
        publish(kafka_broker, second)
        time.sleep(4.0)

        # Then the consumer is still running and nothing went to the dead-letter topic
        assert consumer.is_alive(), f"the consumer died: {died}"
        assert dead_letters(kafka_broker.bootstrap) == []

        # When Redis is back, the held event is handled once, still without a dead letter
        own_redis.start()
        assert wait_for(lambda: own_redis.client.exists(f"events:done:{second}"), 20) is not None, died
        assert consumer.is_alive(), f"the consumer died: {died}"
        assert dead_letters(kafka_broker.bootstrap) == []
        assert int(own_redis.client.hget("stats:consumer", "dead_lettered_total") or 0) == 0
    finally:
        stop.set()
        consumer.join(timeout=30)
    assert died == []
