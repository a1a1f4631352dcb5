"""A `redis-server` of a test's own (no persistence) that it may kill and start again on the same port."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator

import redis

from tests.support.env import need_service
from tests.support.helpers import free_port, wait_for


class RedisServer:
    """One redis-server on a free (or given) port; kill() and start() keep the port and lose the data."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix=f"redis-{self.port}-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=0.5)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            need_service("redis-server binary", FileNotFoundError("redis-server not on PATH"))
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        up = wait_for(lambda: self.ping() or (self.proc is not None and self.proc.poll() is not None), 10, 0.05)
        if up is None or not self.ping():
            raise AssertionError(f"redis-server on {self.port} did not start")

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    stop = kill


@contextlib.contextmanager
def own_redis(port: int | None = None) -> Iterator[RedisServer]:
    """A fresh redis-server (on a free port unless given) for the duration of the block."""
    server = RedisServer(port)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.dir, ignore_errors=True)
