"""The contention regime map: the same skewed hold workload at 32, 256 and 1,024 attempts in flight,
then offered at fixed arrival rates (open loop).

    .venv/bin/python -m bench.contention_map [--levels 32,256,1024 --attempts 2000 --pool 64
                                              --unpooled-budget 90 --rates 500,1000,2000 --duration 3]

Closed loop (each of `level` threads waits for its attempt's outcome), per level and strategy:
  a_pipeline     quick-refusal check, then the partitioned pipeline (bench.contention_bench)
  b2_redis_edge  the same check, then a Redis lock per seat around the domain's hold
  c_for_update   SELECT ... FOR UPDATE through a pool of `--pool` connections, as a web tier has
                 (waits up to 10 s for a connection; a longer wait is an error)
  c2_unpooled    SELECT ... FOR UPDATE, each client on its own connection, up to
                 `--unpooled-budget` connections: a client that finds the budget spent gets
                 "Too many connections" (error 1040) for that attempt and tries again on its next.
                 The budget stands in for MariaDB's max_connections (151 by default): this server
                 is shared with other agents' tests, so this bench never opens more than the budget.
Open loop (`--rates`, attempts/s for `--duration` s each, arrivals evenly spaced, at most
`--max-in-flight` at once): latency counts from the scheduled arrival, so a strategy that falls
behind shows its queue in its p99 (no coordinated omission); strategies a, b', c as above.
With `--repeat N`, each level runs N interleaved rounds (every strategy once per round) and the
round with the (lower) median attempts/s is reported per strategy, every round's figures beside it.
Reported: attempts/s, p50/p99, errors, peak connections to this benchmark's database
(information_schema.PROCESSLIST, sampled every 20 ms) and to the whole server (Threads_connected,
other users included), InnoDB row lock waits, oversell and the checker, the load average, and
the CPU the client processes used per second of the run (2.0 = both CPUs of this machine) and,
for (a), its worker processes': what the bench's own clients cost beside the strategy.
Writes bench/results/contention_map.json.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from bench import contention_bench as cb
from bench.common import connect, summary_ms, write
from bench.pipeline_bench import fresh_data
from config.bootstrap import Services
from models.db import db


class PeakConnections:
    """Sample the server's Threads_connected and this database's connections every 20 ms; keep the peaks."""

    def __init__(self, url: str) -> None:
        self.url, self.peak, self.own, self._stop = url, 0, 0, threading.Event()
        self._db = urlparse(url).path.lstrip("/")
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
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (self._db,))
                own = cur.fetchone()
                self.own = max(self.own, int(own[0]) if own else 0)
                time.sleep(0.02)


def for_update_pooled(url: str, plan: list[cb.Attempt], clients: int, pool_size: int, processes: int = 1) -> dict:
    """(c) through a pool of `pool_size` connections shared by `clients` threads (split evenly
    over the client processes, as a web tier's processes each have their own pool)."""
    name = urlparse(url).path.lstrip("/")
    pool: queue.Queue[Any] = queue.Queue()

    def prepare(processes: int) -> None:  # in each client process: its part of the pool
        for _ in range(max(1, pool_size // processes)):  # 64 over 8 processes: 8 each
            pool.put(connect(url, name))

    try:
        return cb.closed_loop(
            plan, clients, pooled_hold(pool), lambda: None, lambda _: None, processes=processes, prepare=prepare
        )
    finally:
        while not pool.empty():
            pool.get().close()


def pooled_hold(pool: queue.Queue[Any]) -> cb.HoldFn:
    """(c)'s attempt on a connection of `pool` (a wait over 10 s for one, or any failure, is an error)."""

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

    return hold


class TooManyConnections(Exception):
    """The connection budget (standing in for max_connections) is spent: MariaDB's error 1040."""


def for_update_unpooled(url: str, plan: list[cb.Attempt], clients: int, budget: int, processes: int = 1) -> dict:
    """(c) with a connection per client (no pool), at most `budget` connections open at once
    (counted across the client processes, like the server's max_connections)."""
    name = urlparse(url).path.lstrip("/")
    slots = multiprocessing.get_context("fork").BoundedSemaphore(budget)

    class Own:
        conn: Any = None

    def open_own(mine: Own) -> None:
        if not slots.acquire(False):
            raise TooManyConnections("(1040, 'Too many connections')")
        try:
            mine.conn = connect(url, name)
        except Exception:
            slots.release()
            raise

    def setup() -> Own:  # before the common start, like every other strategy's connections
        mine = Own()
        with contextlib.suppress(TooManyConnections):
            open_own(mine)
        return mine

    def hold(user_id: int, seat_id: int, schedule_id: int, mine: Own) -> str:
        if mine.conn is None:
            open_own(mine)  # a client left without a connection tries again on each attempt
        try:
            return cb.for_update_hold(mine.conn, user_id, seat_id, schedule_id)
        except Exception:
            mine.conn.rollback()
            raise

    def close(mine: Own) -> None:
        if mine.conn is not None:
            mine.conn.close()
            slots.release()

    return cb.closed_loop(plan, clients, hold, setup, close, processes=processes)


def open_loop(plan: list[cb.Attempt], rate: float, duration: float, max_in_flight: int, hold: cb.HoldFn) -> dict:
    """Offer attempts at `rate`/s for `duration` s (evenly spaced); latency from the scheduled arrival."""
    count = min(len(plan), max(1, int(rate * duration)))
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    guard = threading.Lock()
    in_flight, peak = [0], [0]

    def one(attempt: cb.Attempt, due: float) -> None:
        try:
            outcome = hold(*attempt, None)
        except Exception as exc:  # the client saw an error
            outcome = f"error:{type(exc).__name__}"
        done = time.perf_counter()
        with guard:
            latencies.append(done - due)
            outcomes[cb.ERROR if outcome.startswith("error:") else outcome] += 1
            if outcome.startswith("error:"):
                outcomes[outcome] += 1
            in_flight[0] -= 1

    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        start = time.perf_counter()
        for i, attempt in enumerate(plan[:count]):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with guard:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            pool.submit(one, attempt, due)
    seconds = time.perf_counter() - start
    return {
        "offered_per_second": rate,
        "attempts": len(latencies),
        "seconds": round(seconds, 3),
        "holds_per_second": round(len(latencies) / seconds, 1),
        "latency": summary_ms(latencies),
        "outcomes": dict(outcomes),
        "peak_in_flight": peak[0],
    }


def measure(
    services: Services, db_url: str, args: Any, level: int | str, run: Callable[[list[cb.Attempt]], dict]
) -> dict:
    """Fresh data, the plan for this level, one strategy run with its peak connections and checks."""
    services.redis.flushdb()
    seats = fresh_data(args.seats)
    db.close()
    attempts = max(args.attempts, 4 * level) if isinstance(level, int) else int(args.max_rate * args.duration) + 1
    plan = cb.workload(seats, attempts, args.hot_seats, args.hot_share, args.seed)
    locks_before = cb.lock_status(db_url)
    with PeakConnections(db_url) as peak:
        result = run(plan)
    result["db_locks"] = cb._delta(locks_before, cb.lock_status(db_url))
    result["peak_threads_connected"] = peak.peak
    result["check"] = cb.verify(args.seats)
    r = result
    result["peak_own_connections"] = peak.own
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"  {level} {len(plan)} attempts: {r['holds_per_second']:,.1f}/s p99 {r['latency']['p99_ms']:.1f} ms"
        f" errors {r['outcomes'].get(cb.ERROR, 0)} peak conns {peak.own} (server {peak.peak}) ok {r['check']['ok']}",
        flush=True,
    )
    return result


def one_level(services: Services, db_url: str, redis_url: str, args: Any, level: int) -> dict[str, dict]:
    """Every strategy at one level; the pipeline's workers are started (and warmed) outside the measurement."""
    out: dict[str, dict] = {}
    procs = client_processes(args, level)
    only = set(args.only.split(",")) if args.only else None
    if only is None or "a" in only:
        with cb.pipeline_workers(services, db_url, redis_url, workers=args.workers, batch=args.batch) as cluster:
            out["a_pipeline"] = measure(
                services,
                db_url,
                args,
                level,
                lambda p: cb.with_worker_cpu(cluster, lambda: cb.run_pipeline(services, p, level, processes=procs)),
            )
    if only is None or "b2" in only:
        out["b2_redis_edge"] = measure(
            services, db_url, args, level, lambda p: cb.run_redis_lock_edge(services, p, level, processes=procs)
        )
    db.close_all()  # hand the pool's idle connections back: the server's 151 are shared
    if only is None or "c" in only:
        out["c_for_update"] = measure(
            services, db_url, args, level, lambda p: for_update_pooled(db_url, p, level, args.pool, procs)
        )
    if only is None or "c2" in only:
        out["c2_unpooled"] = measure(
            services, db_url, args, level, lambda p: for_update_unpooled(db_url, p, level, args.unpooled_budget, procs)
        )
    return out


def client_processes(args: Any, level: int) -> int:
    """Client processes for a level: --client-processes, or one per 64 clients up to 8 ("auto")."""
    if args.client_processes != "auto":
        return max(1, int(args.client_processes))
    return max(1, min(8, level // 64))


def one_rate(services: Services, db_url: str, redis_url: str, args: Any, rate: float) -> dict[str, dict]:
    """Strategies a, b' and c (pooled) offered `rate` attempts/s for `args.duration` s."""
    out: dict[str, dict] = {}
    label = f"{rate:g}/s"

    def offered(hold: cb.HoldFn) -> Callable[[list[cb.Attempt]], dict]:
        return lambda p: open_loop(p, rate, args.duration, args.max_in_flight, hold)

    with cb.pipeline_workers(services, db_url, redis_url, workers=args.workers, batch=args.batch):
        out["a_pipeline"] = measure(services, db_url, args, label, offered(cb.pipeline_hold(services)))
    out["b2_redis_edge"] = measure(services, db_url, args, label, offered(cb.redis_lock_edge_hold(services)))
    db.close_all()
    name = urlparse(db_url).path.lstrip("/")
    pool: queue.Queue[Any] = queue.Queue()
    for _ in range(args.pool):
        pool.put(connect(db_url, name))

    try:
        out["c_for_update"] = measure(services, db_url, args, label, offered(pooled_hold(pool)))
    finally:
        while not pool.empty():
            pool.get().close()
    return out


def print_level(level: int | str, results: dict[str, dict]) -> None:
    print(f"\n{level}" + (" in flight" if isinstance(level, int) else " offered"))
    head = f"{'strategy':16}{'att/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
    head += f"{'peak conns':>11}{'server':>7}{'lock waits':>11}{'held':>5}{'oversold':>9}{'viol.':>6}"
    print(head + f"{'client CPU':>11}{'worker CPU':>11}")
    for name, r in results.items():
        print(
            f"{name:16}{r['holds_per_second']:>9,.1f}{r['latency']['p50_ms']:>9.1f}{r['latency']['p99_ms']:>9.1f}"
            f"{r['outcomes'].get(cb.ERROR, 0):>7}{r['peak_own_connections']:>11}"
            f"{r['peak_threads_connected']:>7}{r['db_locks']['Innodb_row_lock_waits']!s:>11}"
            f"{r['check']['live_reservations']:>5}{r['check']['oversell']:>9}{len(r['check']['violations']):>6}"
            f"{r.get('client_cpu_per_s', '-')!s:>11}{r.get('worker_cpu_per_s', '-')!s:>11}",
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
    parser.add_argument(
        "--client-processes",
        default="auto",
        help="client processes per closed-loop level (every strategy alike); auto: one per 64 clients, at most 8",
    )
    parser.add_argument("--unpooled-budget", type=int, default=90, help="connections (c2) may open at most")
    parser.add_argument("--repeat", type=int, default=1, help="closed-loop rounds per level (median reported)")
    parser.add_argument("--rates", default="500,1000,2000", help="open-loop arrival rates (attempts/s); '' for none")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per open-loop rate")
    parser.add_argument("--max-in-flight", type=int, default=1024, help="open loop: client threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default="", help="closed loop: only these strategies (a,b2,c,c2); default all")
    parser.add_argument("--no-write", action="store_true", help="print only (do not write the results file)")
    args = parser.parse_args()
    db_url, redis_url = cb.bench_urls()
    services = cb.wide_services(db_url, redis_url, partitions=args.partitions, pool=args.pool)
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    args.max_rate = max(rates, default=0.0)
    levels: dict[str, dict[str, dict]] = {}
    for level in (int(x) for x in args.levels.split(",") if x.strip()):
        rounds = [one_level(services, db_url, redis_url, args, level) for _ in range(args.repeat)]
        levels[str(level)] = median_round(rounds)
        print_level(level, levels[str(level)])
    offered: dict[str, dict[str, dict]] = {}
    for rate in rates:
        offered[f"{rate:g}"] = one_rate(services, db_url, redis_url, args, rate)
        print_level(f"{rate:g}/s", offered[f"{rate:g}"])
    services.redis.flushdb()
    verdicts = must_show(levels)
    for line in verdicts:
        print(line)
    data = {"parameters": vars(args), "levels": levels, "open_loop": offered, "must_show": verdicts}
    if not args.no_write:
        print(f"wrote {write('contention_map', data)}")


def median_round(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Per strategy, the round with the median attempts/s (its own p99, errors and checks), every
    round's attempts/s and p99 beside it, and every round's checks folded in (oversold summed)."""
    out: dict[str, dict] = {}
    for name in rounds[0]:
        runs = sorted((r[name] for r in rounds), key=lambda x: x["holds_per_second"])
        chosen = dict(runs[(len(runs) - 1) // 2])  # the lower median: an even count never picks the better
        chosen["rounds"] = [
            {"holds_per_second": x["holds_per_second"], "p99_ms": x["latency"]["p99_ms"], "load": x["load_average"][0]}
            for x in (r[name] for r in rounds)
        ]
        chosen["check"] = dict(chosen["check"])
        chosen["check"]["oversell"] = sum(x["check"]["oversell"] for x in runs)
        chosen["check"]["violations"] = [v for x in runs for v in x["check"]["violations"]]
        out[name] = chosen
    return out


def must_show(levels: dict[str, dict[str, dict]]) -> list[str]:
    """Issue 16's targets for the closed-loop levels of this run, each with its figures."""
    out = []
    for level in ("256", "1024"):
        if level not in levels or not {"a_pipeline", "c_for_update"} <= set(levels[level]):
            continue
        a, c = levels[level]["a_pipeline"], levels[level]["c_for_update"]
        met = (
            a["holds_per_second"] >= c["holds_per_second"]
            and a["latency"]["p99_ms"] < c["latency"]["p99_ms"]
            and a["outcomes"].get(cb.ERROR, 0) == 0
        )
        out.append(
            f"{level} in flight: (a) {a['holds_per_second']:,.0f}/s p99 {a['latency']['p99_ms']:,.0f} ms "
            f"errors {a['outcomes'].get(cb.ERROR, 0)} vs (c) {c['holds_per_second']:,.0f}/s p99 "
            f"{c['latency']['p99_ms']:,.0f} ms: {'met' if met else 'NOT met'}"
        )
    conns = {lv: r["a_pipeline"]["peak_own_connections"] for lv, r in levels.items() if "a_pipeline" in r}
    out.append(f"(a) peak connections to its database per level: {conns}")
    bad = [
        f"{lv}/{n}"
        for lv, r in levels.items()
        for n, x in r.items()
        if x["check"]["oversell"] or x["check"]["violations"]
    ]
    out.append("oversold / checker: " + (f"FAILED {bad}" if bad else "0 oversold, checker clean in every cell"))
    return out


if __name__ == "__main__":
    main()
