"""The driver of `python -m bench.flash_sale`: floors, the service, the sale, the checks, the bare floor, the report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from bench.common import write
from bench.flash_sale import (
    ADMIN_TOKEN,
    BARE_EVERY,
    BIN,
    FLOOR_THREADS,
    JWT_SECRET,
    PRICE,
    REDIS_NICE,
    ROOT,
    SCHEDULES,
    SEATS_PER_SCHEDULE,
    SEATS_TOTAL,
    WEB_PORT,
    Interrupted,
    fair,
)
from bench.flash_sale.checks import invariant_check, server_metrics, settle
from bench.flash_sale.floors import raw_db_commit_rate, raw_redis_rate
from bench.flash_sale.load import CpuWatch, SellOutWatch, read_stats, run_locust
from bench.flash_sale.priority import raise_priority, redis_server_pids, restore
from bench.flash_sale.report import compare_redis, print_comparison, print_table, sale_result
from bench.flash_sale.service import (
    Honcho,
    charge_all,
    create_concert,
    fresh_database,
    gunicorn,
    replica_of,
    replica_selects,
    start_pair,
    stop_group,
    wait_for_partitions,
    wait_http,
    web_cpu_seconds,
    web_run_delay_seconds,
)
from tests.support.api_client import ApiClient
from tests.support.kafka_broker import TansuBroker

BARE_APP = "bench.bare_app:app"  # the bare gunicorn's app: its command line names it (web_cpu_seconds' marker)

SERVICE_ENV = {
    "HOST": "127.0.0.1",
    "ADMIN_TOKEN": ADMIN_TOKEN,
    # the identity service's key (SPEC §3 Identity): the fans (locustfile_flash.sign) sign with it
    "AUTH_JWT_SECRET": JWT_SECRET,
    "WEB_CONCURRENCY": "2",
    "ACTIVE_LIMIT": "100",
    "PARTITIONS": "16",
    "ADMIT_INTERVAL": "1",
    "OUTBOX_INTERVAL": "1",
    "RATE_LIMIT_ISSUE_IP": "100000/second",
    "RATE_LIMIT_POLL_IP": "100000/second",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class Run:
    """One run's sizes, places and the processes it started (stopped by `cleanup`, whatever happens)."""

    quick: bool
    workers: int
    users: int
    rate: float
    run_time: str
    bare_run_time: str
    db_url: str
    redis_url: str
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flash-sale-")))
    env: dict[str, str] = field(default_factory=dict)
    honcho: Honcho | None = None
    broker: TansuBroker | None = None
    bare: subprocess.Popen[bytes] | None = None
    watch: SellOutWatch | None = None

    cluster: bool = False
    web_port: int = WEB_PORT
    web_concurrency: int = 2  # gunicorn workers (WEB_CONCURRENCY) of the service and of the bare floor alike
    web_threads: int = 8  # threads per gunicorn worker (WEB_THREADS), both alike
    pairs: int = 1  # --redis-cluster: single/cluster pairs in one invocation (0: the cluster run alone)
    replica_url: str = ""  # --replica: DATABASE_REPLICA_URL of the service (db_url is then the primary)
    fair_start: bool = False  # --fair-start: the concert opens with a pre-queue and a verifiable draw
    bare_every: int = BARE_EVERY  # --bare-every: every Nth fan GETs the bare gunicorn beside its requests (1: all)
    arrivals: str = "burst"  # --arrivals: locust's per-second bursts, or a Poisson process at the same rate
    redis_nice: int = REDIS_NICE  # --redis-nice: Redis's CPU priority for the run (bench/flash_sale/priority.py)
    poll_memo: bool = True  # --no-poll-memo: POLL_MEMO=0 (every waiting poll asks Redis)
    opens_at: dt.datetime | None = None

    @property
    def bare_port(self) -> int:
        return self.web_port + 1

    @property
    def redis(self) -> redis.Redis:
        from config.bootstrap import make_redis

        return make_redis(self.redis_url)  # a RedisCluster for redis+cluster:// (--redis-cluster)


