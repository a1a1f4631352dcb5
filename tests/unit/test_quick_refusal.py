"""models/quick_refusal.py's pending marks and claim_or_follow: a seat's first
queued hold answers the holds that come after it, without a doomed job of their own, and never
refuses a seat on an end that says nothing about now (SPEC §3: a seat AVAILABLE for more than 1 s
is never refused)."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask

from config.bootstrap import current
from models import quick_refusal
from models.errors import LimitExceeded, SeatNotAvailable, problem_of
from models.redis_support import scripts_in_one_round_trip
from workers.jobs import JobStore, done_key, job_key

SCHEDULE, SEAT = 1, 7


def edge_mark(seat_id: int = SEAT) -> object:
    """The mark as POST /reservations reads it in its gate round trip."""
    r = current().redis
    (reply,) = scripts_in_one_round_trip(r, [quick_refusal.check_call(r, schedule_id=SCHEDULE, seat_id=seat_id)])
    return reply


def follow(job_id: str, mark: object, wait: float = 2.0) -> SeatNotAvailable | None:
    r = current().redis
    return quick_refusal.claim_or_follow(
        r, JobStore(r), schedule_id=SCHEDULE, seat_id=SEAT, job_id=job_id, mark=mark, wait=wait
    )


def queued(job_id: str) -> None:
    store = JobStore(current().redis)
    store.create(job_type="RESERVATION", user_id=1, job_id=job_id)


def test_of_many_holds_that_found_no_mark_only_the_first_claims_the_seat_and_a_pending_mark_refuses_nobody(app: Flask):
    r = current().redis
    assert quick_refusal.claim(r, schedule_id=SCHEDULE, seat_id=SEAT, job_id="first") is None
    again = quick_refusal.claim(r, schedule_id=SCHEDULE, seat_id=SEAT, job_id="second")

    pending = quick_refusal.pending_of(again)
    assert pending is not None and pending.job_id == "first"
    assert quick_refusal.refusal_of(again) is None  # pending: nothing is known about the seat yet
    assert quick_refusal.refusal_of(edge_mark()) is None
    assert quick_refusal.pending_of(edge_mark()) is not None
    assert 0 < r.pttl(quick_refusal.taken_key(SCHEDULE, SEAT)) <= quick_refusal.PENDING_TTL_MS
    # a taken mark is never replaced by a claim
    r.set(quick_refusal.taken_key(SCHEDULE, 8), "seat 8 is held", px=900)
    assert quick_refusal.claim(r, schedule_id=SCHEDULE, seat_id=8, job_id="third") in (
        "seat 8 is held",
        b"seat 8 is held",
    )


def test_a_hold_behind_a_queued_first_hold_is_answered_by_its_end_with_no_job_of_its_own(app: Flask):
    queued("first")
    assert follow("first", None) is None  # claimed: the first hold is sent
    store = JobStore(current().redis)
    answers: list[SeatNotAvailable | None] = []
    waiter = threading.Thread(target=lambda: answers.append(follow("second", edge_mark())))
    waiter.start()
    time.sleep(0.2)  # the second hold waits on the first one's end
    assert waiter.is_alive()

    store.succeed("first", {"reservationId": 1, "seatId": SEAT, "seatNumber": 7, "status": "HELD"})
    waiter.join(5)

    assert [str(a) for a in answers] == ["seat 7 is held"]
    assert not current().redis.exists(job_key("second"))  # no job was recorded for it


def test_a_followed_hold_that_failed_for_its_own_reason_hands_the_seat_to_the_next(app: Flask):
    """The first asker was over its hold limit: the seat is still free, the follower claims it."""
    queued("first")
    assert follow("first", None) is None
    JobStore(current().redis).fail("first", problem_of(LimitExceeded("you already hold 4 seats")))

    assert follow("second", edge_mark()) is None
    assert quick_refusal.pending_of(edge_mark()).job_id == "second"  # type: ignore[union-attr]


def test_a_pending_mark_left_by_a_hold_that_ended_long_ago_refuses_nothing(app: Flask):
    """The hold took the seat, its mark's replacement was lost (a crash after the commit), and the
    seat was released since: an end more than TTL_MS before the read says nothing about now."""
    r = current().redis
    queued("first")
    assert follow("first", None) is None
    JobStore(r).succeed("first", {"reservationId": 1, "seatId": SEAT, "seatNumber": 7, "status": "HELD"})
    mark = edge_mark()
    pending = quick_refusal.pending_of(mark)
    assert pending is not None
    stale = quick_refusal.Pending(pending.job_id, pending.mark, pending.checked_ms + quick_refusal.TTL_MS + 100)

    assert (
        quick_refusal.refusal_after(
            stale, status="SUCCEEDED", result={"seatNumber": 7}, error=None, finished_ms=pending.checked_ms
        )
        is None
    )
    # Through the follow: the job's record says it finished 2 s before the check.
    element = r.lrange(done_key("first"), 0, -1)[0]
    text = element.decode() if isinstance(element, bytes) else element
    old = str(int(text.split("\nfinished\n")[1].split("\n")[0]) - 2000)
    r.delete(done_key("first"))
    r.hset(job_key("first"), "finished", old)
    assert follow("second", mark) is None  # claims the seat in turn: its own hold decides


@pytest.mark.parametrize("code", ["SEAT_NOT_AVAILABLE", "NOT_FOUND"])
def test_only_a_fresh_end_that_saw_the_seat_taken_refuses(app: Flask, code: str):
    pending = quick_refusal.Pending("j", "pending:j", 1_000_000)
    error = {"code": code, "detail": "seat 7 is sold"}
    refusal = quick_refusal.refusal_after(pending, status="FAILED", result=None, error=error, finished_ms=1_000_000)
    assert (refusal is not None) == (code == "SEAT_NOT_AVAILABLE")
    assert refusal is None or str(refusal) == "seat 7 is sold"
