"""Flash sale over HTTP: N fans (locust) against the Procfile's processes, beside the framework and physical floors.

    .venv/bin/python -m bench.flash_sale            # 5,000 fans arriving at 500/s (1.5-2 minutes)
    .venv/bin/python -m bench.flash_sale --quick    # 1,000 fans arriving at 200/s (under a minute)

1. Physical floor (quiet machine, before anything starts): raw Redis INCR round trips and raw MariaDB
   single-row INSERT + COMMIT, each from FLOOR_THREADS threads with one connection each.
2. The service: a fresh database (dropped, created, `python -m models migrate`), Redis db flushed, a Tansu
   broker on a free port, then `honcho start` of the Procfile (web gunicorn on :8181 with config/gunicorn.py,
   `worker` x --workers, scheduler, consumer). One concert with 2 schedules x 50 seats is created through
   `POST /api/v1/admin/concerts`; every fan is charged the seat price through
   `POST /api/v1/users/{id}/points/charge` before the sale (the route a fan would use; not timed).
3. The sale: `locust -f bench/locustfile_flash.py --headless` (FastHttpUser, one process) spawns the fans at
   --spawn-rate; each joins the queue, polls until ACTIVE, reads a seat map, holds a random free seat
   (`Prefer: wait=5`), pays (`Idempotency-Key`, `Prefer: wait=5`) and stops (see the locustfile).
   Meanwhile a thread polls the database every 0.1 s: time to sell out runs from the first reservation
   row to the moment all seats are RESERVED.
4. After the sale: waits for the outbox to be PUBLISHED and every event consumed, then
   `python -m models check`, plus oversold / double-payment / unpublished / open-job counts.
5. Framework floor: gunicorn with the same config serving bench/bare_app.py on :8182, loaded by the same
   locustfile (FLASH_MODE=bare: GET back to back) with the same user count and spawn rate, a short run.

The rate limiter stays on, with the per-IP limits raised (RATE_LIMIT_ISSUE_IP, RATE_LIMIT_POLL_IP): every
fan comes from 127.0.0.1. ACTIVE_LIMIT, ADMIT_INTERVAL and OUTBOX_INTERVAL keep their production defaults.

Env: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_flash, dropped and recreated; left in
place afterwards for inspection), BENCH_REDIS_URL (default redis://127.0.0.1:6379/7, flushed before and
after). Writes bench/results/flash_sale.json and bench/results/locust/flash_{sale,bare}_{stats,failures}.csv.
Every process it starts (Tansu, honcho and the Procfile's process groups, locust, gunicorn) is stopped on
exit, on an exception, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import glob
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

import redis

from bench.common import connect, write
from tests.support.api_client import ApiClient
from tests.support.kafka_broker import TansuBroker
from tests.support.procs import lease_holders

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEB_PORT, BARE_PORT = 8181, 8182
SEATS_PER_SCHEDULE, SCHEDULES, PRICE = 50, 2, 50_000
SEATS_TOTAL = SEATS_PER_SCHEDULE * SCHEDULES
ADMIN_TOKEN = "bench-flash-admin"
FLOOR_THREADS = 4
ENDPOINTS = (
    "/queue/tokens",
    "/queue/token",
    "/schedules/[id]/seats",
    "/reservations",
    "/payments",
    "/jobs/[id]",
    "/queue/token [DELETE]",
)


class Interrupted(Exception):
    """Raised by the SIGTERM handler so that every `finally` runs."""


# --- processes ------------------------------------------------------------------------------------
class Honcho:
    """`honcho start` of the Procfile in its own session; stop() sends SIGTERM, then SIGKILL to what is left."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.log = log
        cmd = [str(BIN / "honcho"), "-e", os.devnull, "start", "-p", str(WEB_PORT), "-c", f"worker={workers}"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def children(self) -> dict[str, int]:
        """Process name -> pid, from honcho's 'web.1 started (pid=N)' lines (each child leads its own group)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return {k: int(v) for k, v in re.findall(r"\| (\S+) started \(pid=(\d+)\)", text)}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, grace: float = 25) -> dict[str, bool]:
        """SIGTERM everything; return process name -> True if its group ended within `grace` s (no SIGKILL).

        honcho runs each Procfile line under `/bin/sh -c` (dash does not exec), so honcho sees the shell die
        at once while the Python process in the same group is still draining: wait for the groups themselves.
        """
        children = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # honcho SIGTERMs every child's group
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + grace
        clean: dict[str, bool] = {}
        for name, pgid in children.items():
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            clean[name] = not _group_alive(pgid)
            if not clean[name]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        return clean


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gunicorn(app_spec: str, env: dict[str, str], port: int, probe: str, log: Path) -> subprocess.Popen[bytes]:
    """gunicorn -c config/gunicorn.py <app> on a port, returned once `probe` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", app_spec],
            cwd=ROOT,
            env={**env, "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_http(f"http://127.0.0.1:{port}{probe}", 60, proc)
    return proc


def stop_group(proc: subprocess.Popen[bytes], grace: float = 25) -> None:
    """SIGTERM a process group, SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_http(url: str, timeout: float, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status == 200:
                    return
        except Exception:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise SystemExit(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.2)


# --- physical floor -------------------------------------------------------------------------------
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

    def factory() -> tuple[Any, Any]:
        client = redis.Redis.from_url(redis_url)
        return (lambda: client.incr("bench:floor:incr")), client.close

    rate = _threads_rate(factory, seconds)
    redis.Redis.from_url(redis_url).delete("bench:floor:incr")
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


# --- setup ------------------------------------------------------------------------------------------
def fresh_database(db_url: str, env: dict[str, str]) -> None:
    """Drop and create the benchmark database, then migrate it with the project's CLI."""
    name = urlparse(db_url).path.lstrip("/")
    with connect(db_url, None) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    subprocess.run(
        [sys.executable, "-m", "models", "migrate"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


def create_concert(api: ApiClient) -> tuple[int, list[int]]:
    starts = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    body = {
        "title": "Flash sale",
        "venue": "Bench Hall",
        "schedules": [
            {"startsAt": (starts + dt.timedelta(days=i)).isoformat(), "seatCount": SEATS_PER_SCHEDULE, "price": PRICE}
            for i in range(SCHEDULES)
        ],
    }
    status, _, out = api.post("/admin/concerts", body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if status != 201:
        raise SystemExit(f"POST /admin/concerts answered {status}: {out}")
    return int(out["concertId"]), [int(s["scheduleId"]) for s in out["schedules"]]


def charge_all(port: int, users: int, amount: int, threads: int = 8) -> float:
    """Charge users 1..N `amount` points each through the API (keep-alive connections); return seconds."""
    started = time.perf_counter()

    def charge(ids: range) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"amount": amount})
        try:
            for uid in ids:
                conn.request("POST", f"/api/v1/users/{uid}/points/charge", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise SystemExit(f"charging user {uid} answered {resp.status}: {data[:200]!r}")
        finally:
            conn.close()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(charge, [range(1 + i, users + 1, threads) for i in range(threads)]))
    return time.perf_counter() - started


def wait_for_partitions(client: redis.Redis, partitions: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(lease_holders(client, partitions)) < partitions:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(lease_holders(client, partitions))}/{partitions} partitions leased")
        time.sleep(0.2)


# --- measuring during the sale ----------------------------------------------------------------------
class SellOutWatch(threading.Thread):
    """Polls the database every `interval` s: first reservation row, all seats taken, all seats RESERVED."""

    def __init__(self, db_url: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.db_url, self.interval = db_url, interval
        self.done = threading.Event()
        self.first_hold: float | None = None
        self.all_taken: float | None = None
        self.sold_out: float | None = None
        self.timeline: list[tuple[float, int, int]] = []  # (seconds since the sale opened, seats taken, RESERVED)
        self.started = time.time()

    def run(self) -> None:
        name = urlparse(self.db_url).path.lstrip("/")
        with connect(self.db_url, name) as conn, conn.cursor() as cur:
            while not self.done.is_set():
                cur.execute(
                    "SELECT (SELECT COUNT(*) FROM reservations), "
                    "(SELECT COUNT(*) FROM seats WHERE status <> 'AVAILABLE'), "
                    "(SELECT COUNT(*) FROM seats WHERE status = 'RESERVED')"
                )
                reservations, taken, reserved = (int(x) for x in cur.fetchone())  # type: ignore[union-attr]
                now = time.time()
                if reservations and self.first_hold is None:
                    self.first_hold = now
                if taken >= SEATS_TOTAL and self.all_taken is None:
                    self.all_taken = now
                if reserved >= SEATS_TOTAL and self.sold_out is None:
                    self.sold_out = now
                if not self.timeline or self.timeline[-1][1:] != (taken, reserved):
                    self.timeline.append((round(now - self.started, 2), taken, reserved))
                self.done.wait(self.interval)


def run_locust(
    host: str, users: int, rate: float, run_time: str, csv_prefix: Path, env: dict[str, str], log: Path
) -> tuple[int, float, float]:
    """One headless locust run: (exit code, wall seconds, locust's CPU seconds)."""
    cmd = [str(BIN / "locust"), "-f", "bench/locustfile_flash.py", "--headless", "-u", str(users), "-r", str(rate)]
    cmd += ["-t", run_time, "--csv", str(csv_prefix), "--host", host, "--only-summary"]
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait()
        finally:
            stop_group(proc, grace=20)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # locust is the only child reaped meanwhile
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return proc.returncode, time.perf_counter() - started, cpu


def read_stats(prefix: Path) -> dict[str, dict[str, Any]]:
    """Locust's <prefix>_stats.csv as name -> {requests, failures, rps, p50_ms, p95_ms, p99_ms, error_rate}."""
    out: dict[str, dict[str, Any]] = {}
    with open(f"{prefix}_stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            n, f = int(row["Request Count"]), int(row["Failure Count"])
            out[row["Name"]] = {
                "method": row["Type"],
                "requests": n,
                "failures": f,
                "rps": round(float(row["Requests/s"]), 1),
                "p50_ms": _num(row["50%"]),
                "p95_ms": _num(row["95%"]),
                "p99_ms": _num(row["99%"]),
                "max_ms": _num(row["Max Response Time"]),
                "error_rate": round(f / n, 4) if n else 0.0,
            }
    return out


def peak_rps(prefix: Path) -> float | None:
    """The highest rolling requests/s locust recorded (Aggregated rows of <prefix>_stats_history.csv)."""
    path = Path(f"{prefix}_stats_history.csv")
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        values = [float(r["Requests/s"]) for r in csv.DictReader(fh) if r["Name"] == "Aggregated"]
    return round(max(values), 1) if values else None


def locust_cpu_warning(log: Path) -> bool:
    """True if locust warned that its CPU was saturated (its numbers are then a floor of the server's)."""
    return "CPU usage" in log.read_text(errors="replace") if log.exists() else False


def read_failures(prefix: Path) -> list[dict[str, Any]]:
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return [
            {"method": r["Method"], "name": r["Name"], "error": r["Error"], "occurrences": int(r["Occurrences"])}
            for r in csv.DictReader(fh)
        ]


def _num(text: str) -> float | None:
    try:
        return round(float(text), 1)
    except ValueError:
        return None


# --- after the sale -----------------------------------------------------------------------------------
def settle(db_url: str, client: redis.Redis, timeout: float) -> dict[str, Any]:
    """Wait until every outbox row is PUBLISHED, every event consumed and no job is open; return the counts."""
    name = urlparse(db_url).path.lstrip("/")
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    with connect(db_url, name) as conn, conn.cursor() as cur:
        while True:
            cur.execute("SELECT COUNT(*) FROM payments")
            payments = int(cur.fetchone()[0])  # type: ignore[index]
            cur.execute("SELECT COUNT(*) FROM outbox_events WHERE status <> 'PUBLISHED'")
            unpublished = int(cur.fetchone()[0])  # type: ignore[index]
            consumed = int(client.hget("stats:consumer", "consumed_total") or 0)
            done_keys = sum(1 for _ in client.scan_iter("events:done:*", count=1000))
            open_jobs = int(client.zcard("jobs:open"))
            settled = unpublished == 0 and consumed >= payments and done_keys >= payments and open_jobs == 0
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        facts: dict[str, Any] = {
            "payments": payments,
            "outbox_unpublished": unpublished,
            "events_consumed": consumed,
            "events_handled": done_keys,
            "dead_lettered": int(client.hget("stats:consumer", "dead_lettered_total") or 0),
            "open_jobs": open_jobs,
            "settle_seconds": round(time.monotonic() - started, 1),
        }
        cur.execute(
            "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations WHERE status IN ('HELD','CONFIRMED') "
            "GROUP BY seat_id HAVING COUNT(*) > 1) x"
        )
        facts["oversold"] = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute(
            "SELECT COUNT(*) FROM (SELECT r.seat_id FROM payments p JOIN reservations r ON r.id = p.reservation_id "
            "GROUP BY r.seat_id HAVING COUNT(*) > 1) x"
        )
        facts["double_payments"] = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute("SELECT status, COUNT(*) FROM seats GROUP BY status")
        facts["seats_by_status"] = {str(k): int(v) for k, v in cur.fetchall()}
        cur.execute("SELECT status, COUNT(*) FROM reservations GROUP BY status")
        facts["reservations_by_status"] = {str(k): int(v) for k, v in cur.fetchall()}
        cur.execute(
            "SELECT p.user_id, s.concert_id FROM payments p JOIN concert_schedules s ON s.id = ("
            "SELECT r.schedule_id FROM reservations r WHERE r.id = p.reservation_id)"
        )
        payers = cur.fetchall()
        facts["payer_tokens_left"] = sum(int(client.exists(f"wr:{{c:{concert}}}:u:{user}")) for user, concert in payers)
        cur.execute("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'PaymentCompleted'")
        facts["payment_events"] = int(cur.fetchone()[0])  # type: ignore[index]
    return facts


def invariant_check(env: dict[str, str]) -> tuple[bool, list[str]]:
    """`python -m models check` against the benchmark database: (exit code 0, violation lines)."""
    done = subprocess.run(
        [sys.executable, "-m", "models", "check"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("invariant")]
    return done.returncode == 0, lines


def service_problems(facts: dict[str, Any], server_5xx: int) -> list[str]:
    """What the run saw beyond `models check`: oversell, double payment, events not published/consumed, stuck jobs."""
    found = []
    if facts["oversold"]:
        found.append(f"{facts['oversold']} seat(s) with more than one live reservation")
    if facts["double_payments"]:
        found.append(f"{facts['double_payments']} seat(s) paid more than once")
    if facts["outbox_unpublished"]:
        found.append(f"{facts['outbox_unpublished']} outbox row(s) not PUBLISHED")
    if facts["payment_events"] != facts["payments"]:
        found.append(f"{facts['payment_events']} PaymentCompleted row(s) for {facts['payments']} payment(s)")
    if facts["events_handled"] != facts["payments"]:
        found.append(f"{facts['events_handled']} event(s) handled by the consumer for {facts['payments']} payment(s)")
    if facts["dead_lettered"]:
        found.append(f"{facts['dead_lettered']} event(s) dead-lettered")
    if facts["payer_tokens_left"]:
        found.append(f"{facts['payer_tokens_left']} payer(s) still hold a queue token after the event")
    if facts["open_jobs"]:
        found.append(f"{facts['open_jobs']} job(s) still QUEUED/RUNNING")
    if server_5xx < 0:
        found.append("the web process's /metrics could not be read (5xx count unknown)")
    elif server_5xx:
        found.append(f"the web process answered {server_5xx} 5xx response(s)")
    return found


def server_metrics(port: int) -> tuple[int, dict[str, float]]:
    """From the web process's /metrics: 5xx answers counted (-1 if unreadable), seat-map cache events."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=10) as resp:
            lines = resp.read().decode().splitlines()
    except Exception:
        return -1, {}
    total = 0.0
    cache: dict[str, float] = {}
    prefix = 'cache_events_total{cache="seats",event="'
    for line in lines:
        if line.startswith("http_requests_total{") and re.search(r'status="5\d\d"', line):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(prefix):
            cache[line[len(prefix) :].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return int(total), cache


# --- the run ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flash_sale", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 fans, shorter timings (about a minute)")
    parser.add_argument("--users", type=int, help="fans (default 5000, --quick 1000)")
    parser.add_argument("--spawn-rate", type=float, help="fans arriving per second (default 500, --quick 200)")
    parser.add_argument("--run-time", help="upper bound of the sale (default 180s, --quick 45s)")
    parser.add_argument("--workers", type=int, default=1, help="Procfile `worker` processes (honcho -c worker=N)")
    parser.add_argument("--bare-run-time", help="framework-floor run (default 20s, --quick 10s)")
    args = parser.parse_args(argv)
    users = args.users or (1000 if args.quick else 5000)
    rate = args.spawn_rate or (200 if args.quick else 500)
    run_time = args.run_time or ("45s" if args.quick else "180s")
    bare_run_time = args.bare_run_time or ("10s" if args.quick else "20s")
    floor_seconds = 2.0 if args.quick else 5.0
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_flash")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C also when started with SIGINT ignored
    t0 = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    tmp = Path(tempfile.mkdtemp(prefix="flash-sale-"))
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "PORT", "WEB_THREADS")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        HOST="127.0.0.1",
        ADMIN_TOKEN=ADMIN_TOKEN,
        WEB_CONCURRENCY="2",
        ACTIVE_LIMIT="100",
        PARTITIONS="16",
        ADMIT_INTERVAL="1",
        OUTBOX_INTERVAL="1",
        RATE_LIMIT_ISSUE_IP="100000/second",
        RATE_LIMIT_POLL_IP="100000/second",
        PYTHONUNBUFFERED="1",
    )
    params: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "users": users,
        "spawn_rate_per_s": rate,
        "run_time_limit": run_time,
        "locust": "FastHttpUser, 1 process, -u users -r spawn_rate, each fan once (no respawn)",
        "procfile": f"honcho start -c worker={args.workers} (web, worker x{args.workers}, scheduler, consumer)",
        "web_concurrency": 2,
        "web_threads": 8,
        "partitions": 16,
        "active_limit": 100,
        "admit_interval_s": 1.0,
        "outbox_interval_s": 1.0,
        "rate_limits_raised": {"RATE_LIMIT_ISSUE_IP": "100000/second", "RATE_LIMIT_POLL_IP": "100000/second"},
        "schedules": SCHEDULES,
        "seats_per_schedule": SEATS_PER_SCHEDULE,
        "price": PRICE,
        "points_charged": f"{PRICE} to each fan through POST /users/{{id}}/points/charge before the sale",
        "floor_threads": FLOOR_THREADS,
        "bare_run_time": bare_run_time,
    }
    result: dict[str, Any] = {"parameters": params}
    honcho: Honcho | None = None
    broker: TansuBroker | None = None
    bare: subprocess.Popen[bytes] | None = None
    watch: SellOutWatch | None = None
    try:
        # 1. physical floor on a quiet machine
        fresh_database(db_url, env)
        redis_rate = raw_redis_rate(redis_url, floor_seconds)
        db_rate, db_facts = raw_db_commit_rate(db_url, floor_seconds)
        print(f"floor: raw Redis {redis_rate:,.0f} INCR/s, raw DB {db_rate:,.0f} commits/s", flush=True)

        # 2. broker, Procfile processes, concert, points
        broker = TansuBroker()
        broker.start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
        honcho = Honcho(env, args.workers, tmp / "honcho.log")
        api = ApiClient(f"http://127.0.0.1:{WEB_PORT}/api/v1")
        wait_http(f"http://127.0.0.1:{WEB_PORT}/api/v1/readyz", 60, honcho.proc)
        wait_for_partitions(r, 16)
        concert_id, schedule_ids = create_concert(api)
        charge_s = charge_all(WEB_PORT, users, PRICE)
        params["charge_seconds"] = round(charge_s, 1)
        params["startup_seconds"] = round(time.perf_counter() - t0, 1)
        print(
            f"ready in {params['startup_seconds']} s: concert {concert_id}, schedules {schedule_ids}, "
            f"{users} fans charged in {charge_s:.1f} s",
            flush=True,
        )

        # 3. the sale
        watch = SellOutWatch(db_url)
        watch.start()
        sale_started = time.time()
        locust_env = {
            **env,
            "FLASH_CONCERT_ID": str(concert_id),
            "FLASH_SCHEDULES": ",".join(map(str, schedule_ids)),
            "FLASH_USER_BASE": "1",
            "FLASH_USERS": str(users),
            "FLASH_OUTCOMES": str(tmp / "outcomes.json"),
        }
        rc, sale_seconds, locust_cpu = run_locust(
            f"http://127.0.0.1:{WEB_PORT}", users, rate, run_time, tmp / "sale", locust_env, tmp / "locust-sale.log"
        )
        watch.done.set()
        watch.join(timeout=5)
        endpoints = read_stats(tmp / "sale")
        outcomes: dict[str, int] = {}
        for path in glob.glob(str(tmp / "outcomes.json.*")):
            for k, v in json.loads(Path(path).read_text()).items():
                outcomes[k] = outcomes.get(k, 0) + int(v)
        print(f"sale: locust exit {rc} after {sale_seconds:.1f} s; outcomes {outcomes}", flush=True)

        # 4. after the sale
        facts = settle(db_url, r, timeout=30 if args.quick else 60)
        server_5xx, seat_cache = server_metrics(WEB_PORT)
        ok, violations = invariant_check(env)
        procfile_clean_stop = honcho.stop()
        honcho_tail = honcho.tail()
        honcho = None

        # 5. framework floor
        bare = gunicorn("bench.bare_app:app", env, BARE_PORT, "/bare", tmp / "bare.log")
        bare_env = {**env, "FLASH_MODE": "bare"}
        _, bare_seconds, bare_cpu = run_locust(
            f"http://127.0.0.1:{BARE_PORT}", users, rate, bare_run_time, tmp / "bare", bare_env, tmp / "locust-bare.log"
        )
        stop_group(bare)
        bare = None
        bare_stats = read_stats(tmp / "bare")
        bare_row = bare_stats.get("/bare") or bare_stats["Aggregated"]

        first, last = watch.first_hold, watch.sold_out
        seats_sold = facts["seats_by_status"].get("RESERVED", 0)
        holds = outcomes.get("held", 0)
        hold_window = (watch.all_taken or time.time()) - first if first else None
        result.update(
            {
                "endpoints": {name: endpoints[name] for name in (*ENDPOINTS, "Aggregated") if name in endpoints},
                "failures": read_failures(tmp / "sale"),
                "outcomes": dict(sorted(outcomes.items())),
                "sale_seconds": round(sale_seconds, 1),
                "peak_rps": peak_rps(tmp / "sale"),
                "locust_cpu_saturated": locust_cpu_warning(tmp / "locust-sale.log"),
                "locust_cpu_share": round(locust_cpu / sale_seconds, 2),
                "mean_estimate_on_join_s": round(outcomes.get("estimate_on_join_s_total", 0) / waiting, 1)
                if (waiting := outcomes.get("waiting_on_join", 0))
                else None,
                "mean_admission_wait_s": round(outcomes.get("admitted_after_s_total_ms", 0) / 1000 / admitted, 2)
                if (admitted := outcomes.get("admitted", 0))
                else None,
                "locust_exit_code": rc,
                "first_hold_after_start_s": round(first - sale_started, 2) if first else None,
                "sell_out_seconds": round(last - first, 2) if first and last else None,
                "all_seats_taken_seconds": round(watch.all_taken - first, 2) if first and watch.all_taken else None,
                "seat_map_cache_events": seat_cache,
                "seats_sold": seats_sold,
                "seats_total": SEATS_TOTAL,
                "sale_timeline": watch.timeline[:400],
                "check": {
                    "ok": ok and not (extra := service_problems(facts, server_5xx)),
                    "violations": violations + extra,
                    "oversold": facts["oversold"],
                    "double_payments": facts["double_payments"],
                    "outbox_unpublished": facts["outbox_unpublished"],
                    "events_consumed": facts["events_consumed"],
                    "events_handled": facts["events_handled"],
                    "dead_lettered": facts["dead_lettered"],
                    "payments": facts["payments"],
                    "payment_events": facts["payment_events"],
                    "open_jobs": facts["open_jobs"],
                    "payer_tokens_left": facts["payer_tokens_left"],
                    "settle_seconds": facts["settle_seconds"],
                    "seats_by_status": facts["seats_by_status"],
                    "reservations_by_status": facts["reservations_by_status"],
                    "server_5xx": server_5xx,
                    "procfile_clean_stop": procfile_clean_stop,
                },
                "floors": {
                    "bare_flask": {
                        **{k: bare_row[k] for k in ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms")},
                        "peak_rps": peak_rps(tmp / "bare"),
                        "run_seconds": round(bare_seconds, 1),
                        "locust_cpu_saturated": locust_cpu_warning(tmp / "locust-bare.log"),
                        "locust_cpu_share": round(bare_cpu / bare_seconds, 2),
                    },
                    "raw_redis_ops_per_s": round(redis_rate),
                    "raw_db_commits_per_s": round(db_rate),
                    "db": db_facts,
                },
            }
        )
        seat_map = endpoints.get("/schedules/[id]/seats", {})
        agg = endpoints.get("Aggregated", {})
        holds_per_s = holds / hold_window if hold_window else None
        result["holds_per_s"] = round(holds_per_s, 1) if holds_per_s else None
        result["ratios"] = ratios(
            seat_map, agg, bare_row, holds_per_s, db_rate, redis_rate, endpoints, result["peak_rps"]
        )
        if not result["check"]["ok"]:
            print(f"--- Procfile output (tail) ---\n{honcho_tail}", file=sys.stderr)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({str(exc) or 'Ctrl-C'}): stopping everything", file=sys.stderr)
        return 130
    finally:
        if watch is not None:
            watch.done.set()
        if honcho is not None:
            if not honcho.alive():
                print(f"--- Procfile output (tail) ---\n{honcho.tail()}", file=sys.stderr)
            honcho.stop()
        if bare is not None:
            stop_group(bare)
        if broker is not None:
            broker.close()
        with contextlib.suppress(Exception):
            r.flushdb()
        keep = ROOT / "bench" / "results" / "locust"
        for name in ("sale", "bare"):
            for kind in ("stats", "failures"):
                src = tmp / f"{name}_{kind}.csv"
                if src.exists():
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, keep / f"flash_{name}_{kind}.csv")
        shutil.rmtree(tmp, ignore_errors=True)

    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["machine_load"] = {
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    written = write("flash_sale", result)
    print_table(result)
    print(f"wrote {written.relative_to(ROOT)} in {result['total_seconds']} s")
    return 0 if result["check"]["ok"] else 1


def ratios(
    seat_map: dict[str, Any],
    agg: dict[str, Any],
    bare: dict[str, Any],
    holds_per_s: float | None,
    db_rate: float,
    redis_rate: float,
    endpoints: dict[str, dict[str, Any]],
    peak: float | None,
) -> dict[str, Any]:
    def div(a: Any, b: Any, digits: int = 3) -> float | None:
        return round(a / b, digits) if a is not None and b else None

    out: dict[str, Any] = {
        "seat_map_rps_over_bare_rps": div(seat_map.get("rps"), bare["rps"]),
        "all_requests_rps_over_bare_rps": div(agg.get("rps"), bare["rps"]),
        "peak_rps_over_bare_rps": div(peak, bare["rps"]),
        "seat_map_p50_over_bare_p50": div(seat_map.get("p50_ms"), bare["p50_ms"], 2),
        "holds_per_s_over_raw_db_commits_per_s": div(holds_per_s, db_rate, 4),
        "all_requests_rps_over_raw_redis_ops_per_s": div(agg.get("rps"), redis_rate, 4),
    }
    for name in ENDPOINTS:
        if name in endpoints:
            out[f"p50_over_bare_p50[{name}]"] = div(endpoints[name]["p50_ms"], bare["p50_ms"], 2)
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'endpoint':<24}{'requests':>9}{'fail':>6}{'RPS':>8}{'p50':>8}{'p95':>8}{'p99':>8}")
    for name, e in result["endpoints"].items():
        print(
            f"{name:<24}{e['requests']:>9}{e['failures']:>6}{e['rps']:>8.1f}"
            f"{e['p50_ms'] or 0:>8.0f}{e['p95_ms'] or 0:>8.0f}{e['p99_ms'] or 0:>8.0f}"
        )
    f = result["floors"]
    b = f["bare_flask"]
    print(
        f"{'bare Flask floor':<24}{b['requests']:>9}{b['failures']:>6}{b['rps']:>8.1f}"
        f"{b['p50_ms'] or 0:>8.0f}{b['p95_ms'] or 0:>8.0f}{b['p99_ms'] or 0:>8.0f}"
    )
    print(f"raw Redis {f['raw_redis_ops_per_s']:,} INCR/s · raw DB {f['raw_db_commits_per_s']:,} commits/s")
    c = result["check"]
    print(
        f"sold {result['seats_sold']}/{result['seats_total']} · sell-out {result['sell_out_seconds']} s "
        f"(all held {result['all_seats_taken_seconds']} s) · holds/s {result['holds_per_s']}"
    )
    print(
        f"check ok={c['ok']} violations={len(c['violations'])} oversold={c['oversold']} "
        f"double_payments={c['double_payments']} payments={c['payments']} unpublished={c['outbox_unpublished']} "
        f"consumed={c['events_consumed']} open_jobs={c['open_jobs']} server 5xx={c['server_5xx']}"
    )
    print(
        f"sale {result['sale_seconds']} s, peak {result['peak_rps']} RPS, locust CPU {result['locust_cpu_share']:.0%} "
        f"(bare run {b['locust_cpu_share']:.0%}); {result['outcomes'].get('max_fans_in_journey')} fans in their "
        f"journey at once; mean wait for admission {result['mean_admission_wait_s']} s vs mean estimate on join "
        f"{result['mean_estimate_on_join_s']} s"
    )
    print("ratios: " + ", ".join(f"{k}={v}" for k, v in result["ratios"].items()))


if __name__ == "__main__":
    sys.exit(main())
