"""Hold extensions (SPEC §3 "Extension (v2)"): capped, only while HELD and unexpired, never racing the expiry."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask

from models import check, extensions, reservations
from models.concerts import Seat
from models.db import utcnow
from models.errors import ExtensionLimit, NotFound, ReservationExpired, ReservationNotHeld
from models.reservations import Reservation
from models.seed import seed_demo
from tests.support.helpers import active_token, hold_directly, problem_of, worker_thread


@pytest.fixture
def seat(app: Flask) -> Seat:
    concert_id = seed_demo()
    assert concert_id is not None
    return Seat.select().order_by(Seat.id).first()


def held(seat: Seat, user_id: int = 5, **kw):  # type: ignore[no-untyped-def]
    return reservations.hold_seat(
        user_id=user_id,
        schedule_id=seat.schedule_id,
        seat_id=seat.id,
        job_id=f"j{user_id}",
        hold_ttl=300,
        max_holds=4,
        max_extensions=2,
        **kw,
    )


def test_a_hold_is_extended_to_now_plus_the_ttl_twice_then_refused(seat: Seat) -> None:
    """Hidden failure: extending from the old expiry (a fan who extends early gets more than HOLD_TTL)."""
    view = held(seat)
    assert view.extensions_left == 2
    now = utcnow()
    first = extensions.extend_hold(reservation_id=view.reservation_id, user_id=5, hold_ttl=300, now=now)
    assert first.expires_at == now + dt.timedelta(seconds=300) and first.extensions_left == 1
    second = extensions.extend_hold(reservation_id=view.reservation_id, user_id=5, hold_ttl=300)
    assert second.extensions_left == 0 and second.expires_at >= first.expires_at
    with pytest.raises(ExtensionLimit):
        extensions.extend_hold(reservation_id=view.reservation_id, user_id=5, hold_ttl=300)
    assert reservations.reservation_json(second)["extensionsLeft"] == 0


def test_only_the_owners_held_unexpired_reservation_is_extended(seat: Seat) -> None:
    view = held(seat)
    with pytest.raises(NotFound):
        extensions.extend_hold(reservation_id=view.reservation_id, user_id=6, hold_ttl=300)
    late = Reservation.get_by_id(view.reservation_id).expires_at + dt.timedelta(milliseconds=1)
    with pytest.raises(ReservationExpired):
        extensions.extend_hold(reservation_id=view.reservation_id, user_id=5, hold_ttl=300, now=late)
    reservations.cancel_reservation(reservation_id=view.reservation_id, user_id=5)
    with pytest.raises(ReservationNotHeld):
        extensions.extend_hold(reservation_id=view.reservation_id, user_id=5, hold_ttl=300)


def test_at_the_boundary_either_the_expiry_or_the_extension_wins_never_both(seat: Seat) -> None:
    """Hidden failure: an extended-but-expired hold (seat freed while the fan still holds a live reservation)."""
    # Given a hold at the very instant it expires: the extension is refused and the sweep expires it
    view = held(seat)
    at = Reservation.get_by_id(view.reservation_id).expires_at
    with pytest.raises(ReservationExpired):
        extensions.extend_hold(reservation_id=view.reservation_id, user_id=5, hold_ttl=300, now=at)
    assert reservations.expire_hold(reservation_id=view.reservation_id, now=at).status == "EXPIRED"
    # Given another hold extended a millisecond before its expiry: the sweep at the old expiry does nothing
    other = held(Seat.get_by_id(seat.id + 1), user_id=6)
    old = Reservation.get_by_id(other.reservation_id).expires_at
    extensions.extend_hold(
        reservation_id=other.reservation_id, user_id=6, hold_ttl=300, now=old - dt.timedelta(milliseconds=1)
    )
    assert reservations.expire_hold(reservation_id=other.reservation_id, now=old) is None
    assert Reservation.get_by_id(other.reservation_id).status == "HELD"
    # And a sweep that read the row before the extension loses its compare-and-set
    stale = Reservation.get_by_id(other.reservation_id)
    extensions.extend_hold(reservation_id=other.reservation_id, user_id=6, hold_ttl=300)
    with pytest.raises(Exception, match="concurrently"):
        reservations._release(stale, reservations.EXPIRED)
    assert Reservation.get_by_id(other.reservation_id).status == "HELD"
    assert check.violations(max_pending_age_s=3600) == []


def test_extend_over_http_through_the_partition(client, seat: Seat) -> None:  # type: ignore[no-untyped-def]
    token = active_token(client, 1, seat.schedule.concert_id)
    view = hold_directly(seat, 1)
    url = f"/api/v1/reservations/{view.reservation_id}/extend"
    with worker_thread():
        answers = [client.post(url, headers={"X-Queue-Token": token}) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert [a.get_json()["extensionsLeft"] for a in answers[:2]] == [1, 0]
    assert answers[0].get_json()["expiresAt"] > view.expires_at.isoformat()
    refused = problem_of(answers[2])
    assert (answers[2].status_code, refused["code"]) == (409, "EXTENSION_LIMIT")
