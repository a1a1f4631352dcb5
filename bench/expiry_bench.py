"""Group commit for expiries: a partition's backlog of lapsed holds, one by one vs in groups, same run.

    .venv/bin/python -m bench.expiry_bench --holds 1000 --batch 32 --rounds 3

Each round, on fresh data (one schedule of `--holds` seats, each HELD by its own user, every
hold lapsed a minute ago) the same `expire_hold` messages run through a partition's handler:
1. one by one: `workers.dispatch.handle` per message (what a partition did before), and
2. grouped: `workers.expiries.ExpiryRuns` over batches of `--batch` messages (a partition
   worker's WORKER_BATCH), which expires each run in one transaction.
Both paths write the seat cache and the quick-refusal marks through, as in production. Reported:
expiries/s of each, their ratio, commits per expiry; every round checks all holds EXPIRED and
all seats AVAILABLE (models.check).

Environment: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_expiry, created if
missing), BENCH_REDIS_URL (default redis://127.0.0.1:6379/12, emptied before and after).
Writes bench/results/expiry.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from typing import Any

from dramatiq import Message
from dramatiq.broker import MessageProxy

from bench.common import create_database, write
from config.bootstrap import Services, bootstrap
from config.settings import Settings
from models import check, reservations, schema, seed
from models.concerts import AVAILABLE, Seat
from models.db import db, utcnow
from models.reservations import Reservation
from workers.batch import SeatBatch
from workers.dispatch import handle
from workers.expiries import ExpiryRuns
from workers.reservations import expire_hold


def lapsed_holds(n: int) -> list[int]:
    """Fresh schema; `n` seats each HELD by its own user, every hold lapsed; the reservation ids."""
    schema.drop_all()
    schema.migrate()
    seed.seed(concerts=1, schedules=1, seats=n, title="Bench")
    ids = []
    with db.connection_context():
        for user, seat in enumerate(Seat.select().order_by(Seat.number), start=1):
            view = reservations.hold_seat(
                user_id=user,
                schedule_id=seat.schedule_id,
                seat_id=seat.id,
                job_id=f"b{user}",
                hold_ttl=300,
                max_holds=4,
            )
            ids.append(view.reservation_id)
        Reservation.update(expires_at=utcnow() - dt.timedelta(minutes=1)).execute()
    return ids


def messages(ids: list[int]) -> list[MessageProxy]:
    return [
        MessageProxy(
            Message(
                queue_name="seats.p0", actor_name=expire_hold.name, args=(), kwargs={"reservation_id": rid}, options={}
            )
        )
        for rid in ids
    ]


class CountingCommits:
    """Counts top-level commits on the shared database while installed."""

    def __init__(self) -> None:
        self.commits = 0
        self._real = db.obj.commit

    def __enter__(self) -> CountingCommits:
        def commit(*a: Any, **k: Any) -> Any:
            self.commits += 1
            return self._real(*a, **k)

        db.obj.commit = commit
        return self

    def __exit__(self, *exc: object) -> None:
        db.obj.commit = self._real


def run(services: Services, n: int, batch: int, grouped: bool) -> dict[str, Any]:
    ids = lapsed_holds(n)
    services.redis.flushdb()
    msgs = messages(ids)
    runs = ExpiryRuns(SeatBatch(services.redis, handle, stale_after_s=60), handle)
    with CountingCommits() as counted:
        started = time.perf_counter()
        if grouped:
            for k in range(0, len(msgs), batch):
                runs(msgs[k : k + batch])
        else:
            for message in msgs:
                handle(message)
        took = time.perf_counter() - started
    with db.connection_context():
        statuses = {r.status for r in Reservation.select(Reservation.status)}
        seats = {s.status for s in Seat.select(Seat.status)}
        problems = check.violations()
    assert statuses == {"EXPIRED"} and seats == {AVAILABLE}, (statuses, seats)
    assert not problems, problems
    return {
        "expiries_per_s": round(n / took, 1),
        "seconds": round(took, 3),
        "commits_per_expiry": round(counted.commits / n, 3),
        "grouped": runs.grouped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holds", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_expiry")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    create_database(db_url)
    services = bootstrap(Settings().with_(database_url=db_url, redis_url=redis_url))
    rows: list[dict[str, Any]] = []
    for k in range(args.rounds):
        one = run(services, args.holds, args.batch, grouped=False)
        group = run(services, args.holds, args.batch, grouped=True)
        ratio = round(group["expiries_per_s"] / one["expiries_per_s"], 2)
        rows.append({"round": k + 1, "one_by_one": one, "grouped": group, "ratio": ratio})
        print(
            f"round {k + 1}: one by one {one['expiries_per_s']:,.0f}/s ({one['commits_per_expiry']} commits each), "
            f"grouped {group['expiries_per_s']:,.0f}/s ({group['commits_per_expiry']} commits each): {ratio}x",
            flush=True,
        )
    services.redis.flushdb()
    median = statistics.median(r["ratio"] for r in rows)
    print(f"median ratio grouped / one by one: {median}x over {args.rounds} rounds")
    path = write(
        "expiry",
        {
            "args": vars(args),
            "load_before": os.getloadavg()[0],
            "rounds": rows,
            "median_ratio": median,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
