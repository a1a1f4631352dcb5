"""workers/marks.py: a partition keeps its hot seats' quick-refusal marks fresh while they stay taken."""

from __future__ import annotations

import threading
import time

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


def test_a_requested_seat_is_marked_again_from_each_refresh_once_taken_and_a_free_one_is_never_marked(seats):
    """Marks written in one burst lapse together 900 ms later and let a wave of holds through as
    jobs; the keeper writes them again from a fresh read while the seat stays taken.

    Hidden ways it fails: a mark written for a seat that is AVAILABLE (SPEC §3: never refuse a
    free seat), a mark whose expiry is not counted from the refresh's read (TTL beyond 900 ms),
    seats other than hold requests' remembered, a seat forgotten when read free (its winner
    commits next), or a seat kept after nobody asked for it."""
    r = current().redis
    store = JobStore(r)
    taken, free = seats[0], seats[1]
    hold_directly(taken, user_id=1)
    keeper = MarkKeeper(r, refresh_s=0.0, forget_after_s=60)
    keeper.seen([hold_message(store, 2, taken), hold_message(store, 6, free)])

    keeper.tick()

    mark = r.get(quick_refusal.taken_key(taken.schedule_id, taken.id))
    assert mark is not None and "is held" in (mark.decode() if isinstance(mark, bytes) else mark)
    assert 0 < r.pttl(quick_refusal.taken_key(taken.schedule_id, taken.id)) <= quick_refusal.TTL_MS
    assert r.get(quick_refusal.taken_key(free.schedule_id, free.id)) is None
    # the free seat stays remembered, unmarked: the first refresh after its winner commits marks it
    assert set(keeper.seats) == {taken.id, free.id}
    hold_directly(free, user_id=7)
    keeper.tick()
    assert r.get(quick_refusal.taken_key(free.schedule_id, free.id)) is not None

    # The seat is released (the release path deletes the mark): the next refresh writes nothing.
    Seat.update(status="AVAILABLE").where(Seat.id == taken.id).execute()
    r.delete(quick_refusal.taken_key(taken.schedule_id, taken.id))
    keeper.tick()
    assert r.get(quick_refusal.taken_key(taken.schedule_id, taken.id)) is None
    assert set(keeper.seats) == {taken.id, free.id}  # remembered until nobody asked for FORGET_AFTER_S


def test_a_seat_sold_to_its_first_asker_stays_refused_at_the_edge_after_its_commit_mark_lapses(seats):
    """Once the edge refuses a taken seat, the partition never hears of it again: a keeper that
    waited for a second request before keeping a seat's mark let every seat sold to its first
    asker go unmarked 900 ms after the sale, and the attempts of the next few hundred ms queued
    as doomed jobs (170 of 270 jobs at 32 clients, bench/contention_trace.py)."""
    r = current().redis
    store = JobStore(r)
    keeper = MarkKeeper(r, refresh_s=0.0, forget_after_s=60)
    keeper.seen([hold_message(store, 2, seats[3])])  # its only request: the winner's
    hold_directly(seats[3], user_id=2)
    key = quick_refusal.taken_key(seats[3].schedule_id, seats[3].id)
    r.delete(key)  # the commit's own mark has lapsed

    keeper.tick()

    assert r.get(key) is not None
    assert 0 < r.pttl(key) <= quick_refusal.TTL_MS


def test_a_seat_nobody_asked_for_lately_is_forgotten(seats):
    r = current().redis
    hold_directly(seats[0], user_id=1)
    keeper = MarkKeeper(r, refresh_s=0.0, forget_after_s=0.0)
    keeper.seen([hold_message(JobStore(r), 2, seats[0]), hold_message(JobStore(r), 3, seats[0])])
    keeper.tick()
    assert keeper.seats == {} and r.get(quick_refusal.taken_key(seats[0].schedule_id, seats[0].id)) is None


