"""Where a partition worker's CPU goes on a batch of holds on free seats (what group commit serves).

    .venv/bin/python -m bench.group_costs [--batches 40 --batch 32 --remembered 2000 --profile]

In one process, on fresh data, the partition worker `python -m workers run` builds
(`workers.batch.partition_worker`) takes `--batches` batches of `--batch` hold jobs, each job on its
own free seat (sent as POST /reservations sends them), one batch at a time, through the steps its
consumer thread makes (workers/partitions.py): fetch the batch, note its seats for the mark
refresh, run it (bulk read, group start, group commit, group finish), acknowledge it. Each step is
timed in CPU (thread_time) and wall time; no other process competes for this one's GIL, so the
CPU figures hardly move with the machine's load (the database's and Redis's own work is not in
them). Beside it: one mark refresh of `--remembered` seats held, what the worker's keeper thread
does every 0.3 s. Logging is set up as the worker's (LOG_LEVEL, LOG_FORMAT): its INFO line per job goes
to stderr. `--profile` prints cProfile's top functions of the batch steps.

Environment: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_group_costs),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/13; emptied).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.common import create_database
from bench.pipeline_bench import fresh_data, send_hold
from config import logs
from config.bootstrap import bootstrap
from config.settings import Settings
from models import check
from models.db import db
from workers.batch import partition_worker
from workers.broker import ack_all, fetched_ahead, partition_broker, queue_of
from workers.jobs import SUCCEEDED, JobStore, job_key
from workers.marks import MarkKeeper

STEPS = ("fetch", "seen", "run", "ack")


def timed(into: dict[str, list[tuple[float, float]]], step: str, fn: Callable[[], Any]) -> Any:
    """Run fn, adding its (CPU s, wall s) to into[step]."""
    cpu, wall = time.thread_time(), time.perf_counter()
    result = fn()
    into.setdefault(step, []).append((time.thread_time() - cpu, time.perf_counter() - wall))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--remembered", type=int, default=2000, help="seats in the mark refresh timed beside")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions of the batches")
    args = parser.parse_args()
    logs.setup()  # as `python -m workers run` does: its INFO line per job is part of the cost (on stderr)

    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_group_costs")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    create_database(db_url)
    settings = Settings().with_(database_url=db_url, redis_url=redis_url, partitions=1, worker_batch=args.batch)
    services = bootstrap(settings)
    services.redis.flushdb()
    seats = fresh_data(max(args.batches * args.batch + args.batch, args.remembered))
    db.close()
    worker = partition_worker(services)
    batch = worker.batch
    keeper = worker.keeper(0) if worker.keeper is not None else None
    broker = partition_broker(services.broker, 0)
    queue = queue_of(0)
    broker.declare_queue(queue)
    store = JobStore(services.redis)
    profiler = cProfile.Profile(time.thread_time) if args.profile else None  # CPU, not waits
    steps: dict[str, list[tuple[float, float]]] = {}
    job_ids: list[str] = []
    user = 0

    def one_batch(first: int, measure: bool) -> None:
        nonlocal user
        ids = []
        for seat_id, schedule_id in seats[first : first + args.batch]:
            user += 1
            ids.append(send_hold(services, store, user, seat_id, schedule_id, uuid.uuid4().hex))
        consumer = broker.consume(queue, prefetch=args.batch, timeout=5)
        into: dict[str, list[tuple[float, float]]] = steps if measure else {}
        if profiler is not None and measure:
            profiler.enable()

        def fetch() -> list[Any]:
            messages = [next(consumer)]
            while len(messages) < args.batch and fetched_ahead(consumer):
                messages.append(next(consumer))
            return messages

        messages = timed(into, "fetch", fetch)
        if keeper is not None:
            timed(into, "seen", lambda: keeper.seen(messages))
        timed(into, "run", lambda: batch(messages))
        timed(into, "ack", lambda: ack_all(consumer, messages))
        if profiler is not None and measure:
            profiler.disable()
        consumer.close()
        assert len(messages) == args.batch, f"fetched {len(messages)} of {args.batch}"
        if measure:
            job_ids.extend(ids)

    one_batch(0, measure=False)  # warm up: scripts loaded, connections open
    for b in range(1, args.batches + 1):
        one_batch(b * args.batch, measure=True)

    statuses = [services.redis.hget(job_key(j), "status") for j in job_ids]
    succeeded = sum(1 for s in statuses if s in (SUCCEEDED, SUCCEEDED.encode()))
    violations = check.violations()

    refresh: list[tuple[float, float]] = []
    if args.remembered:
        marks = MarkKeeper(services.redis)
        for seat_id, schedule_id in seats[: args.remembered]:
            marks.seats[seat_id] = (schedule_id, time.monotonic())
        for _ in range(10):
            timed({"r": refresh}, "r", marks.refresh)

    n = args.batches * args.batch
    print(f"\n{args.batches} batches of {args.batch} holds on free seats, one partition, in-process")
    print(f"{'step':8}{'CPU us/hold':>13}{'wall us/hold':>14}{'CPU ms/batch p50':>18}")
    total_cpu = total_wall = 0.0
    for step in STEPS:
        rows = steps.get(step, [])
        cpu, wall = sum(c for c, _ in rows), sum(w for _, w in rows)
        total_cpu, total_wall = total_cpu + cpu, total_wall + wall
        p50 = statistics.median(c for c, _ in rows) * 1000 if rows else 0.0
        print(f"{step:8}{cpu / n * 1e6:>13.1f}{wall / n * 1e6:>14.1f}{p50:>18.2f}")
    print(f"{'total':8}{total_cpu / n * 1e6:>13.1f}{total_wall / n * 1e6:>14.1f}")
    print(f"jobs succeeded {succeeded}/{n}; invariant violations {len(violations)}")
    if refresh:
        cpu_ms = statistics.median(c for c, _ in refresh) * 1000
        wall_ms = statistics.median(w for _, w in refresh) * 1000
        print(f"mark refresh of {args.remembered} held seats: CPU {cpu_ms:.2f} ms, wall {wall_ms:.2f} ms (p50 of 10)")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
        print(out.getvalue())
    services.redis.flushdb()


if __name__ == "__main__":
    main()
