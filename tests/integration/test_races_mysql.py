"""The races SPEC §5 must survive, on MariaDB with real threads and exact outcomes.

No partition queue serialises anything here: every thread calls the domain function (or the
HTTP route) directly on its own connection, so only the database's compare-and-sets and unique
keys stand between the threads and a broken invariant. A deadlock victim (InnoDB rolled it
back) is run again, as workers/dispatch.py does with every transient database error: paying
and expiring one reservation at once deadlocks now and then (the payment's foreign-key check
holds a shared lock on the reservation row that both then want to update).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest
from flask import Flask

from models import check, payments, points, reservations
from models.concerts import Seat
from models.db import db, utcnow
from models.errors import ConcurrentUpdate, DomainError
from models.payments import Payment
from models.points import LedgerEntry, Wallet
from models.reservations import Reservation
from models.seed import seed_demo
from tests.support.helpers import API, hold, hold_directly, problem_of, run_in_threads, user_headers

pytestmark = pytest.mark.integration

PRICE = 50_000  # every demo seat
BIG = 10_000_000
DEADLOCK = 1213  # ER_LOCK_DEADLOCK: InnoDB rolled the victim back


def charge(user_id: int, amount: int) -> None:
    points.charge(user_id=user_id, amount=amount, max_charge=BIG, max_balance=BIG)


def balance(user_id: int) -> int:
    return points.get_balance(user_id=user_id).balance


def run_together(calls: list[Callable[[], Any]], timeout: float = 60, connect: bool = True) -> list[Any]:
    """Run each call in its own thread (with its own database connection unless the call opens
    one itself, as an HTTP request does), released at once; each call's result or the
    DomainError it raised (any other exception fails the test in the main thread)."""

    def answer(call: Callable[[], Any]) -> Any:
        try:
            with db.connection_context() if connect else contextlib.nullcontext():
                return call()
        except DomainError as exc:
            return exc

    return run_in_threads([lambda c=c: answer(c) for c in calls], timeout)


def code(result: Any) -> str:
    return result.code if isinstance(result, DomainError) else "OK"


@pytest.fixture
def seats(live_app: Flask) -> list[Seat]:
    """The demo concert on a fresh MariaDB schema: 2 schedules x 50 seats at 50,000 points."""
    seed_demo()
    return list(Seat.select().order_by(Seat.id))


# --- invariant 1: concurrent direct holds ------------------------------------------------------
def test_sixteen_concurrent_direct_holds_of_one_seat_give_exactly_one_reservation_ten_times(seats):
    # Given 10 seats, and for each 16 users who call hold_seat on it at the same moment
    for seat in seats[:10]:
        users = range(1000 + 100 * seat.id, 1000 + 100 * seat.id + 16)

        # When they all hold it at once, each on its own connection
        results = run_together([lambda u=u, s=seat: hold_directly(s, u) for u in users])

        # Then exactly one won and 15 were told the seat is taken
        assert Counter(code(r) for r in results) == {"OK": 1, "SEAT_NOT_AVAILABLE": 15}, results
        winner = next(r for r in results if code(r) == "OK")
        live = Reservation.select().where((Reservation.seat == seat.id) & Reservation.status.in_(["HELD", "CONFIRMED"]))
        assert [(r.id, r.user_id) for r in live] == [(winner.reservation_id, winner.user_id)]
        assert Seat.get_by_id(seat.id).status == "HELD"
    assert check.violations() == []


def test_the_unique_key_alone_refuses_a_second_hold_when_the_seat_row_says_available(seats):
    # Given a held seat whose row was set back to AVAILABLE behind the domain's back
    seat = seats[0]
    first = hold(seat, 1)
    db.execute_sql("UPDATE seats SET status = 'AVAILABLE' WHERE id = %s", (seat.id,))

    # When another user holds it: the seat's compare-and-set passes, only the unique key is left
    with pytest.raises(DomainError) as refused:
        hold_directly(seat, 2)

    # Then the database refuses the second live reservation
    assert refused.value.code == "SEAT_NOT_AVAILABLE"
    live = Reservation.select().where((Reservation.seat == seat.id) & Reservation.live_seat_id.is_null(False))
    assert [r.id for r in live] == [first]


# --- invariant 2: pay versus expiry --------------------------------------------------------------
def test_pay_racing_expiry_ends_either_paid_or_expired_never_both_forty_times(seats):
    # Given 40 held seats of one payer who can afford all of them, and an expiry sweep whose
    # clock is an hour ahead (so both the payment and the expiry are allowed to go first)
    payer, rounds = 7, 40
    charge(payer, rounds * PRICE)
    held = [hold_directly(seat, payer, max_holds=rounds).reservation_id for seat in seats[:rounds]]
    later = utcnow() + dt.timedelta(hours=1)
    outcomes: Counter[str] = Counter()

    deadlocks: Counter[str] = Counter()

    def as_the_worker_runs(name: str, call: Callable[[], Any], delay: float = 0.0) -> Any:
        """Run a domain call as workers/dispatch does: a deadlock victim (rolled back) runs again."""
        time.sleep(delay)
        while True:
            try:
                return call()
            except pw.OperationalError as exc:
                if exc.args[0] != DEADLOCK:
                    raise
                deadlocks[name] += 1

    for k, rid in enumerate(held):
        # When the payment and the expiry of one reservation start together, the expiry a
        # little later each round (0-7.8 ms: the payment's transaction takes a few ms, so the
        # expiry lands before, inside and after it)
        paid, expired = run_together(
            [
                lambda r=rid: as_the_worker_runs(
                    "pay", lambda: payments.pay(reservation_id=r, user_id=payer, job_id=uuid.uuid4().hex)
                ),
                lambda r=rid, d=(k % 40) * 0.0002: as_the_worker_runs(
                    "expire", lambda: reservations.expire_hold(reservation_id=r, now=later), d
                ),
            ]
        )

        # Then exactly one of them happened, completely
        r = Reservation.get_by_id(rid)
        seat = Seat.get_by_id(r.seat_id)
        payment = Payment.get_or_none(Payment.reservation == rid)
        if code(paid) == "OK":
            assert expired is None, f"reservation {rid} was paid and expired"
            assert (r.status, seat.status, payment is not None) == ("CONFIRMED", "RESERVED", True)
            outcomes["paid"] += 1
        else:
            assert code(paid) == "RESERVATION_NOT_HELD", paid
            assert expired is not None and expired.status == "EXPIRED"
            assert (r.status, seat.status, payment) == ("EXPIRED", "AVAILABLE", None)
            outcomes["expired"] += 1

    print(f"pay vs expire: {dict(outcomes)}, deadlock victims run again: {dict(deadlocks)}")
    assert sum(outcomes.values()) == rounds
    assert balance(payer) == (rounds - outcomes["paid"]) * PRICE
    assert Payment.select().count() == outcomes["paid"]
    assert check.violations() == []


def test_an_expiry_that_read_the_hold_before_the_payment_changes_nothing(seats):
    # Given the expiry sweep has read a HELD reservation, and then the payment commits
    payer = 8
    charge(payer, PRICE)
    rid = hold(seats[0], payer)
    stale = Reservation.get_by_id(rid)
    payments.pay(reservation_id=rid, user_id=payer, job_id=uuid.uuid4().hex)

    # When the expiry writes from what it read
    with pytest.raises(ConcurrentUpdate):
        reservations._release(stale, reservations.EXPIRED)

    # Then its compare-and-set matched nothing: the reservation stays paid, the seat sold
    assert Reservation.get_by_id(rid).status == "CONFIRMED"
    assert Seat.get_by_id(seats[0].id).status == "RESERVED"
    assert reservations.expire_hold(reservation_id=rid, now=utcnow() + dt.timedelta(hours=1)) is None
    assert check.violations() == []


# --- invariant 3: concurrent spending --------------------------------------------------------------
def test_eight_concurrent_payments_from_a_balance_that_covers_three_pay_exactly_three(seats):
    # Given a wallet holding the price of 3 seats, and 8 held seats of its owner
    payer, holds, affordable = 9, 8, 3
    charge(payer, affordable * PRICE)
    held = [hold_directly(seat, payer, max_holds=holds).reservation_id for seat in seats[:holds]]

    def pay(rid: int) -> Any:
        """Pay as a client does: a 409 CONCURRENT_UPDATE is retried, any other answer is final."""
        job_id = uuid.uuid4().hex
        while True:
            try:
                return payments.pay(reservation_id=rid, user_id=payer, job_id=job_id)
            except ConcurrentUpdate:
                continue

    # When all 8 are paid at the same moment
    results = run_together([lambda r=rid: pay(r) for rid in held])

    # Then exactly 3 were paid and 5 refused for want of points; the balance never went below 0
    assert Counter(code(r) for r in results) == {"OK": affordable, "INSUFFICIENT_POINTS": holds - affordable}
    assert balance(payer) == 0
    entries = list(LedgerEntry.select().where(LedgerEntry.user_id == payer).order_by(LedgerEntry.id))
    assert [e.balance_after for e in entries] == [affordable * PRICE - k * PRICE for k in range(affordable + 1)]
    assert Wallet.get_by_id(payer).balance == sum(e.amount for e in entries) == 0
    assert Payment.select().where(Payment.user_id == payer).count() == affordable
    assert check.violations() == []


# --- the real CONCURRENT_UPDATE, over HTTP ------------------------------------------------------
def test_contended_charges_reach_a_real_409_concurrent_update_with_retry_after_and_lose_nothing(
    live_app: Flask,
) -> None:
    # Given 50 clients charging one wallet at the same moment, without retrying, round after
    # round until the wallet's compare-and-set has lost CHARGE_ATTEMPTS times in a row for one
    user, amount, threads = 4343, 100, 50
    conflicts: list[Any] = []
    accepted = 0
    for _ in range(20):
        responses = run_together(
            [
                lambda: live_app.test_client().post(
                    f"{API}/users/{user}/points/charge", json={"amount": amount}, headers=user_headers(user)
                )
                for _ in range(threads)
            ],
            connect=False,
        )
        assert {r.status_code for r in responses} <= {200, 409}, [r.get_json() for r in responses]
        accepted += sum(r.status_code == 200 for r in responses)
        conflicts += [r for r in responses if r.status_code == 409]
        if conflicts:
            break

    # Then a 409 came from the database itself, with its problem code and Retry-After
    assert conflicts, "20 rounds of 50 concurrent charges never lost the compare-and-set 5 times"
    for response in conflicts:
        assert problem_of(response)["code"] == "CONCURRENT_UPDATE"
        assert int(response.headers["Retry-After"]) >= 1
    # And a refused charge wrote nothing: the balance is exactly the accepted ones
    assert balance(user) == accepted * amount
    assert LedgerEntry.select().where(LedgerEntry.user_id == user).count() == accepted
    assert check.violations() == []
