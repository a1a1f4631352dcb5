"""Group commit for expiries (workers/expiries.py, models.reservations.expire_holds) on the unit tier.

A partition's run of `expire_hold` messages expires in one transaction with each row still
compare-and-set; the other messages keep their places; a group that cannot run falls back to
the serial path, with the same outcome.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from flask import Flask

from config.bootstrap import current
from models import quick_refusal
from models import reservations as domain
from models.concerts import AVAILABLE, HELD, Schedule, Seat
from models.db import db, utcnow
from models.reservations import Reservation
from models.seed import seed_demo
from tests.support.helpers import hold_directly
from tests.unit.test_batch import Counting, hold_message, outcome
from workers.batch import SeatBatch, partition_worker
from workers.dispatch import handle
from workers.expiries import ExpiryRuns
from workers.jobs import SUCCEEDED, JobStore
from workers.reservations import expire_hold


@pytest.fixture
def seats(app: Flask) -> list[Seat]:
    concert_id = seed_demo()
    schedule = Schedule.select().where(Schedule.concert == concert_id).order_by(Schedule.id).first()
    return list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number))


def lapsed_hold(user_id: int, seat: Seat) -> int:
    """A HELD reservation of `seat` whose time ran out a minute ago (its quick-refusal mark set, as a hold sets it)."""
    with db.connection_context():
        view = hold_directly(seat, user_id)
        Reservation.update(expires_at=utcnow() - dt.timedelta(minutes=1)).where(
            Reservation.id == view.reservation_id
        ).execute()
    pipe = current().redis.pipeline(transaction=False)
    quick_refusal.mark(
        pipe, schedule_id=seat.schedule_id, seat_id=seat.id, refusal="taken", read_at_ms=quick_refusal.now_ms()
    )
    pipe.execute()
    return int(view.reservation_id)


def expiry_message(reservation_id: int) -> MessageProxy:
    return MessageProxy(
        Message(
            queue_name="seats.p0",
            actor_name=expire_hold.name,
            args=(),
            kwargs={"reservation_id": reservation_id},
            options={},
        )
    )


def state(reservation_id: int) -> tuple[str, str]:
    """(reservation status, its seat's status) as committed."""
    with db.connection_context():
        r = Reservation.get_by_id(reservation_id)
        return r.status, Seat.get_by_id(r.seat_id).status


class Commits:
    """Counts top-level commits and statements on the shared database."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commits = 0
        self.statements = 0
        self.sql: list[str] = []
        real_commit, real_execute = db.obj.commit, db.obj.execute_sql

        def commit(*a: Any, **k: Any) -> Any:
            self.commits += 1
            return real_commit(*a, **k)

        def execute_sql(*a: Any, **k: Any) -> Any:
            self.statements += 1
            self.sql.append(str(a[0])[:60])
            return real_execute(*a, **k)

        monkeypatch.setattr(db.obj, "commit", commit)
        monkeypatch.setattr(db.obj, "execute_sql", execute_sql)


def test_a_run_of_ten_expiries_commits_once_frees_every_seat_and_clears_every_mark(seats, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ids = [lapsed_hold(user, seats[user]) for user in range(1, 11)]
    serial = Counting()
    runs = ExpiryRuns(SeatBatch(current().redis, serial, stale_after_s=60), serial)
    counted = Commits(monkeypatch)

    runs([expiry_message(rid) for rid in ids])
    commits, statements = counted.commits, counted.statements

    # one transaction of a fixed size: 2 reads, 2 UPDATEs (a compare-and-set per row inside each),
    # then 1 seat read for the write-through (one by one: 10 commits)
    assert commits == 1
    assert statements == 5, "\n".join(counted.sql)
    assert [state(rid) for rid in ids] == [("EXPIRED", AVAILABLE)] * 10
    assert serial.calls == [] and runs.grouped == 10
    r = current().redis
    assert [r.get(quick_refusal.taken_key(seats[u].schedule_id, seats[u].id)) for u in range(1, 11)] == [None] * 10


def test_a_hold_sent_between_two_runs_of_expiries_is_decided_in_its_place(seats) -> None:  # type: ignore[no-untyped-def]
    store = JobStore(current().redis)
    first = [lapsed_hold(user, seats[user]) for user in (1, 2)]
    second = [lapsed_hold(user, seats[user]) for user in (3, 4)]
    early = hold_message(store, 20, seats[3])  # before seat 3's hold expires: refused
    late = hold_message(store, 21, seats[1])  # after seat 1's hold expired: wins it
    runs = ExpiryRuns(SeatBatch(current().redis, handle, stale_after_s=60), handle)

    runs([early, *map(expiry_message, first), late, *map(expiry_message, second)])

    assert outcome(store, early) == ("FAILED", "SEAT_NOT_AVAILABLE")
    assert outcome(store, late) == (SUCCEEDED, 21)
    assert [state(rid)[0] for rid in first + second] == ["EXPIRED"] * 4
    assert state(second[0])[1] == AVAILABLE and state(first[0])[1] == HELD  # seat 1 held again, by user 21
    assert runs.grouped == 4


def test_holds_not_due_or_no_longer_held_are_left_as_they_are(seats) -> None:  # type: ignore[no-untyped-def]
    due = lapsed_hold(1, seats[1])
    with db.connection_context():
        live = hold_directly(seats[2], 2).reservation_id  # 5 minutes left
    paid = lapsed_hold(3, seats[3])
    with db.connection_context():
        Reservation.update(status="CONFIRMED").where(Reservation.id == paid).execute()
    runs = ExpiryRuns(SeatBatch(current().redis, handle, stale_after_s=60), handle)

    runs([expiry_message(rid) for rid in (due, live, paid, 999_999)])

    assert state(due) == ("EXPIRED", AVAILABLE)
    assert state(live) == ("HELD", HELD)
    assert state(paid)[0] == "CONFIRMED"


def test_a_compare_and_set_lost_inside_the_group_rolls_it_back_and_each_expiry_runs_one_by_one(
    seats, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    ids = [lapsed_hold(user, seats[user]) for user in range(1, 5)]
    real_select = Seat.select
    stale = {"done": False}

    def select(*fields: Any) -> Any:  # the group's seat read returns one seat with an old version
        query = real_select(*fields)
        if not stale["done"] and not fields:
            stale["done"] = True
            rows = list(query)
            rows[0].version -= 1
            return rows
        return query

    monkeypatch.setattr(Seat, "select", select)
    calls: list[list[int]] = []
    real_expire = domain.expire_hold
    monkeypatch.setattr(domain, "expire_hold", lambda **kw: calls.append([kw["reservation_id"]]) or real_expire(**kw))
    runs = ExpiryRuns(SeatBatch(current().redis, handle, stale_after_s=60), handle)

    runs([expiry_message(rid) for rid in ids])

    assert calls == [[rid] for rid in ids]  # the fallback decided each one
    assert [state(rid) for rid in ids] == [("EXPIRED", AVAILABLE)] * 4
    with db.connection_context():
        assert [s.version for s in real_select().where(Seat.id.in_([seats[u].id for u in range(1, 5)]))] == [2] * 4


def test_a_group_that_cannot_reach_the_database_hands_every_expiry_to_the_serial_path(seats, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ids = [lapsed_hold(user, seats[user]) for user in range(1, 4)]

    def broken(**kw: Any) -> Any:
        raise domain.pw.OperationalError("server has gone away")

    monkeypatch.setattr(domain, "expire_holds", broken)
    serial = Counting()
    runs = ExpiryRuns(SeatBatch(current().redis, serial, stale_after_s=60), serial)

    runs([expiry_message(rid) for rid in ids])

    assert serial.calls == ["expire_hold"] * 3
    assert [state(rid) for rid in ids] == [("EXPIRED", AVAILABLE)] * 3
    assert runs.grouped == 0


def test_the_partition_worker_groups_expiries(app: Flask) -> None:
    worker = partition_worker(current())
    assert isinstance(worker.batch, ExpiryRuns)
