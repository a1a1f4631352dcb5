"""The driver of `python -m bench.chaos`: start the service, run load and faults, settle, check, report."""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.chaos import (
    BROKER_PORT,
    BUS_OFFSET,
    CLUSTER_NODES,
    FULL,
    QUICK,
    REDIS_PORT,
    WEB_PORT,
    Plan,
    Record,
    database_url,
    free_ports,
)
from bench.chaos.checks import (
    database_checks,
    event_state,
    failure_codes,
    job_states,
    models_check,
    payment_gaps,
    payment_times,
    per_bucket,
    settle,
)
from bench.chaos.faults import FaultScript, fault_schedule, faults_of
from bench.chaos.load import load
from bench.chaos.report import failure_detail, result_of, table
from bench.chaos.service import RunLock, Service, port_free, start_service, stop_service
from bench.common import RESULTS, machine


def run(
    plan: Plan,
    *,
    seed: int,
    db_url: str,
    web_port: int,
    mode: str,
    faults_on: bool = True,
    redis_port: int = REDIS_PORT,
    redis_cluster: bool = False,
    broker_port: int = BROKER_PORT,
    bus_offset: int = BUS_OFFSET,
) -> dict[str, Any]:
    """One chaos run; returns the result (also printed as a table)."""
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(
        f"chaos run ({mode}): seed {seed}, {plan.duration:g} s of load, {plan.threads} client threads, "
        f"{plan.seats} seats, logs in {workdir}",
        flush=True,
    )
    started = time.monotonic()
    service = start_service(
        plan,
        db_url,
        workdir,
        web_port,
        redis_port=redis_port,
        redis_cluster=redis_cluster,
        broker_port=broker_port,
        bus_offset=bus_offset,
    )
    where = (
        f"Redis Cluster :{redis_port}-{redis_port + CLUSTER_NODES - 1} (3 masters + 3 replicas)"
        if redis_cluster
        else f"redis :{redis_port} (AOF)"
    )
    print(
        f"  service up in {time.monotonic() - started:.1f} s: web :{web_port}, 2 workers, 2 schedulers, consumer, "
        f"{where}, broker {service.broker.bootstrap}, database {db_url.rsplit('/', 1)[-1]}",
        flush=True,
    )
    rec = Record()
    try:
        driven = drive(service, plan, rec, seed, faults_on)
        observed = observe(service, plan, rec, driven)
    finally:
        stop_service(service)
    return result_of(plan, rec, mode=mode, seed=seed, workdir=workdir, **driven, **observed)


def drive(service: Service, plan: Plan, rec: Record, seed: int, faults_on: bool) -> dict[str, Any]:
    """The load for `plan.duration` seconds with the fault script running inside it."""
    rng = random.Random(seed)
    t0, t0_wall = time.monotonic(), time.time()
    stop_at = t0 + plan.duration
    fans = load(service, plan, rec, seed, stop_at)
    faults = FaultScript(service, fault_schedule(plan, rng, faults_of(service)) if faults_on else [], t0, rng)
    faults.start()
    faults.join(timeout=plan.duration + 120)
    for t in fans:
        t.join(timeout=max(1.0, stop_at + 90 - time.monotonic()))
    load_s = time.monotonic() - t0
    print(f"  load done after {load_s:.1f} s ({rec.requests} requests); settling", flush=True)
    still_running = sum(1 for t in fans if t.is_alive())
    return {"faults": faults, "load_s": load_s, "t0_wall": t0_wall, "still_running": still_running}


