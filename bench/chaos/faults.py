"""The fault script: each fault injected at a random moment, with what recovery looked like."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pymysql
import redis

from bench.chaos import PARTITIONS, Plan
from bench.chaos.service import RedisServer, Service, http_ok, leader_pid, wait_for
from bench.common import connect
from tests.support.procs import lease_holders, pid_of_member

FAULTS = ("worker_kill", "scheduler_leader_kill", "broker_stop_10s", "redis_restart", "db_connections_kill")


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

        took = wait_for(owned, 60, "partitions owned by live workers again")
        self.log.add("worker_kill", at, pid=victim.pid, partitions_owned_again_s=round(self.now() - at, 1))
        del took

    def scheduler_leader_kill(self) -> None:
        """kill -9 the scheduler holding the lease; a standby must take over; start a new standby."""
        at = self.now()
        r = self.service.redis.client()
        pid = leader_pid(r)
        victim = next(p for p in self.service.alive("scheduler") if p.pid == pid)
        self.service.cluster.kill9(victim)
        killed = time.monotonic()
        wait_for(lambda: leader_pid(r) in {p.pid for p in self.service.alive("scheduler")}, 40, "scheduler takeover")
        takeover = time.monotonic() - killed
        new_leader = leader_pid(r)
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
        wait_for(lambda: _pending(self.service.db_url) == 0, 60, "outbox drained after the broker came back")
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

        wait_for(consumed, 90, "the consumer catching up")
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
        ready = wait_for(lambda: http_ok(f"{self.service.base}/readyz"), 60, "/readyz after the Redis restart")
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
        ready = wait_for(lambda: http_ok(f"{self.service.base}/readyz"), 60, "/readyz after KILL")
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
