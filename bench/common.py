"""Shared helpers of the benchmark scripts: machine facts, percentiles, result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pymysql

RESULTS = Path(__file__).resolve().parent / "results"
# AUTH_JWT_SECRET of the services the benchmarks start themselves; their fans sign with it
BENCH_JWT_SECRET = "bench-jwt-secret-for-local-benchmarks-0123456789"


def sign(user_id: int, secret: str = BENCH_JWT_SECRET, ttl: int = 3600) -> str:
    """A fan's bearer JWT as the identity service would sign it (HS256, `sub` = the user id)."""
    import jwt

    return str(jwt.encode({"sub": str(user_id), "exp": int(time.time()) + ttl}, secret, algorithm="HS256"))


def bearer(user_id: int, secret: str = BENCH_JWT_SECRET) -> dict[str, str]:
    """The `Authorization` header of a signed-in fan."""
    return {"Authorization": f"Bearer {sign(user_id, secret)}"}


def machine() -> dict[str, Any]:
    """CPU count, memory and the date of this run."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }


def connect(url: str, database: str | None) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    """An autocommit PyMySQL connection to the server of a mysql:// URL (optionally one database)."""
    u = urlparse(url)
    return pymysql.connect(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=database,
        autocommit=True,
    )


def create_database(url: str) -> None:
    """Create the database a mysql:// URL names, if missing (benchmarks use their own)."""
    name = urlparse(url).path.lstrip("/")
    with connect(url, None) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p99/mean in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(pct(ms, 0.5), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "n": len(ms),
    }


def write(name: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


def run_threads(n: int, work: Callable[[int], None], before: Callable[[int], None] | None = None) -> float:
    """Run work(k) for k in range(n) on n threads released together; return the wall time.

    `before(k)` runs on thread k ahead of the common start (connection set-up stays outside the
    measured time); the first exception of any thread is raised after all have ended.
    """
    start, end = run_threads_span(n, work, before)
    return end - start


def run_threads_span(
    n: int,
    work: Callable[[int], None],
    before: Callable[[int], None] | None = None,
    ready: Callable[[], Any] | None = None,
) -> tuple[float, float]:
    """run_threads, returning (start, end) on time.perf_counter (one clock for every process).

    `ready()`, if given, is called once every thread's `before` has run and before they are
    released: forked client processes meet at a common barrier there.
    """
    barrier = threading.Barrier(n + 1)
    go = threading.Event()
    errors: list[BaseException] = []
    starts: list[float] = []

    def body(k: int) -> None:
        try:
            if before is not None:
                before(k)
        except BaseException as exc:
            errors.append(exc)
        barrier.wait()
        go.wait()
        starts.append(time.perf_counter())  # the first thread to run starts the clock, not the main thread
        if errors:
            return
        try:
            work(k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    if ready is not None:
        ready()
    go.set()
    # Not a clock read here: with hundreds of threads released at once, the main thread could get
    # the GIL back only after they had run for a while (at 1,024 threads, 0.2 s and more), and the
    # wall time came out shorter than the slowest attempt in it.
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return min(starts), time.perf_counter()
