"""Error codes a fan meets on the hold and pay paths, over HTTP on the real app: MariaDB, Redis and
the partition worker (the production factory, in a thread), with the exact status of SPEC §3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from models import check, points
from models.concerts import Seat
from models.db import db
from models.payments import Payment
from models.reservations import Reservation
from models.seed import seed_demo
from tests.support.helpers import (
    API,
    QUEUE_HEADER,
    hold,
    issue_token,
    make_app,
    problem_of,
    queue_headers,
    user_headers,
    worker_thread,
)

pytestmark = pytest.mark.integration

PAYER, WAITER = 1, 2


@dataclass
class Live:
    client: FlaskClient
    concert_id: int
    seats: list[Seat]
    payer: dict[str, str]  # the payer's headers: an ACTIVE token


@pytest.fixture
def live(live_settings: Settings) -> Iterator[Live]:
    """One active slot (the payer holds it), the demo concert, 200,000 points and a worker."""
    app = make_app(live_settings.with_(active_limit=1))
    seed_demo()
    seats = list(Seat.select().order_by(Seat.id))
    points.charge(user_id=PAYER, amount=200_000, max_charge=1_000_000, max_balance=10_000_000)
    client = app.test_client()
    payer = queue_headers(client, PAYER, seats[0].schedule.concert_id)
    with worker_thread():
        yield Live(client, seats[0].schedule.concert_id, seats, payer)
    db.close()


def pay(live: Live, rid: int, *, headers: dict[str, str] | None = None, key: str | None = None) -> Any:
    extra = {"Prefer": "wait=5", **({"Idempotency-Key": key} if key else {})}
    return live.client.post(
        f"{API}/payments", json={"reservationId": rid}, headers={**(headers or live.payer), **extra}
    )


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    problem = problem_of(response)
    assert problem["code"] == code, problem
    return problem


def test_paying_a_cancelled_reservation_is_409_reservation_not_held(live: Live) -> None:
    rid = hold(live.seats[0], PAYER)
    cancelled = live.client.delete(f"{API}/reservations/{rid}", headers={**live.payer, "Prefer": "wait=5"})
    assert cancelled.status_code == 200, cancelled.get_data(as_text=True)

    assert_problem(pay(live, rid), 409, "RESERVATION_NOT_HELD")
    assert Payment.select().count() == 0
    assert points.get_balance(user_id=PAYER).balance == 200_000


def test_paying_a_hold_past_its_time_is_409_reservation_expired(live: Live) -> None:
    # Given a hold whose time ran out before any expiry sweep got to it
    rid = hold(live.seats[1], PAYER)
    db.execute_sql("UPDATE reservations SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE id = %s", (rid,))

    assert_problem(pay(live, rid), 409, "RESERVATION_EXPIRED")
    assert Reservation.get_by_id(rid).status == "HELD"  # the sweep, not the payment, expires it
    assert points.get_balance(user_id=PAYER).balance == 200_000


def test_paying_twice_is_exactly_409_already_paid_and_charges_once(live: Live) -> None:
    rid = hold(live.seats[2], PAYER)
    first = pay(live, rid)
    assert first.status_code == 201, first.get_data(as_text=True)

    assert_problem(pay(live, rid), 409, "ALREADY_PAID")
    assert Payment.select().count() == 1
    assert points.get_balance(user_id=PAYER).balance == 150_000
    assert check.violations() == []


def test_a_waiting_token_is_403_token_not_active_on_hold_and_on_pay(live: Live) -> None:
    # Given a second fan still WAITING (the only active slot is the payer's) who holds a seat
    waiting = issue_token(live.client, WAITER, live.concert_id)
    assert waiting.get_json()["status"] == "WAITING"
    headers = {**user_headers(WAITER), QUEUE_HEADER: waiting.get_json()["token"]}
    rid = hold(live.seats[3], WAITER)

    # When the waiting fan tries to hold another seat and to pay the one held
    held = live.client.post(
        f"{API}/reservations",
        json={"scheduleId": live.seats[4].schedule_id, "seatId": live.seats[4].id},
        headers={**headers, "Prefer": "wait=5"},
    )
    paid = pay(live, rid, headers=headers)

    # Then both are refused at the gate, and nothing was written
    assert_problem(held, 403, "TOKEN_NOT_ACTIVE")
    assert_problem(paid, 403, "TOKEN_NOT_ACTIVE")
    assert Reservation.select().where(Reservation.seat == live.seats[4].id).count() == 0
    assert Payment.select().count() == 0


def test_an_idempotency_key_sent_again_for_another_reservation_is_422_and_pays_nothing(live: Live) -> None:
    key = f"pay-{uuid.uuid4().hex}"
    first_rid, second_rid = hold(live.seats[5], PAYER), hold(live.seats[6], PAYER)
    assert pay(live, first_rid, key=key).status_code == 201

    assert_problem(pay(live, second_rid, key=key), 422, "IDEMPOTENCY_KEY_REUSED")
    assert Reservation.get_by_id(second_rid).status == "HELD"
    assert points.get_balance(user_id=PAYER).balance == 150_000
    assert Payment.select().count() == 1
