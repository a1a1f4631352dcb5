"""A throwaway Kafka-protocol broker for the tests: Tansu (workers/localbroker.py, the same launcher as `make broker`).

    with tansu() as broker:            # starts on a free port, waits until topics can be listed
        KafkaProducer(bootstrap_servers=broker.bootstrap)
        broker.stop()                  # the broker is down (connections refused)
        broker.start()                 # up again on the same port

Tansu runs with memory storage: after stop()/start() every topic, record, committed offset and
producer id is gone. `kafka_broker_fixture()` makes a pytest fixture of it that skips (or fails,
with REQUIRE_SERVICES=1) with a reason naming the broker when Tansu cannot start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.env import need_service
from workers.localbroker import NAME, BrokerUnavailable, TansuBroker, broker_binary

__all__ = ["NAME", "BrokerUnavailable", "TansuBroker", "broker_binary", "kafka_broker_fixture", "tansu"]


@contextlib.contextmanager
def tansu(port: int | None = None) -> Iterator[TansuBroker]:
    """A running Tansu broker (its `bootstrap` is "127.0.0.1:PORT"), killed on exit."""
    broker = TansuBroker(port)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


def kafka_broker_fixture(scope: Any = "function") -> Callable[..., Iterator[TansuBroker]]:
    """A pytest fixture of a fresh Tansu broker; skips naming it (fails with REQUIRE_SERVICES=1) if it cannot start."""

    @pytest.fixture(scope=scope)
    def kafka_broker() -> Iterator[TansuBroker]:

        broker = TansuBroker()
        try:
            try:
                broker.start()
            except Exception as exc:
                need_service(NAME, exc)
            yield broker
        finally:
            broker.close()

    return kafka_broker