def parse(argv: list[str] | None) -> Run:
    """The command line (and BENCH_DATABASE_URL / BENCH_REDIS_URL) as a Run."""
    parser = argparse.ArgumentParser(prog="python -m bench.flash_sale", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 fans, shorter timings (about a minute)")
    parser.add_argument("--users", type=int, help="fans (default 5000, --quick 1000)")
    parser.add_argument("--spawn-rate", type=float, help="fans arriving per second (default 500, --quick 200)")
    parser.add_argument("--run-time", help="upper bound of the sale (default 180s, --quick 45s)")
    parser.add_argument("--workers", type=int, default=1, help="Procfile `worker` processes (honcho -c worker=N)")
    parser.add_argument("--bare-run-time", help="framework-floor run (default 20s, --quick 10s)")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="run the Procfile stack on the Redis Cluster of BENCH_REDIS_CLUSTER_URL (default "
        "redis+cluster://127.0.0.1:7000, tests/support/redis_cluster.sh) right after (or before) the same run on "
        "the single server of BENCH_REDIS_URL; writes flash_sale_cluster.json with the cluster/single ratios",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="--redis-cluster: single/cluster pairs, alternating which goes first (default 1; 0: the cluster alone)",
    )
    parser.add_argument("--port", type=int, default=WEB_PORT, help="the web's port (BENCH_WEB_PORT, default 8181)")
    parser.add_argument(
        "--web-concurrency",
        type=int,
        default=2,
        help="gunicorn worker processes (WEB_CONCURRENCY) of the service and of the bare floor (default 2)",
    )
    parser.add_argument(
        "--web-threads", type=int, default=8, help="threads per gunicorn worker (WEB_THREADS), both alike (default 8)"
    )
    parser.add_argument(
        "--replica",
        action="store_true",
        help="BENCH_DATABASE_URL is a MariaDB primary and BENCH_DATABASE_REPLICA_URL (default: its port + 1) its "
        "replica, started or reused by tests/support/mariadb_pair.sh (BENCH_MARIADB_PAIR_DIR); the service reads "
        "what tolerates lag from the replica (DATABASE_REPLICA_URL)",
    )
    parser.add_argument(
        "--fair-start",
        action="store_true",
        help="the concert has a saleOpensAt: every fan joins the pre-queue over HTTP, the scheduler leader draws at "
        "the opening, admission follows the drawn order; checks the order and verifies the published draw "
        "(docs/verify_fairness.py, python -m models fairness verify); no floors; writes flash_sale_fair.json",
    )
    parser.add_argument(
        "--bare-every",
        type=int,
        default=BARE_EVERY,
        help=f"every Nth fan also GETs the bare gunicorn beside each of its requests (default {BARE_EVERY}); 1: every "
        "fan, so that the bare route takes the same requests at the same moments as the service (the same load)",
    )
    parser.add_argument(
        "--arrivals",
        choices=("burst", "poisson"),
        default="burst",
        help="burst (default): locust starts each second's fans at once; poisson: each fan waits for its own "
        "arrival, a Poisson process at --spawn-rate (the bare first-request floor arrives the same way)",
    )
    parser.add_argument(
        "--redis-nice",
        type=int,
        default=REDIS_NICE,
        help=f"nice value of the local Redis server(s) and their session for the run, put back afterwards (default "
        f"{REDIS_NICE}; 0 leaves them as they are): Redis shares this machine's CPUs with the load generator and "
        "both gunicorns, where in production it has its own (bench/flash_sale/priority.py)",
    )
    parser.add_argument(
        "--no-poll-memo",
        action="store_true",
        help="POLL_MEMO=0 for the service: every waiting poll asks Redis (models/poll_memo.py; default on)",
    )
    args = parser.parse_args(argv)
    if args.bare_every < 1:
        parser.error("--bare-every must be 1 or more")
    cluster_url = os.environ.get("BENCH_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7000")
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_flash")
    return Run(
        quick=args.quick,
        workers=args.workers,
        users=args.users or (1000 if args.quick else 5000),
        rate=args.spawn_rate or (200 if args.quick else 500),
        run_time=args.run_time or ("45s" if args.quick else "180s"),
        bare_run_time=args.bare_run_time or ("10s" if args.quick else "20s"),
        db_url=db_url,
        redis_url=cluster_url if args.redis_cluster else os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"),
        cluster=args.redis_cluster,
        web_port=args.port,
        web_concurrency=args.web_concurrency,
        web_threads=args.web_threads,
        pairs=args.pairs,
        replica_url=replica_of(db_url) if args.replica else "",
        fair_start=args.fair_start,
        bare_every=args.bare_every,
        arrivals=args.arrivals,
        redis_nice=args.redis_nice,
        poll_memo=not args.no_poll_memo,
    )