def test_a_background_keeper_keeps_a_hot_seat_refused_while_no_consumer_ticks_and_then_stops(seats):
    """Under load a partition's batch took up to 1.4 s, longer than a mark lives (900 ms): refreshed
    between batches, the marks of a busy partition lapsed and let holds through as jobs, which made
    its batches longer still. A process's keeper refreshes on its own thread instead.

    Hidden ways it fails: a refresh that waits for a consumer's tick (the mark lapses within the
    2 s watched here), a thread that outlives its hot seats, or a thread per call of seen()."""
    r = current().redis
    store = JobStore(r)
    hold_directly(seats[0], user_id=1)
    key = quick_refusal.taken_key(seats[0].schedule_id, seats[0].id)
    keeper = MarkKeeper(r, refresh_s=0.1, forget_after_s=2.5, background=True)
    keeper.seen([hold_message(store, 2, seats[0])])

    samples, deadline = [], time.monotonic() + 2.0
    time.sleep(0.3)  # the first refresh
    while time.monotonic() < deadline:  # nobody calls tick(): a busy consumer
        samples.append(r.get(key) is not None)
        time.sleep(0.05)
    threads = [t for t in threading.enumerate() if t.name == "mark-keeper"]

    assert samples and all(samples), f"the mark lapsed in {samples.count(False)} of {len(samples)} samples"
    assert len(threads) == 1
    assert keeper.tick() == 3600.0  # a consumer never waits for a background keeper
    threads[0].join(timeout=3)  # forgotten 2.5 s after the last request: the thread ends
    assert not threads[0].is_alive() and keeper.seats == {}


def test_requests_noted_by_many_consumer_threads_at_once_are_all_remembered(seats):
    r = current().redis
    store = JobStore(r)
    keeper = MarkKeeper(r, forget_after_s=60)
    messages = {
        s.id: [hold_message(store, 100 + 2 * i, s), hold_message(store, 101 + 2 * i, s)]
        for i, s in enumerate(seats[:16])
    }
    start = threading.Barrier(16)

    def consumer(seat_id: int) -> None:
        start.wait()
        for _ in range(50):
            keeper.seen(messages[seat_id])

    threads = [threading.Thread(target=consumer, args=(seat_id,)) for seat_id in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert set(keeper.seats) == set(messages) and len(keeper.seats) == 16


def test_a_refresh_of_many_seats_costs_one_read_and_a_script_call_per_500_marks(app: Flask):
    """The keeper re-marks every remembered taken seat every 0.3 s; with a SET per seat a refresh of
    2,000 seats cost ~90 ms of a worker's CPU (2026-12-03). Hidden ways it fails: a command per
    seat, a seat left unmarked or marked with another seat's detail, a TTL not counted from the read."""
    import datetime as dt

    from models.concerts import NewSchedule, create_concert
    from models.db import utcnow

    concert_id, _ = create_concert(
        title="Big", venue="Hall", schedules=[NewSchedule(utcnow() + dt.timedelta(days=1), 1000, 10)]
    )
    schedule = Schedule.select().where(Schedule.concert == concert_id).first()
    big = list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number))
    Seat.update(status="HELD").where(Seat.schedule == schedule.id).execute()
    r = current().redis
    keeper = MarkKeeper(r, refresh_s=0.0, forget_after_s=60)
    now = time.monotonic()
    keeper.seats = {s.id: (schedule.id, now) for s in big}
    sent: list[str] = []
    real = r.pipeline

    def counting_pipeline(transaction: bool = False):  # type: ignore[no-untyped-def]
        pipe = real(transaction=False)
        execute = pipe.execute

        def counted(raise_on_error: bool = True):  # type: ignore[no-untyped-def]
            sent.extend(str(args[0]) for args, _ in pipe.command_stack)
            return execute(raise_on_error)

        pipe.execute = counted
        return pipe

    r.pipeline = counting_pipeline  # type: ignore[method-assign]
    try:
        keeper.refresh()
    finally:
        del r.pipeline

    assert keeper.refreshed == 1000
    assert sent == ["EVALSHA"] * 2, sent
    for seat in (big[0], big[499], big[500], big[999]):
        key = quick_refusal.taken_key(schedule.id, seat.id)
        assert r.get(key) in (f"seat {seat.number} is held", f"seat {seat.number} is held".encode())
        assert 0 < r.pttl(key) <= quick_refusal.TTL_MS


def test_marks_written_too_late_to_matter_are_not_written(app: Flask):
    r = current().redis
    read_long_ago = quick_refusal.now_ms() - quick_refusal.TTL_MS - 1
    quick_refusal.mark_many(r, schedule_id=1, refusals=[(5, "seat 5 is held")], read_at_ms=read_long_ago)
    assert r.get(quick_refusal.taken_key(1, 5)) is None
