"""A throwaway Kafka-protocol broker for the tests: Tansu (workers/localbroker.py, the same launcher as `make broker`).

    with tansu() as broker:            # starts on a free port, waits until topics can be listed
        KafkaProducer(bootstrap_servers=broker.bootstrap)
        broker.stop()                  # the broker is down (connections refused)
        broker.start()                 # up again on the same port

Tansu runs with memory storage: after stop()/start() every topic, record, committed offset and
producer id is gone. `kafka_broker_fixture()` makes a pytest fixture of it that skips (or fails,
with REQUIRE_SERVICES=1) with a reason naming the broker when Tansu cannot start.

With `TEST_KAFKA_BOOTSTRAP` set (SPEC §8), a fixture that does not need to kill its broker uses
that broker instead (`ExternalBroker`): before each test it deletes the service's three topics
there (payment-completed, payment-refunded, payment-completed.DLT: records and committed offsets
go with them), so every test starts from the empty broker a fresh Tansu gives. Point it only at a
broker for tests, and run one suite against it at a time. `kafka_broker_fixture(restartable=True)`
(the broker-outage test) always starts its own Tansu: a shared broker is not ours to kill.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import env
from tests.support.env import need_service
from workers.localbroker import NAME, BrokerUnavailable, TansuBroker, broker_binary

__all__ = [
    "NAME",
    "BrokerUnavailable",
    "ExternalBroker",
    "TansuBroker",
    "broker_binary",
    "empty_broker",
    "kafka_broker_fixture",
    "service_topics",
    "tansu",
]


def service_topics() -> tuple[str, ...]:
    """The topics the service writes and reads (what ExternalBroker.reset() deletes)."""
    from workers.events.topics import DLT_TOPIC, PAYMENT_TOPIC, REFUND_TOPIC

    return (PAYMENT_TOPIC, REFUND_TOPIC, DLT_TOPIC)


NOT_OURS = "a TEST_KAFKA_BOOTSTRAP broker is not the test's to {}: ask kafka_broker_fixture(restartable=True)"


class ExternalBroker:
    """A broker someone else runs (TEST_KAFKA_BOOTSTRAP): same `bootstrap` as TansuBroker, no stop/start."""

    restartable = False

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def __str__(self) -> str:
        return self.bootstrap

    def list_topics(self) -> list[str]:
        """The broker's topics (raises while it cannot be reached)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap.split(","), request_timeout_ms=5000)
        try:
            return sorted(admin.list_topics())
        finally:
            admin.close()

    def probe(self, timeout: float = 3.0) -> None:
        """Raise at once when no bootstrap address accepts a TCP connection (kafka-python would retry for ~30 s)."""
        errors = []
        for address in self.bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
                return
            except (OSError, ValueError) as exc:
                errors.append(f"{address}: {exc}")
        raise BrokerUnavailable("; ".join(errors))

    def reset(self, timeout: float = 30.0) -> None:
        """Delete the service's topics (with their records and committed offsets) and wait until they are gone."""
        from kafka import KafkaAdminClient
        from kafka.errors import UnknownTopicOrPartitionError

        self.probe()
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap.split(","), request_timeout_ms=10000)
        try:
            present = [t for t in service_topics() if t in set(admin.list_topics())]
            if present:
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    admin.delete_topics(present, timeout_ms=10000)
            deadline = time.monotonic() + timeout
            while set(service_topics()) & set(admin.list_topics()):
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"{self.bootstrap} still lists {present} {timeout:g} s after deleting them")
                time.sleep(0.2)
        finally:
            admin.close()

    def stop(self) -> None:
        raise RuntimeError(
            "a TEST_KAFKA_BOOTSTRAP broker is not the test's to stop: ask kafka_broker_fixture(restartable=True)"
        )

    def start(self) -> None:
        raise RuntimeError(
            "a TEST_KAFKA_BOOTSTRAP broker is not the test's to start: ask kafka_broker_fixture(restartable=True)"
        )


@contextlib.contextmanager
def tansu(port: int | None = None) -> Iterator[TansuBroker]:
    """A running Tansu broker (its `bootstrap` is "127.0.0.1:PORT"), killed on exit."""
    broker = TansuBroker(port)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@contextlib.contextmanager
def empty_broker(*, restartable: bool = False) -> Iterator[Any]:
    """An empty broker: the TEST_KAFKA_BOOTSTRAP one with the service's topics deleted, or (unset,
    or restartable=True) a fresh Tansu of its own, killed on exit. Skips naming it (fails with
    REQUIRE_SERVICES=1) when it cannot be reached or started."""
    if env.TEST_KAFKA_BOOTSTRAP and not restartable:
        external = ExternalBroker(env.TEST_KAFKA_BOOTSTRAP)
        try:
            external.reset()
        except Exception as exc:
            need_service(f"the Kafka-protocol broker at TEST_KAFKA_BOOTSTRAP={env.TEST_KAFKA_BOOTSTRAP}", exc)
        yield external
        return
    broker = TansuBroker()
    try:
        try:
            broker.start()
        except Exception as exc:
            need_service(NAME, exc)
        yield broker
    finally:
        broker.close()


def kafka_broker_fixture(scope: Any = "function", *, restartable: bool = False) -> Callable[..., Iterator[Any]]:
    """A pytest fixture of `empty_broker(restartable=...)`."""

    @pytest.fixture(scope=scope)
    def kafka_broker() -> Iterator[Any]:
        with empty_broker(restartable=restartable) as broker:
            yield broker

    return kafka_broker
