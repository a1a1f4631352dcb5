"""Seat-hold contention: four strategies on the same skewed workload, measured in the same run.

    .venv/bin/python -m bench.contention_bench [--attempts 2000 --seats 100 --clients 32]

Workload: `--attempts` hold attempts (distinct users) over `--seats` seats of one schedule; half of
them (`--hot-share`) land on `--hot-seats` hot seats, the rest on the others, every seat at least
once, shuffled with a fixed seed. `--clients` threads run it closed-loop (each waits for the
outcome of its attempt before the next). Fresh schema and seed before each strategy.

  (a) pipeline  the partitioned pipeline: `--workers` `python -m workers run` processes; a client
                checks the quick-refusal mark, then as POST /reservations with `Prefer: wait` claims
                the seat or waits for the end of its queued first hold (models.quick_refusal.claim_or_follow),
                enqueues (job record + message + wake-up in one round trip) and waits (JobStore.wait);
                run twice: batched (WORKER_BATCH=`--batch`) and one message at a time
                (WORKER_BATCH=1, "a1"), to show what batching buys side by side
  (b') redis+edge  (b) behind the same quick-refusal check (models/quick_refusal.py) as (a)
  (b) redis     a Redis lock per seat (SET NX PX, spin, compare-and-delete) around models.reservations.hold_seat
  (c) for_update  SELECT ... FOR UPDATE the seat, UPDATE it, INSERT the reservation, COMMIT (raw pymysql)
  (d) optimistic  models.reservations.hold_seat directly (its compare-and-set), retried on ConcurrentUpdate

Reported per strategy: holds/s (attempts completed per second), client-side p50/p99 per attempt,
successes (must equal the seat count), oversell (live reservations beyond one per seat, must be 0),
models.check.violations(), and the deltas of InnoDB row lock waits / lock time / deadlocks
(server-wide counters: anything else running on this MariaDB adds to them).

Environment: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_contention, created if
missing), BENCH_REDIS_URL (default redis://127.0.0.1:6379/6, emptied before each strategy and at
the end). Writes bench/results/contention.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import redis

from bench.common import connect, create_database, run_threads_span, summary_ms, write
from bench.pipeline_bench import cpu_seconds, fresh_data, send_hold
from config.bootstrap import Services, bootstrap
from config.settings import Settings
from models import check, quick_refusal
from models import reservations as domain
from models.db import db
from models.errors import ConcurrentUpdate, SeatNotAvailable
from models.redis_support import open_kept_connection, scripts_in_one_round_trip
from tests.support.procs import Cluster, wait_for_leases
from workers.broker import send
from workers.jobs import SUCCEEDED, TERMINAL, JobStore
from workers.reservations import hold_seat

HELD, TAKEN, ERROR = "held", "taken", "error"
LOCK_TTL_MS = 3000
OPTIMISTIC_TRIES = 3

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Attempt = tuple[int, int, int]  # (user id, seat id, schedule id)
HoldFn = Callable[[int, int, int, Any], str]  # (user, seat, schedule, per-thread state) -> outcome


def workload(seats: list[tuple[int, int]], attempts: int, hot_seats: int, hot_share: float, seed: int) -> list[Attempt]:
    """Skewed attempts: `hot_share` of them on the first `hot_seats` seats, every seat at least once."""
    rng = random.Random(seed)
    hot, cold = seats[:hot_seats], seats[hot_seats:]
    n_hot = max(len(hot), round(attempts * hot_share))
    n_cold = max(len(cold), attempts - n_hot)
    picks = hot + cold + [rng.choice(hot) for _ in range(n_hot - len(hot))]
    picks += [rng.choice(cold) for _ in range(n_cold - len(cold))] if cold else []
    rng.shuffle(picks)
    return [(i + 1, seat_id, schedule_id) for i, (seat_id, schedule_id) in enumerate(picks)]


def lock_status(url: str) -> dict[str, int | None]:
    """InnoDB row lock waits, row lock time (ms) and deadlocks (None if the server has no counter)."""
    names = ("Innodb_row_lock_waits", "Innodb_row_lock_time", "Innodb_deadlocks")
    with connect(url, None) as conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN (%s, %s, %s)", names)
        found = {str(k): int(v) for k, v in cur.fetchall()}
    return {n: found.get(n) for n in names}


def closed_loop(
    plan: list[Attempt],
    clients: int,
    hold: HoldFn,
    setup: Callable[[], Any],
    teardown: Any,
    *,
    processes: int = 1,
    prepare: Callable[[int], None] | None = None,
) -> dict:
    """Run `plan` on `clients` threads, each attempt after the previous one's outcome.

    Each thread opens its connections (`setup`) before the common start, so connection set-up
    is outside the measured time for every strategy alike. With `processes` > 1 the clients are
    split over that many forked client processes (client k in process k % processes), as a web
    tier runs several processes: one Python process cannot keep hundreds of threads busy (with
    256 threads in one process, an edge check of one Redis round trip waited up to 4.9 s for the
    GIL, bench/contention_map.py at 12:23 UTC). `prepare(processes)` runs first in each process
    (after the fork), to open what that process shares between its threads (e.g. its pool).
    """
    if processes <= 1:
        if prepare is not None:
            prepare(1)
        part = _client_part(plan, clients, range(clients), hold, setup, teardown, None)
        return _closed_result([part])
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(processes + 1)
    results = context.Queue()
    if db.obj is not None:  # no connection may be inherited by two processes
        if hasattr(db.obj, "close_all"):  # a pool (MySQL): every idle connection
            db.close_all()
        else:  # one connection per thread (SQLite in the unit tier): this thread's
            db.close()
    children = []
    for i in range(processes):
        child = context.Process(
            target=_client_process,
            args=(
                plan,
                clients,
                range(i, clients, processes),
                hold,
                setup,
                teardown,
                prepare,
                processes,
                ready,
                results,
            ),
            daemon=True,
        )
        child.start()
        children.append(child)
    with contextlib.suppress(threading.BrokenBarrierError):  # a process that failed to set up says why below
        ready.wait(timeout=120)  # every process has opened its connections
    parts = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(timeout=30)
    failed = [p["error"] for p in parts if p.get("error")]
    if failed:
        raise RuntimeError(f"a client process failed: {failed[0]}")
    return _closed_result(parts)


def _client_process(
    plan: list[Attempt],
    clients: int,
    mine: range,
    hold: HoldFn,
    setup: Callable[[], Any],
    teardown: Any,
    prepare: Callable[[int], None] | None,
    processes: int,
    ready: Any,
    results: Any,
) -> None:
    """One forked client process of closed_loop: its share of the clients, its result on `results`."""
    try:
        if prepare is not None:
            prepare(processes)
        results.put(_client_part(plan, clients, mine, hold, setup, teardown, ready))
    except BaseException as exc:  # reported to the parent, which raises it
        results.put({"error": repr(exc)})
        with contextlib.suppress(Exception):
            ready.abort()


def _client_part(
    plan: list[Attempt],
    clients: int,
    mine: range,
    hold: HoldFn,
    setup: Callable[[], Any],
    teardown: Any,
    ready: Any,
) -> dict:
    """Run clients `mine` (threads) of `plan`; `ready` (a process barrier) is passed once all are set up."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    guard = threading.Lock()
    states: dict[int, Any] = {}
    ks = list(mine)

    def client(j: int) -> None:
        k = ks[j]
        own: list[float] = []
        seen: Counter[str] = Counter()
        try:
            for user_id, seat_id, schedule_id in plan[k::clients]:
                started = time.perf_counter()
                try:
                    seen[hold(user_id, seat_id, schedule_id, states[k])] += 1
                except Exception as exc:  # a timeout or refused connection: the client saw an error
                    seen[ERROR] += 1
                    seen[f"error:{type(exc).__name__}"] += 1
                own.append(time.perf_counter() - started)
        finally:
            teardown(states[k])
            with guard:
                latencies.extend(own)
                outcomes.update(seen)

    def before(j: int) -> None:
        states[ks[j]] = setup()

    cpu = time.process_time()
    start, end = run_threads_span(len(ks), client, before=before, ready=None if ready is None else ready.wait)
    cpu = time.process_time() - cpu  # this client process's CPU (set-up included: small beside the run)
    return {"latencies": latencies, "outcomes": dict(outcomes), "start": start, "end": end, "cpu_s": cpu}


