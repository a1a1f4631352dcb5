"""The contention regime map: the same skewed hold workload at 32, 256 and 1,024 attempts in flight.

    .venv/bin/python -m bench.contention_map [--levels 32,256,1024 --attempts 2000 --pool 64]

Per level (closed loop: each of `level` threads waits for its attempt's outcome) and strategy:
  a_pipeline     quick-refusal check, then the partitioned pipeline (bench.contention_bench)
  b2_redis_edge  the same check, then a Redis lock per seat around the domain's hold
  c_for_update   SELECT ... FOR UPDATE through a pool of `--pool` connections, as a web tier has
                 (waits up to 10 s for a connection; a longer wait is an error)
Reported: attempts/s, p50/p99, errors, peak Threads_connected (sampled every 20 ms, server-wide:
other users of this MariaDB count too), InnoDB row lock waits, oversell and the checker.
Not run: the unpooled variant up to max_connections (this MariaDB is shared with other agents'
tests; exhausting its 151 connections would fail theirs). Writes bench/results/contention_map.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import redis

from bench import contention_bench as cb
from bench.common import connect, create_database, write
from bench.pipeline_bench import fresh_data
from config.bootstrap import Services, bootstrap
from config.settings import Settings
from models.db import db
from tests.support.procs import Cluster, wait_for_leases


class PeakConnections:
    """Sample the server's Threads_connected every 20 ms on its own connection; keep the peak."""

    def __init__(self, url: str) -> None:
        self.url, self.peak, self._stop = url, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with connect(self.url, None) as conn, conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                row = cur.fetchone()
                self.peak = max(self.peak, int(row[1]) if row else 0)
                time.sleep(0.02)


def for_update_pooled(url: str, plan: list[cb.Attempt], clients: int, pool_size: int) -> dict:
    """(c) through a pool of `pool_size` connections shared by `clients` threads."""
    name = urlparse(url).path.lstrip("/")
    pool: queue.Queue[Any] = queue.Queue()
    for _ in range(pool_size):
        pool.put(connect(url, name))

    def hold(user_id: int, seat_id: int, schedule_id: int, _: Any) -> str:
        try:
            conn = pool.get(timeout=10)
        except queue.Empty:
            return cb.ERROR
        try:
            return cb.for_update_hold(conn, user_id, seat_id, schedule_id)
        except Exception:  # lock wait timeout, lost connection: an error the client sees
            conn.rollback()
            return cb.ERROR
        finally:
            pool.put(conn)

    try:
        return cb.closed_loop(plan, clients, hold, lambda: None, lambda _: None)
    finally:
        while not pool.empty():
            pool.get().close()


def measure(services: Services, db_url: str, args: Any, level: int, run: Callable[[list[cb.Attempt]], dict]) -> dict:
    """Fresh data, the plan for this level, one strategy run with its peak connections and checks."""
    services.redis.flushdb()
    seats = fresh_data(args.seats)
    db.close()
    plan = cb.workload(seats, max(args.attempts, 4 * level), args.hot_seats, args.hot_share, args.seed)
    locks_before = cb.lock_status(db_url)
    with PeakConnections(db_url) as peak:
        result = run(plan)
    result["db_locks"] = cb._delta(locks_before, cb.lock_status(db_url))
    result["peak_threads_connected"] = peak.peak
    result["check"] = cb.verify(args.seats)
    r = result
    print(
        f"  {level} in flight, {len(plan)} attempts: {r['holds_per_second']:,.1f}/s p99 {r['latency']['p99_ms']:.1f} ms"
        f" errors {r['outcomes'].get(cb.ERROR, 0)} peak conns {peak.peak} ok {r['check']['ok']}",
        flush=True,
    )
    return result


def one_level(services: Services, db_url: str, redis_url: str, args: Any, level: int) -> dict[str, dict]:
    """Every strategy at one level; the pipeline's workers are started (and warmed) outside the measurement."""
    out: dict[str, dict] = {}
    cluster = Cluster(db_url, redis_url, {"PARTITIONS": str(args.partitions), "WORKER_BATCH": str(args.batch)})
    try:
        for _ in range(args.workers):
            cluster.start_worker()
        wait_for_leases(services.redis, cluster, partitions=args.partitions)
        cb.warm_up_workers(services)
        out["a_pipeline"] = measure(services, db_url, args, level, lambda p: cb.run_pipeline(services, p, level))
    finally:
        cluster.stop()
    out["b2_redis_edge"] = measure(services, db_url, args, level, lambda p: cb.run_redis_lock_edge(services, p, level))
    db.close_all()  # hand the pool's idle connections back: the server's 151 are shared
    out["c_for_update"] = measure(
        services, db_url, args, level, lambda p: for_update_pooled(db_url, p, level, args.pool)
    )
    return out


def print_level(level: int, results: dict[str, dict]) -> None:
    print(f"\n{level} in flight")
    head = f"{'strategy':16}{'att/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
    print(head + f"{'peak conns':>11}{'lock waits':>11}{'ok':>4}")
    for name, r in results.items():
        print(
            f"{name:16}{r['holds_per_second']:>9,.1f}{r['latency']['p50_ms']:>9.1f}{r['latency']['p99_ms']:>9.1f}"
            f"{r['outcomes'].get(cb.ERROR, 0):>7}{r['peak_threads_connected']:>11}"
            f"{r['db_locks']['Innodb_row_lock_waits']!s:>11}{'y' if r['check']['ok'] else 'N':>4}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--levels", default="32,256,1024")
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--seats", type=int, default=100)
    parser.add_argument("--hot-seats", type=int, default=10)
    parser.add_argument("--hot-share", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_contention")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    create_database(db_url)
    pooled = f"{db_url}{'&' if '?' in db_url else '?'}max_connections={args.pool}"
    services = bootstrap(Settings().with_(database_url=pooled, redis_url=redis_url, partitions=args.partitions))
    # One client process stands in for a whole web tier: each waiting attempt holds a Redis
    # connection (BLPOP on its job), so its pool must exceed the largest level.
    wide = redis.BlockingConnectionPool.from_url(redis_url, max_connections=2048, timeout=30, decode_responses=True)
    services = dataclasses.replace(services, redis=redis.Redis(connection_pool=wide))
    levels: dict[str, dict[str, dict]] = {}
    for level in (int(x) for x in args.levels.split(",")):
        levels[str(level)] = one_level(services, db_url, redis_url, args, level)
        print_level(level, levels[str(level)])
    services.redis.flushdb()
    print(f"wrote {write('contention_map', {'parameters': vars(args), 'levels': levels})}")


if __name__ == "__main__":
    main()
