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
import requests

from bench.chaos import PARTITIONS, Plan
from bench.chaos.service import RedisClusterNodes, RedisServer, Service, http_ok, leader_pid, wait_for
from bench.common import connect
from tests.support.identity import sign
from tests.support.procs import lease_holders, pid_of_member
from tests.support.redis_cluster import kill_node, restart_node, role_of

FAULTS = ("worker_kill", "scheduler_leader_kill", "broker_stop_10s", "redis_restart", "db_connections_kill")


CLUSTER_FAULTS = ("worker_kill", "scheduler_leader_kill", "broker_stop_10s", "redis_master_kill", "db_connections_kill")


PROBE_USER = 999_999_999  # the master kill's probe: a user no fan is, who never pays


def faults_of(service: Service) -> tuple[str, ...]:
    """The fault list for the service's Redis: on a cluster a master kill replaces the restart."""
    return CLUSTER_FAULTS if isinstance(service.redis, RedisClusterNodes) else FAULTS


@dataclass
class FaultLog:
    """Every fault injected: when, what, and what recovery looked like."""

    planned: tuple[str, ...] = FAULTS
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, at: float, **detail: Any) -> None:
        self.events.append({"fault": kind, "at_s": round(at, 1), **detail})
        print(f"  [{at:6.1f} s] {kind}: {detail}", flush=True)

    def counts(self) -> dict[str, int]:
        c = Counter(e["fault"] for e in self.events)
        return {k: c.get(k, 0) for k in self.planned}


def fault_schedule(plan: Plan, rng: random.Random, planned: tuple[str, ...] = FAULTS) -> list[tuple[float, str]]:
    """Each fault `each_fault` times, shuffled, at random moments of equal slots of the fault window."""
    faults = [f for f in planned for _ in range(plan.each_fault)]
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
        self.log = FaultLog(faults_of(service))
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
        server = self.service.redis
        assert isinstance(server, RedisServer), "on a Redis Cluster the fault is redis_master_kill"
        keys_before = _dbsize(server)
        down = time.monotonic()
        server.shutdown()
        shutdown_s = time.monotonic() - down
        time.sleep(self.rng.uniform(1.0, 3.0))
        server.start()
        downtime = time.monotonic() - down
        keys_after = _dbsize(server)
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

    def redis_master_kill(self) -> None:
        """kill -9 the cluster master serving the concert's slot; its replica must be promoted and the
        service serve the concert again with no restart; then the killed node is started again on its
        data dir and rejoins as a replica. Times are from the kill."""
        from models.waiting_room import _keys

        nodes = self.service.redis
        assert isinstance(nodes, RedisClusterNodes), "redis_master_kill needs --redis-cluster"
        key = _keys(self.service.concert_id)["waiting"]
        port = _slot_master(nodes.ports[0], key)  # the cluster's own view, not a client's cached slot map
        if port is None or role_of(port) != "master":
            raise RuntimeError(f"node {port} serves the concert's slot in CLUSTER SLOTS but is not a master")
        probe = _Probe(self.service.base, self.service.concert_id)
        at = self.now()
        killed = time.monotonic()  # kill_node sends SIGKILL first, then waits (with redis-py's retries) until gone
        kill_node(port, directory=nodes.dir)
        survivor = next(p for p in nodes.ports if p != port)
        seen: dict[str, float] = {}  # step -> seconds after the kill, all polled side by side every 0.1 s
        steps: dict[str, Any] = {
            "promoted": lambda: _slot_master(survivor, key) not in (None, port),
            "served": probe.served,
            # /readyz reads CLUSTER INFO, still "ok" until the nodes agree the master failed: after the promotion
            "ready": lambda: "promoted" in seen and http_ok(f"{self.service.base}/readyz"),
        }
        while len(seen) < len(steps):
            if time.monotonic() - killed > 60:
                raise RuntimeError(f"no recovery within 60 s of the master kill: {seen}")
            for step, done in steps.items():
                with contextlib.suppress(Exception):
                    if step not in seen and done():
                        seen[step] = time.monotonic() - killed
            time.sleep(0.1)
        promoted, served, ready = seen["promoted"], seen["served"], seen["ready"]
        new_master = _slot_master(survivor, key)
        time.sleep(self.rng.uniform(1.0, 3.0))
        back = time.monotonic()
        restart_node(port, timeout=60, directory=nodes.dir, bus_offset=nodes.bus_offset)
        rejoined = time.monotonic() - killed
        role = role_of(port)
        probe.leave()
        caught_up = self.consumer_caught_up(back)
        self.log.add(
            "redis_master_kill",
            at,
            port=port,
            new_master=new_master,
            probe_5xx=probe.failures,
            replica_promoted_after_s=round(promoted, 1),
            concert_served_after_s=round(served, 1),
            readyz_ok_after_s=round(ready, 1),
            killed_node_rejoined_after_s=round(rejoined, 1),
            killed_node_role=role,
            consumer_caught_up_after_rejoin_s=caught_up,
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


class _Probe:
    """A signed-in user holding a queue token of the concert: its poll reads the concert's slot."""

    def __init__(self, base: str, concert_id: int) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {sign(PROBE_USER, ttl=3600)}"
        self.failures = 0
        for _ in range(20):  # a 429 or a 503 left by an earlier fault: try again
            resp = self.http.post(
                f"{base}/queue/tokens", json={"userId": PROBE_USER, "concertId": concert_id}, timeout=10
            )
            if resp.status_code in (200, 201):
                break
            time.sleep(0.5)
        resp.raise_for_status()
        self.token = str(resp.json()["token"])

    def served(self) -> bool:
        """True once a poll of the token is answered below 500 (a 404 is an answer too)."""
        try:
            resp = self.http.get(f"{self.base}/queue/token", headers={"X-Queue-Token": self.token}, timeout=3)
        except requests.RequestException:
            self.failures += 1
            return False
        if resp.status_code >= 500:
            self.failures += 1
            return False
        return True

    def leave(self) -> None:
        with contextlib.suppress(requests.RequestException):
            self.http.delete(f"{self.base}/queue/token", headers={"X-Queue-Token": self.token}, timeout=5)


def _slot_master(port: int, key: str) -> int | None:
    """The port of the master serving `key`'s slot as the node on `port` sees it (None while unserved)."""
    from redis.cluster import key_slot

    node = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)
    slot = key_slot(key.encode())
    for start, end, master, *_ in node.execute_command("CLUSTER SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1])
    return None


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
