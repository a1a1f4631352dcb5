"""Concerts, their schedules and seats: the catalogue tables and the functions over them."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from models import fairness
from models.db import BaseModel, UtcDateTimeField, db, replica_read, utcnow
from models.errors import NotFound, ValidationError

AVAILABLE, HELD, RESERVED = "AVAILABLE", "HELD", "RESERVED"
SEAT_STATUSES = (AVAILABLE, HELD, RESERVED)
MAX_SEATS_PER_SCHEDULE = 1000


class Concert(BaseModel):
    """A concert (title, venue)."""

    id = pw.BigAutoField()
    title = pw.CharField(max_length=200)
    venue = pw.CharField(max_length=200)
    created_at = UtcDateTimeField(default=utcnow)
    # fair start (migration 006): NULL sale_opens_at = admission from the first join on
    sale_opens_at = UtcDateTimeField(null=True)
    seed_hex = pw.CharField(max_length=64, null=True)  # secret until drawn_at
    seed_commitment = pw.CharField(max_length=64, null=True)
    drawn_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "concerts"


class Schedule(BaseModel):
    """One performance (date) of a concert."""

    id = pw.BigAutoField()
    concert = pw.ForeignKeyField(Concert, backref="schedules", column_name="concert_id")
    starts_at = UtcDateTimeField()
    total_seats = pw.IntegerField()
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "concert_schedules"


class Seat(BaseModel):
    """A seat of a schedule; `version` is bumped by every compare-and-set status change."""

    id = pw.BigAutoField()
    # index=False: UNIQUE (schedule_id, number) serves the foreign key (migration 004)
    schedule = pw.ForeignKeyField(Schedule, backref="seats", column_name="schedule_id", index=False)
    number = pw.IntegerField()
    price = pw.BigIntegerField()
    status = pw.CharField(max_length=16, default=AVAILABLE, constraints=[pw.SQL("DEFAULT 'AVAILABLE'")])
    version = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])

    class Meta:
        table_name = "seats"
        indexes = (
            (("schedule_id", "number"), True),
            (("schedule_id", "status"), False),
        )


@dataclass(frozen=True)
class ConcertView:
    """A concert as the API shows it."""

    concert_id: int
    title: str
    venue: str


@dataclass(frozen=True)
class ScheduleView:
    """A schedule with its seat counts."""

    schedule_id: int
    concert_id: int
    starts_at: dt.datetime
    total_seats: int
    available_seats: int


@dataclass(frozen=True)
class SeatView:
    """One seat of a seat map."""

    seat_id: int
    number: int
    price: int
    status: str


@dataclass(frozen=True)
class NewSchedule:
    """Input for create_concert: one schedule to create with its seats."""

    starts_at: dt.datetime
    seat_count: int
    price: int


@replica_read
def list_concerts() -> list[ConcertView]:
    """All concerts, oldest first."""
    rows = Concert.select(Concert.id, Concert.title, Concert.venue).order_by(Concert.id)
    return [ConcertView(r.id, r.title, r.venue) for r in rows]


def get_schedule(*, schedule_id: int) -> Schedule:
    """One schedule, or NotFound."""
    schedule = Schedule.get_or_none(Schedule.id == schedule_id)
    if schedule is None:
        raise NotFound(f"schedule {schedule_id} does not exist")
    return schedule


@replica_read
def list_schedules(*, concert_id: int) -> list[ScheduleView]:
    """A concert's schedules with total and available seat counts, by start time."""
    if not Concert.select().where(Concert.id == concert_id).exists():
        raise NotFound(f"concert {concert_id} does not exist")
    schedules = list(Schedule.select().where(Schedule.concert == concert_id).order_by(Schedule.starts_at, Schedule.id))
    available = available_counts(schedule_ids=[s.id for s in schedules])
    return [ScheduleView(s.id, concert_id, s.starts_at, s.total_seats, available.get(s.id, 0)) for s in schedules]


def available_counts(*, schedule_ids: Sequence[int]) -> dict[int, int]:
    """Count AVAILABLE seats per schedule (uses the seats(schedule_id, status) index)."""
    if not schedule_ids:
        return {}
    query = (
        Seat.select(Seat.schedule, pw.fn.COUNT(Seat.id).alias("n"))
        .where(Seat.schedule.in_(list(schedule_ids)), Seat.status == AVAILABLE)
        .group_by(Seat.schedule)
        .tuples()
    )
    return {int(row[0]): int(row[1]) for row in query.execute()}  # type: ignore[index]


@replica_read
def seat_map(*, schedule_id: int, status: str | None = None) -> list[SeatView]:
    """The seats of a schedule by number, optionally only those with one status."""
    if status is not None and status not in SEAT_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(SEAT_STATUSES)}")
    get_schedule(schedule_id=schedule_id)
    query = Seat.select(Seat.id, Seat.number, Seat.price, Seat.status).where(Seat.schedule == schedule_id)
    if status is not None:
        query = query.where(Seat.status == status)
    rows: Any = query.order_by(Seat.number).tuples()
    return [SeatView(*row) for row in rows]


