"""The physical floor: raw Redis round trips and raw MariaDB commits from a few threads, on a quiet machine."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlparse

from bench.common import connect
from bench.flash_sale import FLOOR_THREADS


def _threads_rate(op_factory: Any, seconds: float, threads: int = FLOOR_THREADS) -> float:
    """Operations per second of `threads` threads, each running its own op (from op_factory()) for `seconds`."""
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()

    def run(i: int) -> None:
        op, close = op_factory()
        try:
            barrier.wait()
            n = 0
            while not stop.is_set():
                op()
                n += 1
            counts[i] = n
        finally:
            close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def raw_redis_rate(redis_url: str, seconds: float) -> float:
    """INCR round trips per second (no pipelining) from FLOOR_THREADS threads."""

    from config.bootstrap import make_redis

    def factory() -> tuple[Any, Any]:
        client = make_redis(redis_url)
        return (lambda: client.incr("bench:floor:incr")), client.close

    rate = _threads_rate(factory, seconds)
    make_redis(redis_url).delete("bench:floor:incr")
    return rate


def raw_db_commit_rate(db_url: str, seconds: float) -> tuple[float, dict[str, str]]:
    """Single-row INSERT + COMMIT per second from FLOOR_THREADS threads; and the durability settings."""
    name = urlparse(db_url).path.lstrip("/")
    with connect(db_url, name) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_floor_commits")
        cur.execute("CREATE TABLE bench_floor_commits (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB")
        cur.execute("SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin, @@version")
        flush, sync_binlog, log_bin, version = cur.fetchone()  # type: ignore[misc]

    def factory() -> tuple[Any, Any]:
        conn = connect(db_url, name)
        conn.autocommit(False)
        cur = conn.cursor()

        def op() -> None:
            cur.execute("INSERT INTO bench_floor_commits (v) VALUES (1)")
            conn.commit()

        return op, conn.close

    rate = _threads_rate(factory, seconds)
    with connect(db_url, name) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE bench_floor_commits")
    facts = {
        "innodb_flush_log_at_trx_commit": str(flush),
        "sync_binlog": str(sync_binlog),
        "log_bin": str(log_bin),
        "version": str(version),
    }
    return rate, facts
