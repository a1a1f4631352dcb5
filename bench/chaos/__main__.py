"""The driver of `python -m bench.chaos`: start the service, run load and faults, settle, check, report."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.chaos import DEFAULT_DB, FULL, QUICK, REDIS_PORT, WEB_PORT, Plan, Record
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
from bench.chaos.faults import FaultScript, fault_schedule
from bench.chaos.load import load
from bench.chaos.report import failure_detail, result_of, table
from bench.chaos.service import Service, port_free, start_service, stop_service
from bench.common import RESULTS, machine


def run(plan: Plan, *, seed: int, db_url: str, web_port: int, mode: str, faults_on: bool = True) -> dict[str, Any]:
    """One chaos run; returns the result (also printed as a table)."""
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(
        f"chaos run ({mode}): seed {seed}, {plan.duration:g} s of load, {plan.threads} client threads, "
        f"{plan.seats} seats, logs in {workdir}",
        flush=True,
    )
    started = time.monotonic()
    service = start_service(plan, db_url, workdir, web_port)
    print(
        f"  service up in {time.monotonic() - started:.1f} s: web :{web_port}, 2 workers, 2 schedulers, consumer, "
        f"redis :{REDIS_PORT} (AOF), broker {service.broker.bootstrap}",
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
    faults = FaultScript(service, fault_schedule(plan, rng) if faults_on else [], t0, rng)
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
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.json", help="where to write the JSON result")
    parser.add_argument("--port", type=int, default=WEB_PORT)
    parser.add_argument("--no-faults", action="store_true", help="baseline: the same load without faults")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    taken = [port for port in (REDIS_PORT, args.port) if not port_free(port)]
    if taken:
        print(f"port(s) {taken} are taken: another chaos run is going on", file=sys.stderr)
        return 2
    mode = ("quick" if args.quick else "full") + (" baseline, no faults" if args.no_faults else "")
    db_url = os.environ.get("CHAOS_DATABASE_URL", DEFAULT_DB)
    run_result = run(
        QUICK if args.quick else FULL,
        seed=seed,
        db_url=db_url,
        web_port=args.port,
        mode=mode,
        faults_on=not args.no_faults,
    )
    result = {"machine": machine(), **run_result}
    print()
    print(table(result))
    if result["fault_errors"]:
        print("fault errors:", *result["fault_errors"], sep="\n  ")
    if not result["ok"]:
        print(json.dumps(failure_detail(result), indent=2, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