def create_concert(
    *, title: str, venue: str, schedules: Sequence[NewSchedule], sale_opens_at: dt.datetime | None = None
) -> tuple[int, list[ScheduleView]]:
    """Create a concert with its schedules and their seats numbered 1..seat_count, in one transaction.

    With `sale_opens_at` (naive UTC) the concert has a fair start: a secret seed is fixed now and
    its SHA-256 published (models/fairness.py)."""
    if not title.strip() or not venue.strip():
        raise ValidationError("title and venue must not be blank")
    if not schedules:
        raise ValidationError("a concert needs at least one schedule")
    for s in schedules:
        if not 1 <= s.seat_count <= MAX_SEATS_PER_SCHEDULE:
            raise ValidationError(f"seatCount must be 1..{MAX_SEATS_PER_SCHEDULE}")
        if s.price < 0:
            raise ValidationError("price must not be negative")
    created: list[ScheduleView] = []
    with db.atomic():
        seed = fairness.new_seed() if sale_opens_at is not None else None
        concert = Concert.create(
            title=title.strip(),
            venue=venue.strip(),
            sale_opens_at=sale_opens_at,
            seed_hex=seed.hex() if seed else None,
            seed_commitment=fairness.commitment_of(seed) if seed else None,
        )
        for s in schedules:
            schedule = Schedule.create(concert=concert, starts_at=s.starts_at, total_seats=s.seat_count)
            rows = [(schedule.id, n, s.price) for n in range(1, s.seat_count + 1)]
            for start in range(0, len(rows), 500):
                Seat.insert_many(rows[start : start + 500], fields=[Seat.schedule, Seat.number, Seat.price]).execute()
            created.append(ScheduleView(schedule.id, concert.id, s.starts_at, s.seat_count, s.seat_count))
    return concert.id, created


def concert_id_of_schedule(*, schedule_id: int) -> int:
    """The concert a schedule belongs to (schedules never move), or NotFound."""
    return _concert_of_schedule(schedule_id)


@functools.lru_cache(maxsize=65_536)
def _concert_of_schedule(schedule_id: int) -> int:
    row = Schedule.select(Schedule.concert).where(Schedule.id == schedule_id).tuples().first()
    if row is None:
        raise NotFound(f"schedule {schedule_id} does not exist")
    return int(row[0])


_KNOWN_CONCERTS: set[int] = set()


def concert_exists(*, concert_id: int) -> bool:
    """True if the concert exists. Concerts are never deleted, so a yes is remembered per process:
    every `POST /queue/tokens` asks, and at a sale's opening that was one query per fan."""
    if concert_id in _KNOWN_CONCERTS:
        return True
    if Concert.select().where(Concert.id == concert_id).exists():
        _KNOWN_CONCERTS.add(concert_id)
        return True
    return False


def forget_cached() -> None:
    """Drop the per-process memos (tests that recreate the schema)."""
    _KNOWN_CONCERTS.clear()
    _concert_of_schedule.cache_clear()


def is_sold_out(*, concert_id: int) -> bool:
    """True when no seat of the concert can still be sold: none AVAILABLE and none HELD (a hold may
    still lapse back to AVAILABLE). Uses the (schedule_id, status) index."""
    sellable = Seat.status.in_([AVAILABLE, HELD])
    return not Seat.select(Seat.id).join(Schedule).where(Schedule.concert == concert_id, sellable).exists()


@replica_read
def seat_counts(*, concert_id: int) -> dict[str, int]:
    """Seats of every schedule of the concert by status (every status present, 0 when none)."""
    query = (
        Seat.select(Seat.status, pw.fn.COUNT(Seat.id))
        .join(Schedule)
        .where(Schedule.concert == concert_id)
        .group_by(Seat.status)
        .tuples()
    )
    counts = dict.fromkeys(SEAT_STATUSES, 0)
    counts.update({str(row[0]): int(row[1]) for row in query.execute()})  # type: ignore[index]
    return counts


@replica_read
def concerts_starting_within(*, days: int = 7) -> list[int]:
    """Ids of concerts with a schedule starting in the next `days` days (the cache's warm-up set)."""
    now = utcnow()
    rows = (
        Schedule.select(Schedule.concert)
        .distinct()
        .where(Schedule.starts_at.between(now, now + dt.timedelta(days=days)))
        .tuples()
    )
    return sorted(int(r[0]) for r in rows)


@dataclass(frozen=True)
class SeatRow:
    """A seat's state as a hold reads it."""

    number: int
    price: int
    status: str
    version: int


def seat_row(seat_id: int, schedule_id: int) -> SeatRow | None:
    """The seat's state by primary key, as one prepared statement.

    This read runs for every hold request, and under contention most requests stop here
    (SEAT_NOT_AVAILABLE); building the query with the ORM each time cost more CPU than the
    round trip (profiled in bench/pipeline_bench.py), so the SQL text is fixed.
    """
    p = db.param
    cursor = db.execute_sql(
        f"SELECT number, price, status, version FROM seats WHERE id = {p} AND schedule_id = {p}",
        (seat_id, schedule_id),
    )
    row = cursor.fetchone()
    return SeatRow(int(row[0]), int(row[1]), str(row[2]), int(row[3])) if row else None


def seat_states(*, seat_ids: Iterable[int]) -> dict[int, tuple[int, int, str]]:
    """Each seat's committed (schedule id, number, status), in one query on the primary.

    The partition's batch reads its holds' seats with it, and the hot-seat mark refresh
    (workers/marks.py) re-reads the seats it keeps marked, up to thousands every 0.3 s: the ids
    are integers written into fixed SQL text, not an ORM query (peewee built a parameter object per
    id: 2,000 seats cost ~40 ms of CPU to read, 2026-12-03).
    """
    ids = sorted({int(i) for i in seat_ids})
    if not ids:
        return {}
    cursor = db.execute_sql(
        f"SELECT id, schedule_id, number, status FROM seats WHERE id IN ({','.join(map(str, ids))})"
    )
    return {int(r[0]): (int(r[1]), int(r[2]), str(r[3])) for r in cursor.fetchall()}