def _closed_result(parts: list[dict]) -> dict:
    """The closed loop's figures from its processes' parts (perf_counter is one clock for all of them)."""
    latencies = [x for p in parts for x in p["latencies"]]
    outcomes: Counter[str] = Counter()
    for p in parts:
        outcomes.update(p["outcomes"])
    seconds = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    return {
        "attempts": len(latencies),
        "seconds": round(seconds, 3),
        "holds_per_second": round(len(latencies) / seconds, 1),
        "latency": summary_ms(latencies),
        "outcomes": dict(outcomes),
        "client_processes": len(parts),
        # CPU seconds the client processes used per second of the run (2.0 = both CPUs of this machine)
        "client_cpu_per_s": round(sum(p["cpu_s"] for p in parts) / seconds, 2),
    }


def _open_db(services: Services) -> Callable[[], None]:
    """A per-thread setup: a pooled database connection and a Redis connection, opened now."""

    def setup() -> None:
        db.connect(reuse_if_open=True)
        services.redis.ping()

    return setup


def _close_db(_: Any) -> None:
    db.close()


def _domain_hold(user_id: int, seat_id: int, schedule_id: int, settings: Settings) -> str:
    """models.reservations.hold_seat once, with a fresh job id (first attempt: redelivered=False)."""
    try:
        domain.hold_seat(
            user_id=user_id,
            schedule_id=schedule_id,
            seat_id=seat_id,
            job_id=uuid.uuid4().hex,
            hold_ttl=settings.hold_ttl,
            max_holds=settings.max_holds_per_user,
            redelivered=False,
        )
        return HELD
    except SeatNotAvailable:
        return TAKEN