def parameters(run: Run) -> dict[str, Any]:
    """What the run was, written beside its figures."""
    return {
        "mode": "quick" if run.quick else "full",
        "users": run.users,
        "spawn_rate_per_s": run.rate,
        "run_time_limit": run.run_time,
        "locust": "FastHttpUser, 1 process, -u users -r spawn_rate, each fan once (no respawn)",
        "procfile": f"honcho start -c worker={run.workers} (web, worker x{run.workers}, scheduler, consumer)",
        "web_concurrency": run.web_concurrency,
        "web_threads": run.web_threads,
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
        "bare_run_time": run.bare_run_time,
        "database": "MariaDB primary + replica (DATABASE_REPLICA_URL)" if run.replica_url else "one MariaDB",
        "bare_every": run.bare_every,
        "arrivals": run.arrivals,
        "poll_memo": run.poll_memo,
    }


def physical_floor(run: Run) -> dict[str, Any]:
    """1. Raw Redis and raw DB commit rates on a quiet machine (a fresh database first)."""
    fresh_database(run.db_url, run.env)
    seconds = 2.0 if run.quick else 5.0
    redis_rate = raw_redis_rate(run.redis_url, seconds)
    db_rate, db_facts = raw_db_commit_rate(run.db_url, seconds)
    print(f"floor: raw Redis {redis_rate:,.0f} INCR/s, raw DB {db_rate:,.0f} commits/s", flush=True)
    return {"redis_rate": redis_rate, "db_rate": db_rate, "db_facts": db_facts}


def start_service(run: Run, params: dict[str, Any], t0: float) -> tuple[int, list[int]]:
    """2. The broker and the Procfile's processes; one concert; every fan charged. (concert, schedules)"""
    run.broker = TansuBroker()
    run.broker.start()
    run.env["KAFKA_BOOTSTRAP_SERVERS"] = run.broker.bootstrap
    run.env["PROMETHEUS_MULTIPROC_DIR"] = str(run.tmp / "metrics")
    # the same-server floor: the service's gunicorn also serves bench/bare_app.py at /floor/bare
    procfile = None if run.fair_start else ROOT / "bench" / "flash_sale" / "Procfile"
    run.honcho = Honcho(run.env, run.workers, run.tmp / "honcho.log", run.web_port, procfile)
    api = ApiClient(f"http://127.0.0.1:{run.web_port}/api/v1")
    wait_http(f"http://127.0.0.1:{run.web_port}/api/v1/readyz", 60, run.honcho.proc)
    wait_for_partitions(run.redis, 16)
    if not run.fair_start:
        concert_id, schedule_ids = create_concert(api)
    charge_s = charge_all(run.web_port, run.users, PRICE)
    if run.fair_start:  # created last: the join window starts now
        run.opens_at = fair.now_plus(fair.join_window_s(run.users, run.rate))
        concert_id, schedule_ids = create_concert(api, sale_opens_at=run.opens_at)
        params["sale_opens_at"] = run.opens_at.isoformat()
        params["join_window_s"] = fair.join_window_s(run.users, run.rate)
    params["charge_seconds"] = round(charge_s, 1)
    params["startup_seconds"] = round(time.perf_counter() - t0, 1)
    print(
        f"ready in {params['startup_seconds']} s: concert {concert_id}, schedules {schedule_ids}, "
        f"{run.users} fans charged in {charge_s:.1f} s",
        flush=True,
    )
    return concert_id, schedule_ids


