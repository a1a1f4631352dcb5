"""Where a pipeline job's time goes: Redis commands per job, phases, and CPU per job, by outcome.

    .venv/bin/python -m bench.job_costs [--jobs 1000 --clients 32 --workers 2 --batch 32]

Two runs on fresh data, each `--jobs` hold jobs sent as POST /reservations sends them (one
`workers.broker.send`) by `--clients` closed-loop threads that wait for their job (JobStore.wait):
  winners  every job on its own free seat (what group commit serves)
  losers   every job on a seat already HELD, with no edge check (what the batch's bulk rejection serves)
Reported per run: jobs/s, client p50/p99, the phases of each job from its record (created ->
started: queued; started -> finished: run; finished -> the client has it: delivery), Redis
commands per job by name (`INFO commandstats` deltas of the whole server: the client, the
workers and their idle loops), and CPU seconds per job of the client and worker processes.

Environment: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_job_costs),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/13; emptied). Writes bench/results/job_costs.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
import uuid
from collections import Counter
from typing import Any

import redis

from bench.common import create_database, pct, run_threads, summary_ms, write
from bench.contention_bench import warm_up_workers
from bench.pipeline_bench import cpu_seconds, fresh_data
from config.bootstrap import Services, bootstrap
from config.settings import Settings
from models.db import db
from tests.support.procs import Cluster, wait_for_leases
from workers.broker import send
from workers.jobs import SUCCEEDED, TERMINAL, JobStore
from workers.reservations import hold_seat


def commandstats(client: redis.Redis) -> Counter[str]:
    """Calls per command since the last CONFIG RESETSTAT (`INFO commandstats`)."""
    info: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})


def run(services: Services, seats: list[tuple[int, int]], jobs: int, clients: int, pids: list[int]) -> dict:
    """`jobs` hold jobs on `seats` (cycled), closed loop; phases, commands and CPU per job."""
    store = JobStore(services.redis)
    latencies: list[float] = []
    phases: dict[str, list[float]] = {"queued": [], "run": [], "delivery": []}
    outcomes: Counter[str] = Counter()
    guard = threading.Lock()

    def client(k: int) -> None:
        for i in range(k, jobs, clients):
            seat_id, schedule_id = seats[i % len(seats)]
            job_id, started = uuid.uuid4().hex, time.perf_counter()
            send(
                services.broker,
                hold_seat,
                route_seat=seat_id,
                partitions=services.settings.partitions,
                job=store.new(job_type="RESERVATION", user_id=i + 1, job_id=job_id)[1],
                job_id=job_id,
                user_id=i + 1,
                schedule_id=schedule_id,
                seat_id=seat_id,
                enqueued_ms=int(time.time() * 1000),
            )
            done = store.wait(job_id, 60, fresh=True)
            got_ms = time.time() * 1000
            with guard:
                latencies.append(time.perf_counter() - started)
                if done is None or done.status not in TERMINAL:
                    outcomes["error"] += 1
                    continue
                outcomes["held" if done.status == SUCCEEDED else (done.error or {}).get("code", "?")] += 1
                raw = services.redis.hmget(f"job:{{j:{job_id}}}", "started", "finished")
                if raw[0] and raw[1]:
                    phases["queued"].append(int(raw[0]) - done.created_ms)
                    phases["run"].append(int(raw[1]) - int(raw[0]))
                    phases["delivery"].append(got_ms - int(raw[1]))

    services.redis.config_resetstat()
    cpu_before, self_before = cpu_seconds(pids), _self_cpu()
    seconds = run_threads(clients, client)
    cpu_workers, cpu_client = cpu_seconds(pids) - cpu_before, _self_cpu() - self_before
    stats = commandstats(services.redis)
    stats.subtract({"hmget": jobs, "info": 1, "config|resetstat": 1})  # the probe's own reads
    per_job = {k: round(v / jobs, 2) for k, v in sorted(stats.items(), key=lambda kv: -kv[1]) if v > 0}
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_second": round(jobs / seconds, 1),
        "latency": summary_ms(latencies),
        "outcomes": dict(outcomes),
        "phases_ms": {k: {"p50": pct(v, 0.5), "p99": pct(v, 0.99)} for k, v in phases.items()},
        "redis_commands_per_job": per_job,
        "redis_commands_per_job_total": round(sum(max(0, v) for v in stats.values()) / jobs, 2),
        "cpu_ms_per_job": {
            "workers": round(cpu_workers * 1000 / jobs, 3),
            "client": round(cpu_client * 1000 / jobs, 3),
        },
    }


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--only", default="winners,losers")
    args = parser.parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_job_costs")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    create_database(db_url)
    services = bootstrap(Settings().with_(database_url=db_url, redis_url=redis_url, partitions=args.partitions))
    results: dict[str, Any] = {"load_average": os.getloadavg()}
    for name in args.only.split(","):
        services.redis.flushdb()
        seats = fresh_data(args.jobs)
        if name == "losers":
            db.execute_sql("UPDATE seats SET status = 'HELD', version = version + 1")
        db.close()
        cluster = Cluster(db_url, redis_url, {"PARTITIONS": str(args.partitions), "WORKER_BATCH": str(args.batch)})
        try:
            procs = [cluster.start_worker() for _ in range(args.workers)]
            wait_for_leases(services.redis, cluster, partitions=args.partitions, balanced=True)
            warm_up_workers(services)
            results[name] = r = run(services, seats, args.jobs, args.clients, [p.pid for p in procs])
        finally:
            cluster.stop()
        print(
            f"{name}: {r['jobs_per_second']:,.1f} jobs/s p50 {r['latency']['p50_ms']:.1f} p99 "
            f"{r['latency']['p99_ms']:.1f} ms {r['outcomes']}\n  phases {r['phases_ms']}\n"
            f"  redis commands/job {r['redis_commands_per_job_total']}: {r['redis_commands_per_job']}\n"
            f"  cpu ms/job {r['cpu_ms_per_job']}",
            flush=True,
        )
    services.redis.flushdb()
    print(f"load average {results['load_average']}; wrote {write('job_costs', results)}")


if __name__ == "__main__":
    main()