def pipeline_hold(services: Services) -> HoldFn:
    """(a)'s attempt as POST /reservations with `Prefer: wait=60` makes it: the edge check (refused on a
    taken mark), then the claim of the seat or the queued first hold's end (claim_or_follow), then
    the job and its outcome."""
    store = JobStore(services.redis)

    def hold(user_id: int, seat_id: int, schedule_id: int, _: Any) -> str:
        mark = edge_mark(services.redis, schedule_id, seat_id)
        if quick_refusal.refusal_of(mark) is not None:
            return TAKEN
        job_id = uuid.uuid4().hex
        refusal = quick_refusal.claim_or_follow(
            services.redis, store, schedule_id=schedule_id, seat_id=seat_id, job_id=job_id, mark=mark, wait=60
        )
        if refusal is not None:
            return TAKEN
        send_hold(services, store, user_id, seat_id, schedule_id, job_id)
        done = store.wait(job_id, 60, fresh=True)
        if done is None or done.status not in TERMINAL:
            return ERROR
        if done.status == SUCCEEDED:
            return HELD
        return TAKEN if (done.error or {}).get("code") == SeatNotAvailable.code else ERROR

    return hold


def run_pipeline(
    services: Services,
    plan: list[Attempt],
    clients: int,
    *,
    processes: int = 1,
    hold: HoldFn | None = None,
    teardown: Callable[[Any], None] = lambda _: None,
) -> dict:
    """(a) Enqueue like POST /reservations (record + message + wake-up in one script) and wait for the outcome.

    `hold` replaces pipeline_hold's attempt and `teardown` runs on each client thread at its end
    (bench/contention_trace.py stamps each stage of the attempts and spills them from there).
    """
    threads = -(-clients // processes)

    def prepare(_: int) -> None:  # each process opens its Redis connections before the start, as (c) its pool
        warm_pool(services.redis, threads)
        warm_pool(services.broker.client, threads)  # type: ignore[attr-defined]

    def setup() -> None:  # each thread's own connections (the edge check's and the send's), as (c)'s pool
        open_kept_connection(services.redis)
        open_kept_connection(services.broker.client)  # type: ignore[attr-defined]

    attempt = pipeline_hold(services) if hold is None else hold
    return closed_loop(plan, clients, attempt, setup, teardown, processes=processes, prepare=prepare)


@contextlib.contextmanager
def pipeline_workers(services: Services, db_url: str, redis_url: str, *, workers: int, batch: int) -> Iterator[Cluster]:
    """`workers` `python -m workers run` processes with WORKER_BATCH=`batch`, holding an even share of
    the partitions and warmed up (warm_up_workers) before the caller measures; stopped on exit."""
    partitions = services.settings.partitions
    cluster = Cluster(db_url, redis_url, {"PARTITIONS": str(partitions), "WORKER_BATCH": str(batch)})
    try:
        for _ in range(workers):
            cluster.start_worker()
        wait_for_leases(services.redis, cluster, partitions=partitions, balanced=True)
        warm_up_workers(services)
        yield cluster
    finally:
        cluster.stop()


def with_worker_cpu(cluster: Cluster, run: Callable[[], dict]) -> dict:
    """run(), with the CPU seconds the pipeline's worker processes used per second of it ("worker_cpu_per_s")."""
    pids = [p.pid for p in cluster.workers()]
    before = cpu_seconds(pids)
    result = run()
    result["worker_cpu_per_s"] = round((cpu_seconds(pids) - before) / result["seconds"], 2)
    return result


def wide_services(db_url: str, redis_url: str, *, partitions: int, pool: int | None = None) -> Services:
    """The services of a client process standing in for a whole web tier (bench.contention_map, the trace).

    Each waiting attempt holds a Redis connection (BLPOP on its job), so the Redis pool must exceed
    the largest level; the database pool is `pool` connections (as a web tier's), if given.
    """
    database_url = db_url if pool is None else f"{db_url}{'&' if '?' in db_url else '?'}max_connections={pool}"
    services = bootstrap(Settings().with_(database_url=database_url, redis_url=redis_url, partitions=partitions))
    wide = redis.BlockingConnectionPool.from_url(redis_url, max_connections=2048, timeout=30, decode_responses=True)
    return dataclasses.replace(services, redis=redis.Redis(connection_pool=wide))


def bench_urls() -> tuple[str, str]:
    """BENCH_DATABASE_URL and BENCH_REDIS_URL, or their defaults (the database created if missing)."""
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_contention")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    create_database(db_url)
    return db_url, redis_url


def warm_pool(client: redis.Redis, n: int) -> None:
    """Open `n` connections of a client's pool now (then hand them back), as a running web tier has them."""
    pool = client.connection_pool
    held = [pool.get_connection("PING") for _ in range(n)]
    for conn in held:
        conn.connect()
    for conn in held:
        pool.release(conn)


def edge_mark(client: redis.Redis, schedule_id: int, seat_id: int) -> Any:
    """The quick-refusal mark POST /reservations reads in its queue-token round trip (here alone)."""
    (reply,) = scripts_in_one_round_trip(
        client, [quick_refusal.check_call(client, schedule_id=schedule_id, seat_id=seat_id)]
    )
    return reply


def edge_refuses(client: redis.Redis, schedule_id: int, seat_id: int) -> bool:
    """The quick-refusal check POST /reservations makes in its queue-token round trip (here alone)."""
    return quick_refusal.refusal_of(edge_mark(client, schedule_id, seat_id)) is not None


def warm_up_workers(services: Services) -> None:
    """One job per partition on a seat that does not exist (fails NOT_FOUND, writes nothing).

    So every consumer has opened its connections before the measured run, as the other
    strategies' clients have.
    """
    store = JobStore(services.redis)
    ids = []
    for p in range(services.settings.partitions):
        job = store.create(job_type="RESERVATION", user_id=10**9 + p)
        send(
            services.broker,
            hold_seat,
            route_seat=p,
            partitions=services.settings.partitions,
            job_id=job.job_id,
            user_id=10**9 + p,
            schedule_id=0,
            seat_id=0,
            enqueued_ms=int(time.time() * 1000),
        )
        ids.append(job.job_id)
    for job_id in ids:
        done = store.wait(job_id, 30)
        if done is None or done.status not in TERMINAL:
            raise SystemExit(f"warm-up job {job_id} did not finish")


def run_redis_lock(services: Services, plan: list[Attempt], clients: int) -> dict:
    """(b) A Redis lock per seat (SET NX PX, spin) around the domain's hold transaction."""
    client: redis.Redis = services.redis
    unlock = client.register_script(_UNLOCK)
    spins = Counter[str]()

    def hold(user_id: int, seat_id: int, schedule_id: int, _: Any) -> str:
        key, token = f"lock:seat:{seat_id}", uuid.uuid4().hex
        waited = 0
        while not client.set(key, token, nx=True, px=LOCK_TTL_MS):
            waited += 1
            time.sleep(0.001)
        try:
            return _domain_hold(user_id, seat_id, schedule_id, services.settings)
        finally:
            unlock(keys=[key], args=[token])
            if waited:
                spins["spins"] += waited
                spins["contended_acquires"] += 1

    result = closed_loop(plan, clients, hold, _open_db(services), _close_db)
    result["lock_spins"] = dict(spins)
    return result


def redis_lock_edge_hold(services: Services) -> HoldFn:
    """(b')'s attempt: the edge check, then (b)'s lock, marking what it sees as (a)'s workers do."""
    client: redis.Redis = services.redis
    unlock = client.register_script(_UNLOCK)

    def hold(user_id: int, seat_id: int, schedule_id: int, _: Any) -> str:
        if edge_refuses(client, schedule_id, seat_id):
            return TAKEN
        key, token = f"lock:seat:{seat_id}", uuid.uuid4().hex
        while not client.set(key, token, nx=True, px=LOCK_TTL_MS):
            time.sleep(0.001)
        try:
            read_at = quick_refusal.now_ms()
            with db.connection_context():  # per attempt: a web tier's pool is smaller than its clients
                outcome = _domain_hold(user_id, seat_id, schedule_id, services.settings)
            refusal = f"seat {seat_id} is held"
            quick_refusal.mark(client, schedule_id=schedule_id, seat_id=seat_id, refusal=refusal, read_at_ms=read_at)
            return outcome
        finally:
            unlock(keys=[key], args=[token])

    return hold


def run_redis_lock_edge(services: Services, plan: list[Attempt], clients: int, *, processes: int = 1) -> dict:
    """(b') (b) behind the same quick-refusal check as (a), marking what it sees as (a)'s workers do."""
    threads = -(-clients // processes)
    return closed_loop(
        plan,
        clients,
        redis_lock_edge_hold(services),
        lambda: None,
        lambda _: None,
        processes=processes,
        prepare=lambda _: warm_pool(services.redis, threads),
    )


def for_update_hold(conn: Any, user_id: int, seat_id: int, schedule_id: int) -> str:
    """(c)'s attempt on one connection: SELECT ... FOR UPDATE the seat, UPDATE + INSERT, COMMIT."""
    with conn.cursor() as cur:
        conn.begin()
        cur.execute("SELECT status, version, price FROM seats WHERE id = %s FOR UPDATE", (seat_id,))
        status, version, price = cur.fetchone()
        if status != "AVAILABLE":
            conn.rollback()
            return TAKEN
        cur.execute(
            "UPDATE seats SET status = 'HELD', version = version + 1 WHERE id = %s AND version = %s",
            (seat_id, version),
        )
        cur.execute(
            "INSERT INTO reservations (user_id, seat_id, schedule_id, price, status, expires_at, version, "
            "live_seat_id, hold_slot, extensions_left, job_id, created_at, updated_at) VALUES (%s, %s, %s, %s, 'HELD', "
            "UTC_TIMESTAMP(6) + INTERVAL 300 SECOND, 0, %s, 1, 2, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
            (user_id, seat_id, schedule_id, price, seat_id, uuid.uuid4().hex),
        )
        conn.commit()
        return HELD


def run_for_update(url: str, plan: list[Attempt], clients: int) -> dict:
    """(c) SELECT ... FOR UPDATE the seat, then UPDATE + INSERT in the same transaction."""
    name = urlparse(url).path.lstrip("/")

    def hold(user_id: int, seat_id: int, schedule_id: int, conn: Any) -> str:
        return for_update_hold(conn, user_id, seat_id, schedule_id)

    return closed_loop(plan, clients, hold, lambda: connect(url, name), lambda conn: conn.close())


def run_optimistic(services: Services, plan: list[Attempt], clients: int) -> dict:
    """(d) The domain's compare-and-set directly, retried up to OPTIMISTIC_TRIES times on ConcurrentUpdate."""
    retries = Counter[str]()

    def hold(user_id: int, seat_id: int, schedule_id: int, _: Any) -> str:
        for attempt in range(OPTIMISTIC_TRIES):
            try:
                return _domain_hold(user_id, seat_id, schedule_id, services.settings)
            except ConcurrentUpdate:
                retries["retries"] += 1
                if attempt == OPTIMISTIC_TRIES - 1:
                    return ERROR
        return ERROR

    result = closed_loop(plan, clients, hold, _open_db(services), _close_db)
    result["concurrent_update_retries"] = retries["retries"]
    return result


def verify(seat_count: int) -> dict[str, Any]:
    """Live reservations, oversell (live beyond one per seat) and the invariant checker, after a run."""
    live = db.execute_sql("SELECT COUNT(*) FROM reservations WHERE status IN ('HELD','CONFIRMED')").fetchone()[0]
    oversell = db.execute_sql(
        "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM reservations "
        "WHERE status IN ('HELD','CONFIRMED') GROUP BY seat_id) AS per_seat"
    ).fetchone()[0]
    held_seats = db.execute_sql("SELECT COUNT(*) FROM seats WHERE status = 'HELD'").fetchone()[0]
    violations = check.violations()
    db.close()
    return {
        "live_reservations": int(live),
        "held_seats": int(held_seats),
        "oversell": int(oversell),
        "violations": violations,
        "ok": int(live) == seat_count and int(held_seats) == seat_count and int(oversell) == 0 and not violations,
    }


def _delta(before: dict[str, int | None], after: dict[str, int | None]) -> dict[str, int | None]:
    return {k: (None if before[k] is None or after[k] is None else after[k] - before[k]) for k in before}  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--seats", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--hot-seats", type=int, default=10)
    parser.add_argument("--hot-share", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32, help="WORKER_BATCH of strategy (a)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    db_url, redis_url = bench_urls()
    settings = Settings().with_(database_url=db_url, redis_url=redis_url, partitions=args.partitions)
    services = bootstrap(settings)
    results: dict[str, dict[str, Any]] = {}

    def measure(name: str, run: Callable[[list[Attempt]], dict], before_run: Callable[[], None] = lambda: None) -> None:
        services.redis.flushdb()
        seats = fresh_data(args.seats)
        db.close()
        plan = workload(seats, args.attempts, args.hot_seats, args.hot_share, args.seed)
        before_run()
        locks_before = lock_status(db_url)
        result = run(plan)
        result["db_locks"] = _delta(locks_before, lock_status(db_url))
        result["check"] = verify(args.seats)
        results[name] = result
        print(f"  {name}: {result['holds_per_second']:,.1f} holds/s, outcomes {result['outcomes']}", flush=True)

    def pipeline(name: str, batch: int) -> None:
        workers = contextlib.ExitStack()

        def start_workers() -> None:
            cluster.append(
                workers.enter_context(pipeline_workers(services, db_url, redis_url, workers=args.workers, batch=batch))
            )

        cluster: list[Cluster] = []
        with workers:
            measure(
                name,
                lambda plan: with_worker_cpu(cluster[0], lambda: run_pipeline(services, plan, args.clients)),
                start_workers,
            )

    pipeline("a_pipeline", args.batch)
    pipeline("a1_pipeline_unbatched", 1)
    try:
        measure("b_redis_lock", lambda plan: run_redis_lock(services, plan, args.clients))
        measure("b2_redis_lock_edge", lambda plan: run_redis_lock_edge(services, plan, args.clients))
        measure("c_for_update", lambda plan: run_for_update(db_url, plan, args.clients))
        measure("d_optimistic", lambda plan: run_optimistic(services, plan, args.clients))
    finally:
        services.redis.flushdb()

    a, b, a1 = results["a_pipeline"], results["b_redis_lock"], results["a1_pipeline_unbatched"]
    batching_gain = a["holds_per_second"] / a1["holds_per_second"]
    throughput_ratio = a["holds_per_second"] / b["holds_per_second"]
    p99_ratio = a["latency"]["p99_ms"] / b["latency"]["p99_ms"]
    target_met = throughput_ratio >= 1.5 and p99_ratio < 1.0

    print(
        f"\n{args.attempts} hold attempts over {args.seats} seats ({args.hot_share:.0%} on {args.hot_seats} hot "
        f"seats), {args.clients} closed-loop clients; pipeline: {args.workers} workers x {args.partitions} partitions"
    )
    header = f"{'strategy':20}{'holds/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'held':>6}{'taken':>7}{'errors':>7}"
    header += f"{'oversell':>9}{'viol.':>6}{'lock waits':>11}{'lock ms':>9}{'deadlocks':>10}"
    print(header)
    for name, r in results.items():
        o, locks = r["outcomes"], r["db_locks"]
        deadlocks = "n/a" if locks["Innodb_deadlocks"] is None else locks["Innodb_deadlocks"]
        print(
            f"{name:20}{r['holds_per_second']:>9,.1f}{r['latency']['p50_ms']:>9.1f}{r['latency']['p99_ms']:>9.1f}"
            f"{o.get(HELD, 0):>6}{o.get(TAKEN, 0):>7}{o.get(ERROR, 0):>7}{r['check']['oversell']:>9}"
            f"{len(r['check']['violations']):>6}{locks['Innodb_row_lock_waits']:>11}"
            f"{locks['Innodb_row_lock_time']:>9}{deadlocks!s:>10}"
        )
    print(
        f"(a)/(b): throughput x{throughput_ratio:.2f}, p99 x{p99_ratio:.2f}; target (>= 1.5x throughput and a lower "
        f"p99): {'met' if target_met else 'NOT met'}"
    )
    print(f"batching (WORKER_BATCH={args.batch}) vs one message at a time: throughput x{batching_gain:.2f}")
    bad = [n for n, r in results.items() if not r["check"]["ok"] or r["outcomes"].get(HELD, 0) != args.seats]
    print("correctness: " + (f"FAILED for {', '.join(bad)}" if bad else f"every strategy held exactly {args.seats}"))

    path = write(
        "contention",
        {
            "parameters": vars(args),
            "strategies": results,
            "a_over_b": {
                "throughput": round(throughput_ratio, 3),
                "p99": round(p99_ratio, 3),
                "target": ">= 1.5x throughput and lower p99",
                "target_met": target_met,
            },
            "batched_over_unbatched": {"throughput": round(batching_gain, 3)},
            "correct": not bad,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
