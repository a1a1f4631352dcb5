"""Seat holds as domain functions (models/reservations.py) on SQLite: hold, cancel, expire, the keys behind them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import peewee as pw
import pytest
from flask import Flask

from models import check, reservations
from models.concerts import AVAILABLE, Schedule, Seat
from models.concerts import HELD as SEAT_HELD
from models.db import utcnow
from models.errors import LimitExceeded, NotFound, ReservationNotHeld, SeatNotAvailable
from models.reservations import CANCELLED, CONFIRMED, EXPIRED, HELD, Reservation
from models.seed import seed_demo
from tests.support.helpers import hold_directly

HOLD_TTL = 300
MAX_HOLDS = 4


@pytest.fixture
def seats(app: Flask) -> Iterator[dict[int, list[Seat]]]:
    """The demo concert: schedule id -> its 50 seats by number."""
    seed_demo()
    yield {
        s.id: list(Seat.select().where(Seat.schedule == s.id).order_by(Seat.number))
        for s in Schedule.select().order_by(Schedule.id)
    }


def hold(seat: Seat, user_id: int, *, job_id: str | None = None, ttl: int = HOLD_TTL) -> reservations.ReservationView:
    return hold_directly(seat, user_id, job_id=job_id, ttl=ttl, max_holds=MAX_HOLDS)  # type: ignore[no-any-return]


def seat_now(seat: Seat) -> Seat:
    return Seat.get_by_id(seat.id)


def first_schedule(seats: dict[int, list[Seat]]) -> list[Seat]:
    return seats[min(seats)]


def test_a_hold_marks_the_seat_held_and_returns_a_held_reservation_expiring_after_the_ttl(seats):
    seat = first_schedule(seats)[6]
    before = utcnow()

    view = hold(seat, 42)

    assert (view.user_id, view.schedule_id, view.seat_id, view.seat_number) == (42, seat.schedule_id, seat.id, 7)
    assert view.status == HELD
    assert view.price == seat.price == 50_000
    assert before + dt.timedelta(seconds=HOLD_TTL - 2) <= view.expires_at <= utcnow() + dt.timedelta(seconds=HOLD_TTL)
    after = seat_now(seat)
    assert (after.status, after.version) == (SEAT_HELD, seat.version + 1)
    row = Reservation.get_by_id(view.reservation_id)
    assert (row.status, row.live_seat_id, row.hold_slot) == (HELD, seat.id, 1)
    assert check.violations() == []


def test_the_same_job_twice_returns_the_same_reservation_and_writes_one_row(seats):
    seat = first_schedule(seats)[0]

    first = hold(seat, 7, job_id="job-1")
    again = hold(seat, 7, job_id="job-1")

    assert again.reservation_id == first.reservation_id
    assert again.status == HELD
    assert Reservation.select().count() == 1
    assert seat_now(seat).version == seat.version + 1


def test_a_held_seat_is_not_available_to_anyone_else(seats):
    seat = first_schedule(seats)[0]
    hold(seat, 1)

    with pytest.raises(SeatNotAvailable):
        hold(seat, 2)
    with pytest.raises(SeatNotAvailable):  # nor to the holder with a new request
        hold(seat, 1)

    assert Reservation.select().count() == 1


def test_a_seat_of_another_schedule_or_an_unknown_seat_is_not_found(seats):
    first, second = (seats[k] for k in sorted(seats))

    with pytest.raises(NotFound):
        reservations.hold_seat(
            user_id=1, schedule_id=first[0].schedule_id, seat_id=second[0].id, job_id="x", hold_ttl=60, max_holds=4
        )
    with pytest.raises(NotFound):
        reservations.hold_seat(
            user_id=1, schedule_id=first[0].schedule_id, seat_id=10**9, job_id="y", hold_ttl=60, max_holds=4
        )
    assert Reservation.select().count() == 0
    assert seat_now(second[0]).status == AVAILABLE


def test_a_hold_chosen_as_a_deadlock_victim_runs_again_and_is_held(seats, monkeypatch):
    # Given the database breaks a deadlock by rolling back the hold's transaction once (MariaDB
    # error 1213: 4 parallel holds of one user got 2 HELD and 2 OperationalError under load)
    seat, real, victims = first_schedule(seats)[8], Reservation.create, []

    def create(**fields: object) -> Reservation:
        if not victims:
            victims.append(fields["job_id"])
            raise pw.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
        return real(**fields)

    monkeypatch.setattr(Reservation, "create", create)

    # When the user holds the seat
    view = hold(seat, 42)

    # Then the hold ran again and is HELD, once (the rolled-back attempt left nothing)
    assert victims and view.status == HELD
    assert (seat_now(seat).status, seat_now(seat).version) == (SEAT_HELD, seat.version + 1)
    assert [r.id for r in Reservation.select().where(Reservation.seat == seat.id)] == [view.reservation_id]


def test_any_other_database_error_of_a_hold_is_raised(seats, monkeypatch):
    def create(**fields: object) -> Reservation:
        raise pw.OperationalError(2013, "Lost connection to MySQL server during query")

    monkeypatch.setattr(Reservation, "create", create)
    with pytest.raises(pw.OperationalError):
        hold(first_schedule(seats)[9], 42)
    assert seat_now(first_schedule(seats)[9]).status == AVAILABLE


def test_a_user_holds_at_most_max_holds_seats_of_a_schedule_and_a_cancel_frees_a_slot(seats):
    first, second = (seats[k] for k in sorted(seats))
    held = [hold(first[i], 5) for i in range(MAX_HOLDS)]

    with pytest.raises(LimitExceeded):
        hold(first[MAX_HOLDS], 5)
    assert seat_now(first[MAX_HOLDS]).status == AVAILABLE
    assert hold(second[0], 5).status == HELD  # the limit is per schedule
    assert hold(first[MAX_HOLDS], 6).status == HELD  # and per user

    reservations.cancel_reservation(reservation_id=held[0].reservation_id, user_id=5)
    assert hold(first[MAX_HOLDS + 1], 5).status == HELD
    with pytest.raises(LimitExceeded):
        hold(first[MAX_HOLDS + 2], 5)
    assert check.violations() == []


def test_cancel_frees_the_seat_at_once_and_cancelling_again_changes_nothing(seats):
    seat = first_schedule(seats)[3]
    view = hold(seat, 9)

    cancelled = reservations.cancel_reservation(reservation_id=view.reservation_id, user_id=9)

    assert cancelled.status == CANCELLED
    assert seat_now(seat).status == AVAILABLE
    version = seat_now(seat).version
    again = reservations.cancel_reservation(reservation_id=view.reservation_id, user_id=9)
    assert again.status == CANCELLED
    assert seat_now(seat).version == version
    assert hold(seat, 10).status == HELD  # someone else can take it now
    assert check.violations() == []


def test_nobody_cancels_another_users_reservation(seats):
    seat = first_schedule(seats)[0]
    view = hold(seat, 1)

    with pytest.raises(NotFound):
        reservations.cancel_reservation(reservation_id=view.reservation_id, user_id=2)
    with pytest.raises(NotFound):
        reservations.get_reservation(reservation_id=view.reservation_id, user_id=2)

    assert Reservation.get_by_id(view.reservation_id).status == HELD
    assert seat_now(seat).status == SEAT_HELD


def test_a_confirmed_reservation_cannot_be_cancelled(seats):
    seat = first_schedule(seats)[0]
    view = hold(seat, 1)
    Reservation.update(status=CONFIRMED, hold_slot=None).where(Reservation.id == view.reservation_id).execute()

    with pytest.raises(ReservationNotHeld):
        reservations.cancel_reservation(reservation_id=view.reservation_id, user_id=1)

    assert Reservation.get_by_id(view.reservation_id).status == CONFIRMED
    assert seat_now(seat).status == SEAT_HELD


def test_a_hold_expires_only_after_its_expiry_time(seats):
    seat = first_schedule(seats)[0]
    view = hold(seat, 1, ttl=60)

    assert not reservations.expire_hold(
        reservation_id=view.reservation_id, now=view.expires_at - dt.timedelta(seconds=1)
    )
    assert Reservation.get_by_id(view.reservation_id).status == HELD
    assert seat_now(seat).status == SEAT_HELD

    assert reservations.expire_hold(reservation_id=view.reservation_id, now=view.expires_at + dt.timedelta(seconds=1))
    row = Reservation.get_by_id(view.reservation_id)
    assert (row.status, row.live_seat_id, row.hold_slot) == (EXPIRED, None, None)
    assert seat_now(seat).status == AVAILABLE
    assert not reservations.expire_hold(reservation_id=view.reservation_id, now=view.expires_at + dt.timedelta(hours=1))
    assert hold(seat, 2).status == HELD
    assert check.violations() == []


def test_find_expired_lists_only_held_reservations_past_their_time_oldest_first(seats):
    s = first_schedule(seats)
    late, early, middle, cancelled = (
        hold(s[0], 1, ttl=30),
        hold(s[1], 2, ttl=10),
        hold(s[2], 3, ttl=20),
        hold(s[3], 4, ttl=5),
    )
    reservations.cancel_reservation(reservation_id=cancelled.reservation_id, user_id=4)
    at = utcnow() + dt.timedelta(seconds=25)

    assert reservations.find_expired(now=at) == [
        (early.reservation_id, s[1].id),
        (middle.reservation_id, s[2].id),
    ]
    assert reservations.find_expired(now=at, limit=1) == [(early.reservation_id, s[1].id)]
    assert reservations.find_expired(now=utcnow()) == []
    assert reservations.find_expired(now=at + dt.timedelta(seconds=10)) == [
        (early.reservation_id, s[1].id),
        (middle.reservation_id, s[2].id),
        (late.reservation_id, s[0].id),
    ]


def test_the_database_refuses_a_second_live_reservation_of_a_seat(seats):
    seat = first_schedule(seats)[0]
    view = hold(seat, 1)

    with pytest.raises(pw.IntegrityError):
        Reservation.create(
            user_id=2,
            seat=seat.id,
            schedule_id=seat.schedule_id,
            price=seat.price,
            status=HELD,
            expires_at=utcnow() + dt.timedelta(minutes=5),
            live_seat_id=seat.id,
        )

    assert [r.id for r in Reservation.select()] == [view.reservation_id]


def test_a_live_reservation_blocks_a_hold_even_when_the_seat_row_says_available(seats):
    # Given a live reservation the seat row does not know about (as if two workers overlapped)
    seat = first_schedule(seats)[0]
    Reservation.create(
        user_id=1,
        seat=seat.id,
        schedule_id=seat.schedule_id,
        price=seat.price,
        status=HELD,
        expires_at=utcnow() + dt.timedelta(minutes=5),
        live_seat_id=seat.id,
    )
    assert seat_now(seat).status == AVAILABLE

    # When another user's hold passes the seat's compare-and-set, the unique key still refuses it
    with pytest.raises(SeatNotAvailable):
        hold(seat, 2)

    assert Reservation.select().where(Reservation.seat == seat.id).count() == 1
    assert (seat_now(seat).status, seat_now(seat).version) == (AVAILABLE, seat.version)  # rolled back
