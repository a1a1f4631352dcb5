"""Group commit of holds (models/group_holds.py, workers/group.py) on the unit tier."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from flask import Flask

from config.bootstrap import current
from models import check
from models.concerts import Schedule, Seat
from models.errors import LimitExceeded, SeatNotAvailable
from models.group_holds import HoldRequest, hold_seats
from models.reservations import Reservation
from models.seed import seed_demo
from tests.support.helpers import hold_directly
from tests.unit.test_batch import Counting, hold_message
from workers.batch import SeatBatch
from workers.group import HoldGroup
from workers.jobs import FAILED, SUCCEEDED, JobStore


@pytest.fixture
def seats(app: Flask) -> list[Seat]:
    concert_id = seed_demo()
    schedule = Schedule.select().where(Schedule.concert == concert_id).order_by(Schedule.id).first()
    return list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number))


def request(user_id: int, seat: Seat, job_id: str | None = None) -> HoldRequest:
    return HoldRequest(user_id, seat.schedule_id, seat.id, job_id or uuid.uuid4().hex)


def test_a_group_holds_each_free_seat_once_and_answers_each_taken_or_over_limit_hold(seats):
    hold_directly(seats[0], 99)  # taken before the group
    holds = [request(1, seats[0]), request(2, seats[1]), request(3, seats[2]), request(4, seats[3])]
    holds += [request(4, seats[4]), request(4, seats[5])]  # user 4's third hold with max_holds=2

    outcomes = hold_seats(holds=holds, hold_ttl=300, max_holds=2, max_extensions=2)

    assert outcomes is not None
    assert isinstance(outcomes[0], SeatNotAvailable)
    assert isinstance(outcomes[5], LimitExceeded)
    assert [(o.user_id, o.seat_id, o.status) for o in outcomes[1:5]] == [  # type: ignore[union-attr]
        (2, seats[1].id, "HELD"),
        (3, seats[2].id, "HELD"),
        (4, seats[3].id, "HELD"),
        (4, seats[4].id, "HELD"),
    ]
    assert outcomes[1].extensions_left == 2  # type: ignore[union-attr]
    assert Reservation.select().count() == 5
    assert (
        sorted(s.status for s in Seat.select().where(Seat.id.in_([s.id for s in seats[:6]])))
        == ["AVAILABLE"] + ["HELD"] * 5
    )
    assert check.violations() == []


def test_a_unique_key_conflict_rolls_the_whole_group_back(seats):
    taken_job = hold_directly(seats[9], 50, job_id="already-used")
    assert taken_job is not None

    outcomes = hold_seats(
        holds=[request(1, seats[0]), request(2, seats[1], job_id="already-used")], hold_ttl=300, max_holds=4
    )

    assert outcomes is None  # the caller runs them one by one
    assert Reservation.select().count() == 1
    assert Seat.get_by_id(seats[0].id).status == "AVAILABLE"


def test_a_batch_commits_its_holds_on_free_seats_as_one_group_with_the_answers_of_one_by_one(seats):
    store = JobStore(current().redis)
    settings = current().settings
    serial = Counting()
    group = HoldGroup(store, serial, stale_after_s=30, hold_ttl=300, max_holds=settings.max_holds_per_user)
    batch = SeatBatch(current().redis, serial, stale_after_s=30, group=group)
    # 8 holds on 8 free seats, then 8 more on the same seats by other users
    messages = [hold_message(store, 100 + i, seats[i]) for i in range(8)]
    messages += [hold_message(store, 200 + i, seats[i]) for i in range(8)]

    batch(messages)

    jobs = [store.get(m.kwargs["job_id"]) for m in messages]
    assert Counter(j.status for j in jobs[:8]) == {SUCCEEDED: 8}
    assert Counter((j.status, j.error["code"]) for j in jobs[8:]) == {(FAILED, "SEAT_NOT_AVAILABLE"): 8}
    assert group.committed == 8 and serial.calls == []  # no hold ran alone
    live = Reservation.select(Reservation.user_id).where(Reservation.status == "HELD").order_by(Reservation.user_id)
    assert [r.user_id for r in live] == list(range(100, 108))
    assert check.violations() == []


@pytest.mark.parametrize("size", [2, 12])
def test_a_group_costs_the_same_statements_whatever_its_size_and_writes_each_seat_through(seats, size):
    """Group commit is only worth having if its cost is per group, not per hold: the same SQL
    statements for 2 holds as for 12, and every held seat written through to the catalogue cache
    and the quick-refusal mark from the state committed (no read back of each seat).

    Hidden ways it fails: a statement per seat (an UPDATE or INSERT per hold, a read per
    write-through), a write-through missed (the edge would queue holds on a held seat), or a
    group whose rows or versions differ from one-by-one holds."""
    from models import quick_refusal
    from models.db import db

    store = JobStore(current().redis)
    group = HoldGroup(store, Counting(), stale_after_s=30, hold_ttl=300, max_holds=2)
    messages = [hold_message(store, 300 + i, seats[i]) for i in range(size)]
    statements: list[str] = []
    real = db.obj.execute_sql

    def counting(sql, params=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        statements.append(sql.split()[0].upper())
        return real(sql, params, *args, **kwargs)

    redis_commands: list[int] = []  # commands per Redis round trip of the group
    real_pipeline = store.r.pipeline

    def counted_pipeline(*args, **kwargs):  # type: ignore[no-untyped-def]
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a, **k):  # type: ignore[no-untyped-def]
            redis_commands.append(len(pipe))
            return real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    db.obj.execute_sql = counting
    store.r.pipeline = counted_pipeline  # type: ignore[method-assign]
    try:
        group(messages)
    finally:
        del db.obj.execute_sql
        del store.r.pipeline
    assert group.committed == size
    assert Counter(statements) == {"SELECT": 2, "UPDATE": 1, "INSERT": 1}, statements
    # Redis: a start and a finish script per job, and per group (not per hold) the cache update,
    # the marks, the open index and the counters (6 commands a hold before 2026-12-03)
    assert len(redis_commands) == 2 and sum(redis_commands) <= 2 * size + 8, redis_commands
    held = Seat.select().where(Seat.id.in_([s.id for s in seats[:size]]))
    assert {(s.status, s.version) for s in held} == {("HELD", 1)}
    r = current().redis
    for seat in seats[:size]:
        mark = r.get(quick_refusal.taken_key(seat.schedule_id, seat.id))
        assert mark is not None and "is held" in (mark.decode() if isinstance(mark, bytes) else mark)
    assert check.violations() == []


def test_a_lone_hold_takes_the_group_path_and_its_outcome_still_writes_one_info_line(seats, caplog):
    """At 32 clients most batches are one hold. One by one it cost four Redis round trips (start,
    write-through, finish, counters) and a read of its seat back; the group's path costs two.

    Hidden ways it fails: a lone hold sent to the serial path, a taken seat not marked for the
    edge, or an outcome with no INFO line (the serial path writes one per job, with its ids)."""
    from models import quick_refusal

    store = JobStore(current().redis)
    settings = current().settings
    serial = Counting()
    group = HoldGroup(store, serial, stale_after_s=30, hold_ttl=300, max_holds=settings.max_holds_per_user)
    batch = SeatBatch(current().redis, serial, stale_after_s=30, group=group)
    hold_directly(seats[1], user_id=1)
    wins, loses = hold_message(store, 300, seats[0]), hold_message(store, 301, seats[1])

    with caplog.at_level("INFO", logger="workers.jobs"):
        batch([wins])
        batch([loses])

    assert store.get(wins.kwargs["job_id"]).status == SUCCEEDED  # type: ignore[union-attr]
    assert store.get(loses.kwargs["job_id"]).error["code"] == "SEAT_NOT_AVAILABLE"  # type: ignore[union-attr,index]
    assert serial.calls == [] and group.committed == 1
    assert current().redis.get(quick_refusal.taken_key(seats[1].schedule_id, seats[1].id)) is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "workers.jobs"]
    assert len(lines) == 2 and lines[0].startswith("hold succeeded") and lines[1].startswith("hold failed")
    assert f"seatId={seats[0].id}" in lines[0] and "SEAT_NOT_AVAILABLE" in lines[1]
