"""The reservation pipeline driven from a test: enqueue holds as POST /reservations does, read the jobs back."""

from __future__ import annotations

import time
from typing import Any

from config.bootstrap import Services
from models.concerts import Seat
from tests.support.helpers import run_in_threads
from tests.support.procs import Cluster
from workers.broker import send
from workers.jobs import TERMINAL, JobStore, job_key
from workers.reservations import hold_seat


def enqueue_holds(live: Services, requests: list[tuple[int, Seat]], threads: int = 50) -> list[str]:
    """Enqueue (user, seat) holds from `threads` threads at once, as POST /reservations does; job ids in order."""
    store, ids = JobStore(live.redis), [""] * len(requests)

    def run(k: int) -> None:
        for i in range(k, len(requests), threads):
            user_id, seat = requests[i]
            job = store.create(job_type="RESERVATION", user_id=user_id)
            send(
                live.broker,
                hold_seat,
                route_seat=seat.id,
                partitions=live.settings.partitions,
                job_id=job.job_id,
                user_id=user_id,
                schedule_id=seat.schedule_id,
                seat_id=seat.id,
                enqueued_ms=int(time.time() * 1000),
            )
            ids[i] = job.job_id

    run_in_threads([lambda k=k: run(k) for k in range(threads)])
    assert all(ids)
    return ids


def jobs(live: Services, ids: list[str]) -> list[dict[str, Any]]:
    pipe = live.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(job_key(job_id), "status", "user", "result", "error", "created", "finished")
    rows = pipe.execute()
    keys = ("status", "user", "result", "error", "created", "finished")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def wait_terminal(live: Services, ids: list[str], timeout: float, cluster: Cluster) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = jobs(live, ids)
        left = sum(r["status"] not in TERMINAL for r in records)
        if not left:
            return records
        assert time.monotonic() < deadline, f"{left} of {len(ids)} jobs not finished\n{cluster.logs()}"
        time.sleep(0.1)
