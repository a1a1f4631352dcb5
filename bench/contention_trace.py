"""Where the pipeline's attempts spend their time: strategy (a) of bench/contention_map.py, traced per stage.

    .venv/bin/python -m bench.contention_trace [--level 256 --processes 4 --attempts 2000]

Runs (a) once at one level, as the regime map does (fresh data, `--workers` worker processes
with an even split of the partitions, warmed up, clients over `--processes` forked processes),
and stamps every attempt: the edge check, the send, then from the job's final record (which
the done list carries) the queue wait (worker start - send) and the run (finish - start), and
the delivery (client has it - finish). Meanwhile it reads the hot seats' quick-refusal marks
every ~10 ms. Prints the slowest 1 % of attempts stage by stage, each stage's p50/p90/max over
the jobs, the jobs started per 100 ms, and per hot seat a strip of its mark over time ('#'
marked, '.' not) with the moments its jobs were sent: what docs/ARCHITECTURE.md ("Contention")
reads its causes from. Writes nothing under bench/results (a diagnosis, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from bench import contention_bench as cb
from bench.common import pct
from bench.pipeline_bench import fresh_data
from models import quick_refusal
from models.db import db
from workers.jobs import SUCCEEDED, JobStore, _job_of, done_key


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--level", type=int, default=256, help="attempts in flight (closed-loop clients)")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--attempts", type=int, default=0, help="default: max(2000, 4 x level), as the map")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seats", type=int, default=100)
    args = parser.parse_args()
    db_url, redis_url = cb.bench_urls()
    services = cb.wide_services(db_url, redis_url, partitions=args.partitions, pool=64)
    services.redis.flushdb()
    seats = fresh_data(args.seats)
    db.close()
    plan = cb.workload(seats, args.attempts or max(2000, 4 * args.level), 10, 0.5, 7)
    hot = [(seat_id, schedule_id) for seat_id, schedule_id in seats[:10]]
    spool = Path(tempfile.mkdtemp(prefix="contention-trace-"))
    rows: list[dict[str, Any]] = []
    guard = threading.Lock()
    store = JobStore(services.redis)

    def hold(user_id: int, seat_id: int, schedule_id: int, _: Any) -> str:
        t0 = time.time()
        mark = cb.edge_mark(services.redis, schedule_id, seat_id)
        job_id = uuid.uuid4().hex
        refused = quick_refusal.refusal_of(mark) is not None or (
            quick_refusal.claim_or_follow(
                services.redis, store, schedule_id=schedule_id, seat_id=seat_id, job_id=job_id, mark=mark, wait=60
            )
            is not None
        )
        if refused:  # at the edge, or by the end of the seat's queued first hold ("edge" both)
            with guard:
                rows.append({"kind": "edge", "t0": t0, "end": time.time(), "seat": seat_id})
            return cb.TAKEN
        t1 = time.time()
        cb.send_hold(services, store, user_id, seat_id, schedule_id, job_id)
        t2 = time.time()
        element = services.redis.brpoplpush(done_key(job_id), done_key(job_id), 60)
        end = time.time()
        lines = str(element).split("\n")[1:]
        fields = dict(zip(lines[::2], lines[1::2], strict=False))
        done = _job_of(fields)
        with guard:
            rows.append(
                {
                    "kind": "job",
                    "t0": t0,
                    "t1": t1,
                    "t2": t2,
                    "end": end,
                    "seat": seat_id,
                    "status": done.status if done else "?",
                    "started": int(fields.get("started") or 0) / 1000,  # 0: answered in bulk, never started
                    "finished": (done.finished_ms or 0) / 1000 if done else 0,
                }
            )
        return cb.HELD if done and done.status == SUCCEEDED else cb.TAKEN

    def spill(_: Any) -> None:  # each client thread's rows, from whichever process it ran in
        with guard, (spool / f"rows-{os.getpid()}.jsonl").open("a") as out:
            out.writelines(json.dumps(r) + "\n" for r in rows)
            rows.clear()

    probe: list[tuple[float, list[int]]] = []
    stop = threading.Event()

    def probing() -> None:
        client = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            pipe = client.pipeline(transaction=False)
            for seat_id, schedule_id in hot:
                pipe.pttl(quick_refusal.taken_key(schedule_id, seat_id))
            probe.append((time.time(), pipe.execute()))
            time.sleep(0.01)

    with cb.pipeline_workers(services, db_url, redis_url, workers=args.workers, batch=args.batch) as cluster:
        prober = threading.Thread(target=probing, daemon=True)
        prober.start()
        result = cb.run_pipeline(services, plan, args.level, processes=args.processes, hold=hold, teardown=spill)
        stop.set()
        prober.join()
    traced = [json.loads(line) for f in spool.glob("rows-*.jsonl") for line in f.read_text().splitlines()]
    print(f"{args.level} in flight, {args.processes} client processes, load {os.getloadavg()[0]:.1f}:", end=" ")
    lat = result["latency"]
    print(f"{result['holds_per_second']:,.1f}/s, p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms")
    report(traced, probe, hot)
    print(f"worker logs: {cluster.logdir}")


def report(rows: list[dict[str, Any]], probe: list[tuple[float, list[int]]], hot: list[tuple[int, int]]) -> None:
    """Print the slowest attempts by stage, the stages' spread over the jobs and the hot seats' marks."""
    t0 = min(r["t0"] for r in rows)
    jobs = [r for r in rows if r["kind"] == "job"]
    print(f"attempts {len(rows)}, jobs {len(jobs)} ({Counter(r['status'] for r in jobs)})")

    def ms(a: float, b: float) -> str:
        return f"{(b - a) * 1000:7.1f}"

    print("slowest 1 %: at s, seat, total / edge+send / queued / run / delivery ms")
    ordered = sorted(rows, key=lambda r: r["end"] - r["t0"])
    for r in ordered[int(0.99 * (len(ordered) - 1)) :]:
        if r["kind"] == "edge":
            print(f"  {r['t0'] - t0:6.2f} seat {r['seat']:3} {ms(r['t0'], r['end'])} edge only")
            continue
        queued = ms(r["t2"], r["started"]) if r["started"] else "   bulk"
        run = ms(r["started"], r["finished"]) if r["started"] else ms(r["t2"], r["finished"])
        print(
            f"  {r['t0'] - t0:6.2f} seat {r['seat']:3} {ms(r['t0'], r['end'])} / {ms(r['t0'], r['t2'])} / {queued} / "
            f"{run} / {ms(r['finished'], r['end'])} {r['status']}"
        )
    stages = {
        "edge check": lambda r: r["t1"] - r["t0"],
        "send": lambda r: r["t2"] - r["t1"],
        "queued": lambda r: r["started"] - r["t2"] if r["started"] else None,
        "run": lambda r: r["finished"] - r["started"] if r["started"] else None,
        "delivery": lambda r: r["end"] - r["finished"],
    }
    for name, f in stages.items():
        values = [v * 1000 for v in (f(r) for r in jobs) if v is not None]
        if values:
            print(
                f"jobs' {name:10} p50 {pct(values, 0.5):7.1f}  p90 {pct(values, 0.9):7.1f}  max {max(values):7.1f} ms"
            )
    edge = [(r["end"] - r["t0"]) * 1000 for r in rows if r["kind"] == "edge"]
    if edge:
        print(f"edge-only attempts p50 {pct(edge, 0.5):.1f}  p99 {pct(edge, 0.99):.1f}  max {max(edge):.1f} ms")
    per_100ms = Counter(int((r["t0"] - t0) * 10) for r in jobs)
    print("jobs sent per 100 ms:", [per_100ms.get(i, 0) for i in range(max(per_100ms) + 1)] if per_100ms else [])
    end = max(r["end"] for r in rows)
    print("hot seats' marks from the start ('#' marked), and when their jobs were sent (s):")
    for i, (seat_id, _) in enumerate(hot):
        strip = "".join("#" if values[i] > 0 else "." for at, values in probe if t0 <= at <= end)
        sent = sorted(round(r["t0"] - t0, 2) for r in jobs if r["seat"] == seat_id)
        print(f"  seat {seat_id:3} {strip[:160]}\n           jobs at {sent[:30]}")


if __name__ == "__main__":
    main()