def sale(run: Run, concert_id: int, schedule_ids: list[int]) -> dict[str, Any]:
    """3. The fans (locust) while the sell-out watch reads the database."""
    run.watch = SellOutWatch(run.db_url)
    run.watch.start()
    started = time.time()
    locust_env = {
        **run.env,
        "FLASH_CONCERT_ID": str(concert_id),
        "FLASH_SCHEDULES": ",".join(map(str, schedule_ids)),
        "FLASH_USER_BASE": "1",
        "FLASH_USERS": str(run.users),
        "FLASH_OUTCOMES": str(run.tmp / "outcomes.json"),
        "FLASH_TRACE": str(run.tmp / "trace"),
        **arrival_env(run),
    }
    if run.bare is not None:  # the same-run floor: sampled fans GET /bare beside each of their requests
        locust_env["FLASH_BARE_HOST"] = f"http://127.0.0.1:{run.bare_port}"
        locust_env["FLASH_BARE_EVERY"] = str(run.bare_every)
    if not run.fair_start:  # the same-server floor: other sampled fans GET /floor/bare from the service itself
        locust_env["FLASH_FLOOR_PATH"] = "/floor/bare"
    admissions = None
    if run.fair_start:  # fans wait for the opening on top of the queue
        locust_env["FLASH_MAX_WAIT"] = str(120 + fair.join_window_s(run.users, run.rate))
        admissions = fair.AdmissionWatch(run.redis, concert_id, active_ttl_s=600)
        admissions.start()
    run_time = run.run_time
    if run.fair_start:  # the sale's time limit starts at the opening
        run_time = f"{int(run.run_time.rstrip('s')) + int(fair.join_window_s(run.users, run.rate))}s"
    web_cpu_before, bare_cpu_before = web_cpu_seconds(), web_cpu_seconds(BARE_APP)
    web_delay_before, bare_delay_before = web_run_delay_seconds(), web_run_delay_seconds(BARE_APP)
    cpus = CpuWatch()
    cpus.start()
    rc, seconds, cpu = run_locust(
        f"http://127.0.0.1:{run.web_port}", run.users, run.rate, run_time, run.tmp / "sale", locust_env,
        run.tmp / "locust-sale.log",
    )  # fmt: skip
    web_cpu, bare_cpu = web_cpu_seconds() - web_cpu_before, web_cpu_seconds(BARE_APP) - bare_cpu_before
    web_delay = web_run_delay_seconds() - web_delay_before
    bare_delay = web_run_delay_seconds(BARE_APP) - bare_delay_before
    cpus.done.set()
    cpus.join(timeout=5)
    run.watch.done.set()
    run.watch.join(timeout=5)
    if admissions is not None:
        admissions.done.set()
        admissions.join(timeout=5)
    outcomes: dict[str, int] = {}
    for path in glob.glob(str(run.tmp / "outcomes.json.*")):
        for k, v in json.loads(Path(path).read_text()).items():
            outcomes[k] = outcomes.get(k, 0) + int(v)
    print(f"sale: locust exit {rc} after {seconds:.1f} s; outcomes {outcomes}", flush=True)
    return {"rc": rc, "seconds": seconds, "cpu": cpu, "web_cpu": web_cpu, "bare_cpu": bare_cpu, "cpu_busy": cpus,
            "web_run_delay": web_delay, "bare_run_delay": bare_delay,
            "users": run.users, "rate": run.rate, "started": started, "outcomes": outcomes,
            "endpoints": read_stats(run.tmp / "sale"), "watch": run.watch, "admissions": admissions}  # fmt: skip


def after_sale(run: Run) -> dict[str, Any]:
    """4. Settle, read the server's counters, run the invariant check, stop the Procfile."""
    assert run.honcho is not None
    facts = settle(run.db_url, run.redis, timeout=30 if run.quick else 60)
    server_5xx, seat_cache, latency, polls = server_metrics(run.web_port)
    ok, violations = invariant_check(run.env)
    clean_stop = run.honcho.stop()
    tail = run.honcho.tail()
    run.honcho = None
    return {"facts": facts, "server_5xx": server_5xx, "seat_cache": seat_cache, "latency": latency, "polls": polls,
            "ok": ok, "violations": violations, "procfile_clean_stop": clean_stop, "honcho_tail": tail}  # fmt: skip


def arrival_env(run: Run) -> dict[str, str]:
    """How the locustfile spaces the fans' arrivals (--arrivals)."""
    return {"FLASH_ARRIVALS": run.arrivals, "FLASH_RATE": str(run.rate)}


