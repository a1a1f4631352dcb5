"""The service under test: its own Redis (AOF) or Redis Cluster, the broker, the database, the Procfile's processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
import requests

from bench.chaos import BUS_OFFSET, CLUSTER_NODES, LEADER_KEY, PARTITIONS, REDIS_PORT, ROOT, Plan
from bench.common import connect
from tests.support.kafka_broker import TansuBroker
from tests.support.procs import Cluster, Proc, lease_holders
from tests.support.redis_cluster import start_cluster, stop_cluster


class RedisServer:
    """Our own redis-server with AOF on, restartable from the same directory (the AOF replays)."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.dir = directory
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self, timeout: float = 15.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes"]
        cmd += ["--appendfsync", "everysec", "--save", "", "--dir", str(self.dir), "--logfile", str(self.log)]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not answer within {timeout:g} s")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)

    def shutdown(self) -> None:
        """SHUTDOWN (the AOF is fsynced first), then wait for the process to end.

        Sent on a bare socket: redis-py retries a command whose connection drops, which would add
        seconds of reconnect attempts to the measured downtime.
        """
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
            s.recv(64)
        if self.process is not None:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


class RedisClusterNodes:
    """Our own Redis Cluster: CLUSTER_NODES fresh nodes on ports base .. base + 5 (3 masters + 3 replicas,
    cluster-node-timeout 1 s), data under `directory`; one cluster client shared by the run."""

    def __init__(self, base_port: int, directory: Path, bus_offset: int = BUS_OFFSET) -> None:
        self.ports = [base_port + i for i in range(CLUSTER_NODES)]
        self.bus_offset = bus_offset
        self.port = base_port
        self.dir = directory / "redis-cluster"
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self._client: redis.Redis | None = None

    def start(self) -> None:
        start_cluster(self.ports, self.dir, bus_offset=self.bus_offset)

    def client(self) -> redis.Redis:
        """A RedisCluster (decoded), typed as redis.Redis like config.bootstrap does."""
        if self._client is None:
            from config.bootstrap import make_redis

            self._client = make_redis(self.url)
        return self._client

    def shutdown(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        stop_cluster(self.ports, self.dir)

    def tail(self) -> str:
        return "\n".join(
            f"--- node {p} ---\n" + (self.dir / str(p) / "redis.log").read_text(errors="replace")[-800:]
            for p in self.ports
            if (self.dir / str(p) / "redis.log").exists()
        )


@dataclass
class Service:
    """Everything started for one run."""

    db_url: str
    redis: RedisServer | RedisClusterNodes
    broker: TansuBroker
    cluster: Cluster
    web_port: int
    schedule_id: int = 0
    concert_id: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/api/v1"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.db_url, "REDIS_URL": self.redis.url, **self.cluster.env}

    def start_worker(self) -> Proc:
        return self.cluster.start_worker()

    def start_scheduler(self) -> Proc:
        return self.cluster.start_scheduler()

    def start_web(self) -> Proc:
        return self.cluster.start("web", "gunicorn", "-c", "config/gunicorn.py", "web:create_app()")

    def start_consumer(self) -> Proc:
        return self.cluster.start("consumer", "workers", "consume")

    def alive(self, name: str) -> list[Proc]:
        return [p for p in self.cluster.procs if p.name == name and p.alive()]


REFUNDS_OPEN_FOR = 30  # days between the run and the show: refunds stay allowed (REFUND_CUTOFF 1 day)


def prepare_database(db_url: str, env: dict[str, str], seats: int) -> None:
    """Drop and recreate the chaos database, migrate it and seed one concert with one schedule that
    starts REFUNDS_OPEN_FOR days from now (the seed's next-evening start is within REFUND_CUTOFF
    for part of each day)."""
    name = urlparse(db_url).path.lstrip("/")
    with connect(db_url, None) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    for args in (["migrate"], ["seed", "--concerts", "1", "--schedules", "1", "--seats", str(seats)]):
        subprocess.run([sys.executable, "-m", "models", *args], cwd=ROOT, env=env, check=True, capture_output=True)
    with connect(db_url, name) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE concert_schedules SET starts_at = UTC_TIMESTAMP() + INTERVAL {REFUNDS_OPEN_FOR} DAY")


class RunLock:
    """A MariaDB named lock on the run's database, held on its own connection for the whole run, so
    a second run against the same database (which would drop it) is refused instead."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.name = f"bench.chaos:{urlparse(db_url).path.lstrip('/')}"
        self.conn: Any = None

    def acquire(self) -> bool:
        self.conn = connect(self.db_url, None)  # no database: the connection-kill fault spares it
        with self.conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (self.name,))
            got = cur.fetchone()[0] == 1
        if not got:
            self.release()
        return got

    def release(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()  # the server frees the lock with the connection
            self.conn = None


def start_service(
    plan: Plan,
    db_url: str,
    workdir: Path,
    web_port: int,
    *,
    redis_port: int = REDIS_PORT,
    redis_cluster: bool = False,
    broker_port: int | None = None,
    bus_offset: int = BUS_OFFSET,
) -> Service:
    """Redis (or a Redis Cluster), the broker, the database, then web, 2 workers, 2 schedulers and the consumer."""
    server: RedisServer | RedisClusterNodes = (
        RedisClusterNodes(redis_port, workdir, bus_offset) if redis_cluster else RedisServer(redis_port, workdir)
    )
    server.start()
    broker = TansuBroker(broker_port or None)
    broker.start()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "HOST": "127.0.0.1",
        "PORT": str(web_port),
        "WEB_CONCURRENCY": "2",
        "ACTIVE_LIMIT": str(plan.active_limit),
        "ADMIT_INTERVAL": "0.5",
        "OUTBOX_INTERVAL": "0.5",
        "HOLD_TTL": "30",
        "JOB_SWEEP_AFTER": "60",
        "PARTITIONS": str(PARTITIONS),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
    }
    cluster = Cluster(db_url, server.url, env, logdir=workdir)
    service = Service(db_url, server, broker, cluster, web_port)
    prepare_database(db_url, service.env(), plan.seats)
    with connect(db_url, urlparse(db_url).path.lstrip("/")) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, concert_id FROM concert_schedules ORDER BY id LIMIT 1")
        service.schedule_id, service.concert_id = cur.fetchone()
    service.start_web()
    first = service.start_scheduler()
    r = server.client()
    wait_for(lambda: leader_pid(r) == first.pid, 30, "the first scheduler taking the lease", service)
    service.start_scheduler()
    service.start_worker()
    service.start_worker()
    service.start_consumer()
    wait_for(lambda: len(lease_holders(r, PARTITIONS)) == PARTITIONS, 30, "all partitions leased", service)
    wait_for(lambda: http_ok(f"{service.base}/readyz"), 60, "/readyz answering 200", service)
    return service


def stop_service(service: Service) -> None:
    """SIGCONT the broker (in case), stop every process, then Redis and the broker."""
    if service.broker.process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.broker.process.pid, signal.SIGCONT)
    service.cluster.stop(grace=25)
    service.redis.shutdown()
    service.broker.close()


def wait_for(predicate: Any, timeout: float, what: str, service: Service | None = None) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - started
        time.sleep(0.1)
    logs = service.cluster.logs() if service else ""
    raise RuntimeError(f"{what} did not happen within {timeout:g} s\n{logs}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def leader_pid(client: redis.Redis) -> int | None:
    value = client.get(LEADER_KEY)
    return int(str(value).rsplit(":", 2)[1]) if value else None
