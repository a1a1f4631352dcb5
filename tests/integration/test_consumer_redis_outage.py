"""The payment-completed consumer across a Redis outage (found by the chaos run, bench/chaos.py).

Before the fix, a Redis restart longer than the three 1 s retries sent a valid event to the DLT
and then killed the consumer process: counting the dead letter in Redis raised ConnectionError
out of the consume loop. Now the event is held (not committed, not dead-lettered) until Redis
answers, and the consumer keeps running. Own redis-server on a free port (it is stopped and
started again), own Tansu broker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from config import bootstrap
from config.settings import Settings
from tests.kafka_broker import TansuBroker, free_port, kafka_broker_fixture
from workers import events

pytestmark = pytest.mark.integration

kafka_broker = kafka_broker_fixture()


class OwnRedis:
    """A redis-server this test may stop and start (no persistence: a restart starts empty)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        assert wait_for(self.ping, 10) is not None, "redis-server did not start"

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_for(condition: Callable[[], object], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until condition() was truthy, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    return None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    from tests.conftest import need_service

    if shutil.which("redis-server") is None:
        need_service("redis-server binary (to stop and restart a Redis of this test's own)", FileNotFoundError())
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def publish(broker: TansuBroker, event_id: str) -> None:
    from kafka import KafkaProducer

    value = {"eventId": event_id, "eventType": "PaymentCompleted", "userId": 7, "concertId": 1}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        producer.send(events.PAYMENT_TOPIC, key=b"7", value=json.dumps(value).encode()).get(timeout=10)
    finally:
        producer.close(timeout=5)


def test_an_event_handled_while_redis_is_down_is_held_not_dead_lettered_and_the_consumer_survives(
    own_redis: OwnRedis, kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Given a consumer (3 retries, 0.2 s apart) working against our own Redis
    bootstrap.bootstrap(
        Settings().with_(
            database_url=f"sqlite:///{tmp_path / 'unused.db'}",
            redis_url=f"redis://127.0.0.1:{own_redis.port}/0",
            kafka_bootstrap_servers=kafka_broker.bootstrap,
        )
    )
    events.ensure_topics(kafka_broker.bootstrap)
    stop = threading.Event()
    died: list[BaseException] = []

    def run() -> None:
        try:
            events.consume(stop, bootstrap_servers=kafka_broker.bootstrap, retries=3, interval=0.2)
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
        assert events.dead_letters(kafka_broker.bootstrap) == []

        # When Redis is back, the held event is handled once, still without a dead letter
        own_redis.start()
        assert wait_for(lambda: own_redis.client.exists(f"events:done:{second}"), 20) is not None, died
        assert consumer.is_alive(), f"the consumer died: {died}"
        assert events.dead_letters(kafka_broker.bootstrap) == []
        assert int(own_redis.client.hget("stats:consumer", "dead_lettered_total") or 0) == 0
    finally:
        stop.set()
        consumer.join(timeout=30)
    assert died == []
