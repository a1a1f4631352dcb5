"""The reservation pipeline driven from a test: enqueue holds as POST /reservations does, read the jobs back."""

from __future__ import annotations

import json
import time
from typing import Any

from config.bootstrap import Services
from models.concerts import Seat
from tests.support.helpers import run_in_threads
from tests.support.procs import Cluster
from workers.broker import namespace_of, queue_key, send
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
        if time.monotonic() >= deadline:
            stuck = [job_id for job_id, r in zip(ids, records, strict=True) if r["status"] not in TERMINAL]
            where = "\n".join(whereabouts(live, stuck[:20]))
            raise AssertionError(
                f"{left} of {len(ids)} jobs not finished; where they are:\n{where}\n"
                f"logs in {cluster.logdir}\n{cluster.logs()}"
            )
        time.sleep(0.1)


def whereabouts(live: Services, job_ids: list[str]) -> list[str]:
    """One line per job: its record and where its message is (a queue, whose ack set and its heartbeat age, gone)."""
    r, now_ms = live.redis, int(time.time() * 1000)
    found: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    for p in range(live.settings.partitions):
        ns, queue = namespace_of(p), queue_key(p)
        waiting = {_text(m) for m in r.lrange(queue, 0, -1)}
        beats = {_text(b): int(float(s)) for b, s in r.zrange(f"{ns}:__heartbeats__", 0, -1, withscores=True)}
        acks = {_text(key): {_text(m) for m in r.smembers(key)} for key in r.scan_iter(f"{ns}:__acks__.*")}
        for message_id, data in r.hgetall(f"{queue}.msgs").items():
            message_id = _text(message_id)
            job_id = json.loads(data)["kwargs"].get("job_id")
            if job_id not in found:
                continue
            places = [f"p{p} queue"] if message_id in waiting else []
            for key, members in acks.items():
                if message_id in members:
                    broker_id = key.split("__acks__.", 1)[1].rsplit(".seats.", 1)[0]
                    age = f"{(now_ms - beats[broker_id]) / 1000:.1f} s ago" if broker_id in beats else "none"
                    places.append(f"p{p} acks of broker {broker_id} (heartbeat {age})")
            found[job_id].append(f"message {message_id}: " + (", ".join(places) or f"p{p} .msgs only"))
    lines = []
    for job_id in job_ids:
        record = {_text(k): _text(v) for k, v in r.hgetall(job_key(job_id)).items()}
        status = f"{record.get('status')} attempts={record.get('attempts')}"
        lines.append(f"job {job_id} {status}: " + ("; ".join(found[job_id]) or "no message in any .msgs hash (acked)"))
    return lines


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