def bare_floor(run: Run) -> dict[str, Any]:
    """5. The framework floor: the same locust load against a bare Flask app under the same gunicorn config, then
    each fan's first request alone at the same arrival rate (the floor of a join)."""
    if run.bare is None:
        run.bare = gunicorn(BARE_APP, run.env, run.bare_port, "/bare", run.tmp / "bare.log")
    bare_env = {**run.env, "FLASH_MODE": "bare"}
    _, seconds, cpu = run_locust(
        f"http://127.0.0.1:{run.bare_port}", run.users, run.rate, run.bare_run_time, run.tmp / "bare", bare_env,
        run.tmp / "locust-bare.log",
    )  # fmt: skip
    # each fan's first request alone, at the sale's arrival rate: the floor of a join (every fan's first request)
    once_env = {**run.env, "FLASH_MODE": "bare_once", "FLASH_USERS": str(run.users), **arrival_env(run)}
    _, once_seconds, once_cpu = run_locust(
        f"http://127.0.0.1:{run.bare_port}", run.users, run.rate, run.run_time, run.tmp / "bare_once", once_env,
        run.tmp / "locust-bare-once.log",
    )  # fmt: skip
    stop_group(run.bare)
    run.bare = None
    stats = read_stats(run.tmp / "bare")
    once = read_stats(run.tmp / "bare_once")
    return {
        "row": stats.get("/bare") or stats["Aggregated"],
        "seconds": seconds,
        "cpu": cpu,
        "first_request": {
            "row": once.get("/bare (first request)") or once["Aggregated"],
            "seconds": once_seconds,
            "cpu": once_cpu,
        },
    }


def cleanup(run: Run) -> None:
    """Stop whatever is still running, flush Redis, keep locust's CSVs, remove the temporary directory."""
    if run.watch is not None:
        run.watch.done.set()
    if run.honcho is not None:
        if not run.honcho.alive():
            print(f"--- Procfile output (tail) ---\n{run.honcho.tail()}", file=sys.stderr)
        run.honcho.stop()
    if run.bare is not None:
        stop_group(run.bare)
    if run.broker is not None:
        run.broker.close()
    with contextlib.suppress(Exception):
        run.redis.flushdb()
    keep = ROOT / "bench" / "results" / "locust"
    for name in ("sale", "bare", "bare_once"):
        for kind in ("stats", "failures", "stats_history"):
            src = run.tmp / f"{name}_{kind}.csv"
            if src.exists():
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, keep / f"flash_{name}_{kind}.csv")
    log = run.tmp / "honcho.log"  # the service's own lines (gunicorn's errors, worker restarts)
    if log.exists():
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "flash_honcho_tail.log").write_bytes(log.read_bytes()[-200_000:])
    if os.environ.get("FLASH_KEEP_TMP"):
        print(f"kept {run.tmp}", file=sys.stderr)
    else:
        shutil.rmtree(run.tmp, ignore_errors=True)


def execute_fair(run: Run, params: dict[str, Any], t0: float) -> dict[str, Any]:
    """--fair-start: the service, the sale through the pre-queue and the draw, the checks, the verdicts."""
    fresh_database(run.db_url, run.env)
    concert_id, schedule_ids = start_service(run, params, t0)
    sold = sale(run, concert_id, schedule_ids)
    assert run.honcho is not None and run.opens_at is not None
    verified = fair.verify(f"http://127.0.0.1:{run.web_port}/api/v1", concert_id, run.env, run.tmp)
    draw = fair.draw_line(run.tmp / "honcho.log", concert_id)
    after = after_sale(run)
    fair_figures = fair.fair_result(
        opens_at=run.opens_at,
        users=run.users,
        outcomes=sold["outcomes"],
        watch=sold["admissions"],
        verified=verified,
        draw=draw,
    )
    return {
        "fair_start": fair_figures,
        "outcomes": dict(sorted(sold["outcomes"].items())),
        "sale_seconds": round(sold["seconds"], 1),
        "seats_sold": after["facts"]["seats_by_status"].get("RESERVED", 0),
        "seats_total": SEATS_TOTAL,
        "check": fair_check(after, fair_figures),
    }


def fair_check(after: dict[str, Any], fair_figures: dict[str, Any]) -> dict[str, Any]:
    """The usual after-sale checks plus the fair start's own verdict."""
    from bench.flash_sale.report import _check

    check = _check(after)
    check["fair_start_ok"] = fair_figures["ok"]
    check["ok"] = bool(check["ok"] and fair_figures["ok"])
    return check


