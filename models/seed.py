"""Fast bulk loading of demo and benchmark data (multi-row INSERTs, not ORM saves)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from models.concerts import Concert, NewSchedule, Schedule, create_concert
from models.db import db, utcnow

BATCH = 10_000


@dataclass(frozen=True)
class SeedResult:
    """What a seed run created and how long it took."""

    concerts: int
    schedules: int
    seats: int
    seconds: float


def seed(
    *,
    concerts: int,
    schedules: int,
    seats: int,
    price: int = 50_000,
    title: str = "Concert",
    progress: Callable[[int], object] | None = None,
) -> SeedResult:
    """Create `concerts` concerts x `schedules` schedules x `seats` seats each (seats numbered 1..N).

    `progress(n)` is called after each batch of n seats is committed (the CLI's progress bar).
    """
    if concerts < 1 or schedules < 1 or seats < 1:
        raise ValueError("--concerts, --schedules and --seats must each be at least 1")
    started = time.perf_counter()
    start_day = utcnow().replace(hour=19, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    database = db.obj
    total = 0
    for c in range(concerts):
        concert = Concert.create(title=f"{title} {c + 1}", venue=f"Hall {c + 1}")
        for s in range(schedules):
            schedule = Schedule.create(concert=concert, starts_at=start_day + dt.timedelta(days=s), total_seats=seats)
            total += _insert_seats(database, schedule.id, seats, price, progress)
    return SeedResult(concerts, concerts * schedules, total, time.perf_counter() - started)


def _insert_seats(
    database: object, schedule_id: int, count: int, price: int, progress: Callable[[int], object] | None = None
) -> int:
    """Insert seats 1..count of one schedule with executemany in batches (status/version use SQL defaults)."""
    p = database.param  # type: ignore[attr-defined]  # "?" on SQLite, "%s" on MySQL
    sql = f"INSERT INTO seats (schedule_id, number, price) VALUES ({p}, {p}, {p})"
    for start in range(1, count + 1, BATCH):
        rows = [(schedule_id, n, price) for n in range(start, min(start + BATCH, count + 1))]
        with db.atomic():
            cursor = db.cursor()
            cursor.executemany(sql, rows)
        if progress is not None:
            progress(len(rows))
    return count


def seed_demo() -> int | None:
    """Create the demo concert (2 schedules x 50 seats) unless a concert exists; return its id."""
    if Concert.select().exists():
        return None
    day = utcnow().replace(hour=19, minute=0, second=0, microsecond=0) + dt.timedelta(days=7)
    concert_id, _ = create_concert(
        title="Demo Night",
        venue="Olympic Hall",
        schedules=[NewSchedule(day, 50, 50_000), NewSchedule(day + dt.timedelta(days=1), 50, 50_000)],
    )
    return concert_id
