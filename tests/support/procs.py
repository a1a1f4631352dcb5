"""Start and stop the real pipeline processes (`python -m workers run`, `python -m scheduler`) for tests and benchmarks.

Every process runs from the repository root with this interpreter, its configuration in the
environment (DATABASE_URL, REDIS_URL, overrides such as HOLD_TTL), and its output in a log file
that the caller can print when something goes wrong. `Cluster` kills whatever it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.identity import TEST_JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]
LEASE_PATTERN = "partition:lease:*"


@dataclass
class Proc:
    """One started process and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, tail: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-tail:]


@dataclass
class Cluster:
    """Processes sharing one database and one Redis; stop() ends them all (SIGTERM, then SIGKILL)."""

    database_url: str
    redis_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pipeline-procs-")))

    def start(self, name: str, *args: str, **env: str) -> Proc:
        """Start `python -m <args>` with the cluster's environment plus `env`."""
        environment = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PYTHONUNBUFFERED": "1",
            "AUTH_JWT_SECRET": TEST_JWT_SECRET,
            **self.env,
            **env,
        }
        log = self.logdir / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", *args], cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_worker(self, **env: str) -> Proc:
        """A `python -m workers run` process."""
        return self.start("worker", "workers", "run", **env)

    def start_scheduler(self, **env: str) -> Proc:
        """A `python -m scheduler` process."""
        return self.start("scheduler", "scheduler", **env)

    def workers(self) -> list[Proc]:
        """The worker processes still running."""
        return [p for p in self.procs if p.name == "worker" and p.alive()]

    def kill9(self, proc: Proc) -> None:
        """SIGKILL one process (no shutdown code runs) and reap it."""
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def stop(self, proc: Proc | None = None, *, grace: float = 20.0) -> None:
        """SIGTERM (graceful drain and lease release), SIGKILL after `grace` seconds."""
        targets = [proc] if proc else list(self.procs)
        for p in targets:
            if p.alive():
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in targets:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(timeout=10)

    def logs(self) -> str:
        """The tail of every process's log, for assertion messages."""
        return "\n".join(f"--- {p.name} pid {p.pid} (alive={p.alive()}) ---\n{p.output()}" for p in self.procs)


def lease_holders(client: redis.Redis, partitions: int = 16) -> dict[int, str]:
    """partition -> member holding its lease (`partition:lease:<N>`), for the leases that exist."""
    pipe = client.pipeline(transaction=False)  # one GET per lease: on a Redis Cluster they span slots
    for p in range(partitions):
        pipe.get(f"partition:lease:{p}")
    values = pipe.execute()
    return {p: _text(v) for p, v in enumerate(values) if v is not None}


def pid_of_member(member: str) -> int:
    """The process id inside a member id `host:pid:random`."""
    return int(member.split(":")[-2])


def wait_for_leases(
    client: redis.Redis,
    cluster: Cluster,
    *,
    partitions: int = 16,
    every_worker: bool = True,
    balanced: bool = False,
    timeout: float = 30.0,
) -> dict[int, str]:
    """Wait until every partition is leased (and, with `every_worker`, each running worker holds some;
    with `balanced`, each holds its fair share: the counts differ by at most one)."""
    deadline = time.monotonic() + timeout
    while True:
        holders = lease_holders(client, partitions)
        pids = {pid_of_member(m) for m in holders.values()}
        running = {p.pid for p in cluster.workers()}
        counts = Counter(pid_of_member(m) for m in holders.values())
        fair = not balanced or (bool(counts) and pids == running and max(counts.values()) - min(counts.values()) <= 1)
        if len(holders) == partitions and pids <= running and (not every_worker or pids == running) and fair:
            return holders
        dead = [p for p in cluster.procs if not p.alive()]
        if time.monotonic() > deadline or (dead and not cluster.workers()):
            raise AssertionError(f"partitions not all leased: {holders}\n{cluster.logs()}")
        time.sleep(0.1)


@contextmanager
def cluster(database_url: str, redis_url: str, **env: str) -> Iterator[Cluster]:
    """A Cluster whose processes are always stopped on exit."""
    c = Cluster(database_url, redis_url, env)
    try:
        yield c
    finally:
        c.stop()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