def execute(run: Run, params: dict[str, Any], t0: float) -> dict[str, Any]:
    """The five steps in order; the result's figures."""
    if run.fair_start:
        return execute_fair(run, params, t0)
    floors = physical_floor(run)
    concert_id, schedule_ids = start_service(run, params, t0)
    # the bare app's gunicorn (same config) serves beside the service through the sale: the same-run floor
    run.bare = gunicorn(BARE_APP, run.env, run.bare_port, "/bare", run.tmp / "bare.log")
    sold = sale(run, concert_id, schedule_ids)
    after = after_sale(run)
    bare = bare_floor(run)
    result = sale_result(run.tmp, sold, after, bare, floors)
    if not result["check"]["ok"]:
        print(f"--- Procfile output (tail) ---\n{after['honcho_tail']}", file=sys.stderr)
    return result


def one_run(run: Run) -> dict[str, Any]:
    """Flush Redis, run the five steps, stop everything; the run's result (Interrupted propagates)."""
    t0 = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    run.redis.flushdb()
    run.env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "PORT", "WEB_THREADS")}
    run.env.update(SERVICE_ENV, PATH=f"{BIN}{os.pathsep}{run.env.get('PATH', '')}", DATABASE_URL=run.db_url)
    run.env.update(WEB_CONCURRENCY=str(run.web_concurrency), WEB_THREADS=str(run.web_threads))
    run.env["REDIS_URL"] = run.redis_url
    run.env["POLL_MEMO"] = "1" if run.poll_memo else "0"
    if run.replica_url:
        start_pair(run.db_url, run.replica_url)
        run.env["DATABASE_REPLICA_URL"] = run.replica_url
    selects_before = replica_selects(run.replica_url) if run.replica_url else 0
    result: dict[str, Any] = {"parameters": parameters(run)}
    pids = redis_server_pids(run.redis) if run.redis_nice else []
    raised = [r for pid in pids if (r := raise_priority(pid, run.redis_nice))]
    result["parameters"]["redis_nice"] = run.redis_nice if raised else 0  # 0: left as it was (or not permitted)
    try:
        result.update(execute(run, result["parameters"], t0))
    finally:
        cleanup(run)
        for each in raised:
            restore(each)
    if run.replica_url:  # the replica did serve reads (the SELECTs it ran over the run, startup included)
        result["replica_selects"] = replica_selects(run.replica_url) - selects_before
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["machine_load"] = {
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    result["parameters"]["redis"] = "cluster 3+3" if run.cluster else "single server"
    # DATABASE_REPLICA_URL passes through the environment to the Procfile stack
    result["parameters"]["database"] = "primary + replica" if run.env.get("DATABASE_REPLICA_URL") else "one server"
    return result


def paired_runs(run: Run) -> list[Run]:
    """--redis-cluster --pairs N: N single/cluster pairs; odd pairs start with the cluster (order effects cancel)."""
    single_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
    runs = []
    for i in range(run.pairs):
        for cluster in (False, True) if i % 2 == 0 else (True, False):
            runs.append(
                dataclasses.replace(
                    run, cluster=cluster, redis_url=run.redis_url if cluster else single_url, tmp=_tmp(), env={}
                )
            )
    return runs


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="flash-sale-"))


def main(argv: list[str] | None = None) -> int:
    run = parse(argv)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C also when started with SIGINT ignored
    t0 = time.perf_counter()
    try:
        if not run.cluster or run.pairs <= 0:
            result = one_run(run)
            name = "flash_sale_fair" if run.fair_start else "flash_sale_cluster" if run.cluster else "flash_sale"
            written = write(name, result)
            if run.fair_start:
                fair.print_fair(result["fair_start"])
                print(f"sale: {result['seats_sold']}/{result['seats_total']} seats sold; check {result['check']}")
            else:
                print_table(result)
            print(f"wrote {written.relative_to(ROOT)} in {result['total_seconds']} s")
            return 0 if result["check"]["ok"] else 1
        results = []
        for n, each in enumerate(paired_runs(run), 1):
            print(f"=== run {n}/{2 * run.pairs}: {'Redis Cluster 3+3' if each.cluster else 'one Redis server'}")
            results.append(one_run(each))
            print_table(results[-1])
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({str(exc) or 'Ctrl-C'}): stopping everything", file=sys.stderr)
        return 130
    comparison = compare_redis(results)
    comparison["total_seconds"] = round(time.perf_counter() - t0, 1)
    written = write("flash_sale_cluster" + ("_replica" if run.replica_url else ""), comparison)
    print_comparison(comparison)
    print(f"wrote {written.relative_to(ROOT)} in {comparison['total_seconds']} s")
    return 0 if comparison["all_clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
