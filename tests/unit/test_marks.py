"""workers/marks.py: a partition keeps its hot seats' quick-refusal marks fresh while they stay taken."""

from __future__ import annotations

import pytest
from flask import Flask

from config.bootstrap import current
from models import quick_refusal
from models.concerts import Schedule, Seat
from models.seed import seed_demo
from tests.support.helpers import hold_directly
from tests.unit.test_batch import hold_message
from workers.jobs import JobStore
from workers.marks import MarkKeeper


@pytest.fixture
def seats(app: Flask) -> list[Seat]:
    concert_id = seed_demo()
    schedule = Schedule.select().where(Schedule.concert == concert_id).order_by(Schedule.id).first()
    return list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number))


def test_a_taken_hot_seat_is_marked_again_from_each_refresh_and_a_free_one_is_never_marked(seats):
    """Marks written in one burst lapse together 900 ms later and let a wave of holds through as
    jobs; the keeper writes them again from a fresh read while the seat stays taken.

    Hidden ways it fails: a mark written for a seat that is AVAILABLE (SPEC §3: never refuse a
    free seat), a mark whose expiry is not counted from the refresh's read (TTL beyond 900 ms),
    seats other than hold requests' remembered, a seat asked for once refreshed (the cost of a
    refresh would grow with every seat sold), or a seat kept after nobody asked for it."""
    r = current().redis
    store = JobStore(r)
    taken, free = seats[0], seats[1]
    hold_directly(taken, user_id=1)
    keeper = MarkKeeper(r, refresh_s=0.0, forget_after_s=60)
    keeper.seen([hold_message(store, 2, taken), hold_message(store, 3, free), hold_message(store, 4, seats[2])])
    keeper.tick()
    assert keeper.seats == {} and keeper.refreshed == 0  # each asked for once: not hot, nothing to refresh
    keeper.seen([hold_message(store, 5, taken), hold_message(store, 6, free)])

    keeper.tick()

    mark = r.get(quick_refusal.taken_key(taken.schedule_id, taken.id))
    assert mark is not None and "is held" in (mark.decode() if isinstance(mark, bytes) else mark)
    assert 0 < r.pttl(quick_refusal.taken_key(taken.schedule_id, taken.id)) <= quick_refusal.TTL_MS
    assert r.get(quick_refusal.taken_key(free.schedule_id, free.id)) is None
    assert set(keeper.seats) == {taken.id}  # the free seat is forgotten until it is asked for again

    # The seat is released (the release path deletes the mark): the next refresh writes nothing.
    Seat.update(status="AVAILABLE").where(Seat.id == taken.id).execute()
    r.delete(quick_refusal.taken_key(taken.schedule_id, taken.id))
    keeper.tick()
    assert r.get(quick_refusal.taken_key(taken.schedule_id, taken.id)) is None
    assert keeper.seats == {}


def test_a_seat_nobody_asked_for_lately_is_forgotten(seats):
    r = current().redis
    hold_directly(seats[0], user_id=1)
    keeper = MarkKeeper(r, refresh_s=0.0, forget_after_s=0.0)
    keeper.seen([hold_message(JobStore(r), 2, seats[0]), hold_message(JobStore(r), 3, seats[0])])
    keeper.tick()
    assert keeper.seats == {} and r.get(quick_refusal.taken_key(seats[0].schedule_id, seats[0].id)) is None