def observe(service: Service, plan: Plan, rec: Record, driven: dict[str, Any]) -> dict[str, Any]:
    """Let the pipeline settle, then read every store: jobs, events, payments, wallets, invariants."""
    settled = settle(service, rec, plan.settle_timeout)
    paid_at = payment_times(service, driven["t0_wall"])
    violations, check_output = models_check(service)
    return {
        "settled": settled,
        "states": job_states(service, list(rec.accepted)),
        "events": event_state(service),
        "failed_codes": failure_codes(service, list(rec.accepted)),
        "timeline": per_bucket(paid_at, driven["load_s"]),
        "gaps": payment_gaps(paid_at, driven["faults"].log.events, driven["load_s"]),
        "checks": database_checks(service, rec),
        "violations": violations,
        "check_output": check_output,
        "procs_alive": {n: len(service.alive(n)) for n in ("web", "worker", "scheduler", "consumer")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: each fault once in ~60 s")
    parser.add_argument("--seed", type=int, default=None, help="fault/load RNG seed (default: random, printed)")
    parser.add_argument(
        "--out", type=Path, help="where to write the JSON result (default chaos.json, chaos_cluster.json on a cluster)"
    )
    parser.add_argument("--port", type=int, default=WEB_PORT, help="the web's port (CHAOS_WEB_PORT; 0: a free one)")
    parser.add_argument(
        "--redis-port",
        type=int,
        default=REDIS_PORT,
        help="the Redis server's port, or the first of the cluster's six (CHAOS_REDIS_PORT; 0: free ones)",
    )
    parser.add_argument(
        "--broker-port",
        type=int,
        default=BROKER_PORT,
        help="the Kafka broker's port (CHAOS_BROKER_PORT; 0: any free one)",
    )
    parser.add_argument(
        "--database-url",
        default=database_url(),
        help="the MariaDB database, dropped and recreated (CHAOS_DATABASE_URL, else <TEST_DATABASE_URL's "
        "database>_chaos, else mysql://root@127.0.0.1:3306/chaos)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="run on a 6-node Redis Cluster of its own (--redis-port .. +5); a master kill replaces the Redis restart",
    )
    parser.add_argument(
        "--redis-bus-offset",
        type=int,
        default=BUS_OFFSET,
        help="--redis-cluster: each node's cluster bus port is its port + this (CHAOS_REDIS_BUS_OFFSET, default "
        "10000; use a small one, e.g. 10, for ports above 22767)",
    )
    parser.add_argument("--no-faults", action="store_true", help="baseline: the same load without faults")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    if not args.redis_port:
        args.redis_port = free_ports(CLUSTER_NODES, args.redis_bus_offset) if args.redis_cluster else free_ports()
    args.port = args.port or free_ports()
    redis_ports = [args.redis_port + i for i in range(CLUSTER_NODES if args.redis_cluster else 1)]
    if args.redis_cluster:
        redis_ports += [p + args.redis_bus_offset for p in redis_ports]
    wanted = [*redis_ports, args.port] + ([args.broker_port] if args.broker_port else [])
    taken = [port for port in wanted if not port_free(port)]
    if taken:
        print(f"port(s) {taken} are taken: choose others (CHAOS_REDIS_PORT, CHAOS_WEB_PORT, --port)", file=sys.stderr)
        return 2
    mode = ("quick" if args.quick else "full") + (", Redis Cluster" if args.redis_cluster else "")
    mode += " baseline, no faults" if args.no_faults else ""
    lock = RunLock(args.database_url)
    if not lock.acquire():
        print(f"another chaos run is using {args.database_url} (named lock {lock.name})", file=sys.stderr)
        return 2
    try:
        run_result = run(
            QUICK if args.quick else FULL,
            seed=seed,
            db_url=args.database_url,
            web_port=args.port,
            mode=mode,
            faults_on=not args.no_faults,
            redis_port=args.redis_port,
            redis_cluster=args.redis_cluster,
            broker_port=args.broker_port,
            bus_offset=args.redis_bus_offset,
        )
    finally:
        lock.release()
    result = {"machine": machine(), **run_result}
    print()
    print(table(result))
    if result["fault_errors"]:
        print("fault errors:", *result["fault_errors"], sep="\n  ")
    if not result["ok"]:
        print(json.dumps(failure_detail(result), indent=2, default=str))
    out = args.out or RESULTS / ("chaos_cluster.json" if args.redis_cluster else "chaos.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
