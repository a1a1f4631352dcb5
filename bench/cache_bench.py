"""Catalogue cache benchmark: schedule list + available counts, cache miss vs hit, at 1,000,000 seats;
then HTTP throughput of the cached seat map under locust beside a bare Flask route, same gunicorn settings.

    .venv/bin/python -m bench.cache_bench [--seats 1000000] [--schedules 20] [-n 500] [--users 50] [--duration 20s]

1. Latency (server side, N misses and N hits interleaved in one run):
   - service: `CatalogueCache.schedules(concert_id=...)`, the call the route makes;
   - request: the Flask handling of GET /api/v1/concerts/{id}/schedules, first before_request hook to last
     after_request hook (routing, validation, serialization; no socket), driven by the test client.
   A miss deletes the concert's cache keys first, so every miss counts the seats in MySQL again.
2. Throughput: gunicorn (`-c config/gunicorn.py`, WEB_CONCURRENCY=2) serving `web:create_app()`, locust
   GETs /api/v1/schedules/{id}/seats (50 seats, ACTIVE queue tokens); then the same gunicorn settings serving
   `bench.bare_app:app`, same locust run. Ratio = seat-map RPS / bare RPS.

Env: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_cache, created if missing; reseeded only
when its data does not match the arguments), BENCH_REDIS_URL (default redis://127.0.0.1:6379/9, flushed).
Writes bench/results/cache.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis
from flask import Flask, Response, g

from bench.common import BENCH_JWT_SECRET, bearer, create_database, machine, pct, sign, write
from config.bootstrap import current
from config.settings import Settings
from models import schema, seed
from models.cache import CatalogueCache, sched_key, schedule_keys
from models.concerts import Concert, NewSchedule, Schedule, Seat, create_concert
from models.db import db, utcnow
from models.waiting_room import ACTIVE, WaitingRoom
from web import create_app

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WARMUP = 20


def ensure_data(seats: int, schedules: int) -> tuple[int, int, dict[str, Any]]:
    """(big concert id, 50-seat schedule id, load facts): reuse matching data, else drop, migrate and seed."""
    try:
        big = Concert.get_or_none(Concert.title == "Bench 1")
        loaded = big is not None and Seat.select().count() == seats + 50
        loaded = loaded and Schedule.select().where(Schedule.concert == big).count() == schedules
    except Exception:  # no schema yet
        loaded = False
    facts: dict[str, Any] = {"reused": loaded}
    if not loaded:
        schema.drop_all()
        schema.migrate()
        result = seed.seed(concerts=1, schedules=schedules, seats=seats // schedules, title="Bench")
        facts["seed_seconds"] = round(result.seconds, 1)
        create_concert(title="Seat map", venue="Hall", schedules=[NewSchedule(utcnow() + dt.timedelta(days=1), 50, 1)])
        db.execute_sql("ANALYZE TABLE seats")
    big = Concert.get(Concert.title == "Bench 1")
    small = Schedule.select().join(Concert).where(Concert.title == "Seat map").get()
    facts["seats"] = Seat.select().where(Seat.schedule.in_(Schedule.select().where(Schedule.concert == big))).count()
    return big.id, small.id, facts


def stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(pct(ms, 0.5), 3), "p99_ms": round(pct(ms, 0.99), 3), "n": len(ms)}


def latency(app: Flask, concert_id: int, n: int) -> dict[str, Any]:
    """Miss and hit, interleaved, through the service call and through the Flask request."""
    cache: CatalogueCache = app.extensions["catalogue_cache"]
    r = current().redis
    ids = [s.id for s in Schedule.select(Schedule.id).where(Schedule.concert == concert_id)]
    keys = [sched_key(concert_id), *(schedule_keys(sid)[2] for sid in ids)]
    server: list[float] = []

    def started() -> None:
        g.bench_started = time.perf_counter()

    def finished(response: Response) -> Response:
        server.append(time.perf_counter() - g.bench_started)
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, started)  # runs first
    app.after_request_funcs.setdefault(None, []).insert(0, finished)  # after-hooks run in reverse: runs last
    client = app.test_client()
    out: dict[str, dict[str, list[float]]] = {"service": {"miss": [], "hit": []}, "request": {"miss": [], "hit": []}}
    for i in range(WARMUP + n):
        r.delete(*keys)
        db.connect(reuse_if_open=True)  # the service call uses an open connection (a request's teardown closed it)
        t0 = time.perf_counter()
        cold = cache.schedules(concert_id=concert_id)
        t1 = time.perf_counter()
        warm = cache.schedules(concert_id=concert_id)
        t2 = time.perf_counter()
        assert cold == warm, "a hit must return what the miss built"
        r.delete(*keys)
        bodies = [client.get(f"/api/v1/concerts/{concert_id}/schedules") for _ in range(2)]
        assert [b.status_code for b in bodies] == [200, 200] and bodies[0].data == bodies[1].data
        if i >= WARMUP:
            out["service"]["miss"].append(t1 - t0)
            out["service"]["hit"].append(t2 - t1)
            out["request"]["miss"].append(server[-2])
            out["request"]["hit"].append(server[-1])
    result: dict[str, Any] = {}
    for level, runs in out.items():
        miss, hit = stats(runs["miss"]), stats(runs["hit"])
        result[level] = {"miss": miss, "hit": hit, "p50_ratio": round(miss["p50_ms"] / hit["p50_ms"], 1)}
    result["available_seats"] = sum(s.available_seats for s in cold)
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    app_spec: str, env: dict[str, str], probe: str, cwd: Path = ROOT, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start gunicorn with the config of the checkout `cwd` on `port` (else a free one); return it once
    `probe` answers 200."""
    port = port or free_port()
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", app_spec],
        cwd=cwd,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + probe, timeout=5) as resp:
                if resp.status == 200:
                    return proc, base
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise SystemExit(f"gunicorn {app_spec} did not come up on port {port}") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def locust(
    base: str, path: str, tokens: list[str], users: int, duration: str, out: Path, bearers: list[str] | None = None
) -> dict[str, Any]:
    """One headless locust run against `base`; the aggregated row of its CSV."""
    env = {
        **os.environ,
        "LOCUST_PATH": path,
        "LOCUST_TOKENS": ",".join(tokens),
        "LOCUST_BEARERS": ",".join(bearers or []),
    }
    cmd = [str(BIN / "locust"), "-f", "bench/locustfile_cache.py", "--headless", "-u", str(users), "-r", str(users)]
    cmd += ["-t", duration, "--csv", str(out), "--host", base, "--only-summary", "--loglevel", "WARNING"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(f"{out}_stats.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": round(float(row["Requests/s"]), 1),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
    }


def seat_cache_events(base: str) -> dict[str, float]:
    """The server's seat-map cache counters (hit, miss, rebuild, fallback) from /api/v1/metrics."""
    with urllib.request.urlopen(base + "/api/v1/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    prefix = 'cache_events_total{cache="seats",event="'
    found = {
        line[len(prefix) :].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix)
    }
    return {e: found.get(e, 0.0) for e in ("hit", "miss", "rebuild", "fallback")}


def throughput(
    db_url: str, redis_url: str, schedule_id: int, concert_id: int, users: int, duration: str
) -> dict[str, Any]:
    """The cached seat map and the bare route under the same gunicorn settings and the same locust run."""
    room = WaitingRoom(current().redis, active_limit=100_000, active_ttl=3600, waiting_ttl=3600)
    tokens = [room.issue(user_id=u, concert_id=concert_id) for u in range(1, users + 1)]
    assert all(t.status == ACTIVE for t in tokens), "every bench user needs an ACTIVE queue token"
    metrics_dir = tempfile.mkdtemp(prefix="cache-bench-metrics-")
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_ENABLED": "false",
        "ACTIVE_LIMIT": "100000",
        "WEB_CONCURRENCY": "2",
        "HOST": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "AUTH_JWT_SECRET": BENCH_JWT_SECRET,  # the fans sign in with it (every user route needs the identity)
    }
    env.pop("WEB_THREADS", None)  # the config default, for both servers
    seats = f"/api/v1/schedules/{schedule_id}/seats"
    result: dict[str, Any] = {"users": users, "duration": duration, "web_concurrency": 2, "web_threads": 8}
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        proc, base = serve("web:create_app()", env, "/api/v1/healthz")
        try:
            req = urllib.request.Request(base + seats, headers={"X-Queue-Token": tokens[0].token, **bearer(1)})
            with urllib.request.urlopen(req, timeout=10) as resp:  # primes the seat-map cache
                assert resp.status == 200
            bearers = [sign(t.user_id) for t in tokens]
            out = Path(tmp) / "seats"
            result["seat_map"] = locust(base, seats, [t.token for t in tokens], users, duration, out, bearers)
            result["seat_map"]["cache_events"] = seat_cache_events(base)
        finally:
            stop(proc)
        proc, base = serve("bench.bare_app:app", env, "/bare")
        try:
            result["bare"] = locust(base, "/bare", [], users, duration, Path(tmp) / "bare")
        finally:
            stop(proc)
    subprocess.run(["rm", "-rf", metrics_dir], check=False)
    result["rps_ratio"] = round(result["seat_map"]["rps"] / result["bare"]["rps"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seats", type=int, default=1_000_000, help="seats of the benchmark concert (all schedules)")
    parser.add_argument("--schedules", type=int, default=20)
    parser.add_argument("-n", type=int, default=500, help="misses and hits measured (each)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", default="20s")
    args = parser.parse_args(argv)
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_cache")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every number
    create_database(db_url)
    redis.Redis.from_url(redis_url).flushdb()
    settings = Settings().with_(
        database_url=db_url,
        redis_url=redis_url,
        rate_limit_enabled=False,
        active_limit=100_000,
        auth_jwt_secret=BENCH_JWT_SECRET,
    )
    app = create_app(settings)
    load_started = time.perf_counter()
    concert_id, seat_schedule, load = ensure_data(args.seats, args.schedules)
    load["seconds"] = round(time.perf_counter() - load_started, 1)
    seat_concert = Schedule.get_by_id(seat_schedule).concert_id
    db.close()
    current().redis.flushdb()
    print(f"data: {load['seats']:,} seats in {args.schedules} schedules ({load})", flush=True)
    lat = latency(app, concert_id, args.n)
    db.close()
    http = throughput(db_url, redis_url, seat_schedule, seat_concert, args.users, args.duration)
    current().redis.flushdb()
    data = {
        "machine": {
            **machine(),
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "data": {**load, "schedules": args.schedules},
        "latency": lat,
        "http": http,
    }
    path = write("cache", data)
    print_table(lat, http)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


def print_table(lat: dict[str, Any], http: dict[str, Any]) -> None:
    head = ("miss p50", "miss p99", "hit p50", "hit p99")
    print(f"\n{'schedule list + counts':<26}" + "".join(f"{h:>10}" for h in head) + f"{'p50 ratio':>11}")
    for level in ("service", "request"):
        m, h = lat[level]["miss"], lat[level]["hit"]
        print(
            f"{level + ' (ms)':<26}{m['p50_ms']:>10.3f}{m['p99_ms']:>10.3f}{h['p50_ms']:>10.3f}{h['p99_ms']:>10.3f}"
            f"{lat[level]['p50_ratio']:>10.1f}x"
        )
    print(f"\n{'HTTP (locust)':<26}{'RPS':>10}{'p50 ms':>10}{'p95 ms':>10}{'failures':>10}")
    for name in ("seat_map", "bare"):
        x = http[name]
        print(f"{name:<26}{x['rps']:>10.1f}{x['p50_ms']:>10.0f}{x['p95_ms']:>10.0f}{x['failures']:>10}")
    print(f"{'seat map / bare RPS':<26}{http['rps_ratio']:>10.3f}\n")


if __name__ == "__main__":
    sys.exit(main())
