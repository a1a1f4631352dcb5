"""Idempotency-Key on MariaDB and Redis (SPEC §3 v2): kept 24 h though a job record lives 1 h
after it ends, compared exactly (case-sensitive) by the database, and honoured by the points
charge; over HTTP on the real app with the partition worker in a thread."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from config import bootstrap
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
    make_app,
    problem_of,
    queue_headers,
    run_in_threads,
    user_headers,
    worker_thread,
)
from workers.jobs import job_key

pytestmark = pytest.mark.integration

PAYER = 1


@dataclass
class Live:
    client: FlaskClient
    concert_id: int
    seats: list[Seat]
    payer: dict[str, str]  # the payer's headers: an ACTIVE token


@pytest.fixture
def live(live_settings: Settings) -> Iterator[Live]:
    """The demo concert, 200,000 points for the payer, an ACTIVE token and a worker."""
    app = make_app(live_settings)
    bootstrap.current().redis.flushdb()
    seed_demo()
    seats = list(Seat.select().order_by(Seat.id))
    points.charge(user_id=PAYER, amount=200_000, max_charge=1_000_000, max_balance=10_000_000)
    client = app.test_client()
    payer = queue_headers(client, PAYER, seats[0].schedule.concert_id)
    with worker_thread():
        yield Live(client, seats[0].schedule.concert_id, seats, payer)
    db.close()


def pay(live: Live, rid: int, key: str, *, headers: dict[str, str] | None = None) -> Any:
    return live.client.post(
        f"{API}/payments",
        json={"reservationId": rid},
        headers={**(headers or live.payer), "Prefer": "wait=5", "Idempotency-Key": key},
    )


def forget_the_job_and_the_token(live: Live, rid: int) -> None:
    """What an hour and a paid sale leave: the job record expired, the queue token ended."""
    job_id = Payment.get(Payment.reservation == rid).job_id
    assert bootstrap.current().redis.delete(job_key(job_id)) == 1
    left = live.client.delete(f"{API}/queue/token", headers=live.payer)
    assert left.status_code == 204, left.get_data(as_text=True)


def test_an_idempotency_key_answers_with_its_payment_after_the_job_record_and_the_token_are_gone(
    live: Live,
) -> None:
    """The key outlives the job record (1 h after it ends) and the queue token (a payment ends it).

    Hidden ways to fail: the retry answers 422 (the job expired), 401/403 (the token is gone),
    pays again (a new job), or answers the balance of now instead of the first answer's.
    """
    key = f"pay-{uuid.uuid4().hex}"
    rid, other_rid = hold(live.seats[0], PAYER), hold(live.seats[1], PAYER)
    first = pay(live, rid, key)
    assert first.status_code == 201, first.get_data(as_text=True)
    points.charge(user_id=PAYER, amount=1, max_charge=1_000_000, max_balance=10_000_000)  # the balance moves on

    # When the job record has expired and the token has ended, the same request is sent again
    forget_the_job_and_the_token(live, rid)
    again = pay(live, rid, key)

    # Then it answers the first answer, from the payment row, and pays nothing
    assert again.status_code == 201, again.get_data(as_text=True)
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    # also when Redis has lost the key's binding too (the row is the durable record)
    redis = bootstrap.current().redis
    assert redis.delete(*redis.scan_iter(f"idem:{PAYER}:*")) == 1
    assert pay(live, rid, key).get_json() == first.get_json()
    # and the same key for another reservation is still 422, paying nothing
    reused = pay(live, other_rid, key)
    assert reused.status_code == 422, reused.get_data(as_text=True)
    assert problem_of(reused)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert Reservation.get_by_id(other_rid).status == "HELD"
    assert Payment.select().count() == 1
    assert points.get_balance(user_id=PAYER).balance == 150_001
    assert check.violations() == []


def test_a_key_whose_first_payment_failed_runs_afresh_once_its_job_record_is_gone(live: Live) -> None:
    """A failed first request changed nothing: after its record expired the key pays (once).

    Hidden ways to fail: 422 "job expired" forever for that key, or two payments.
    """
    poor, key = 2, f"pay-{uuid.uuid4().hex}"
    headers = queue_headers(live.client, poor, live.concert_id)
    rid = hold(live.seats[2], poor)
    failed = pay(live, rid, key, headers=headers)
    assert (failed.status_code, problem_of(failed)["code"]) == (409, "INSUFFICIENT_POINTS")
    job_id = problem_of(failed)["jobId"]

    bootstrap.current().redis.delete(job_key(job_id))
    points.charge(user_id=poor, amount=60_000, max_charge=1_000_000, max_balance=10_000_000)
    paid = pay(live, rid, key, headers=headers)
    again = pay(live, rid, key, headers={**headers, QUEUE_HEADER: headers[QUEUE_HEADER]})

    assert paid.status_code == 201, paid.get_data(as_text=True)
    assert again.get_json() == paid.get_json()
    assert Payment.select().where(Payment.user_id == poor).count() == 1
    assert points.get_balance(user_id=poor).balance == 10_000


def test_keys_that_differ_only_in_case_are_two_keys_on_mariadb(live: Live) -> None:
    """SPEC: keys compare exactly in every database (migration 009, utf8mb4_bin).

    Hidden way to fail: the tables' utf8mb4_unicode_ci made `ORDER-ABC` find the payment of
    `order-abc` (422 IDEMPOTENCY_KEY_REUSED), or the UNIQUE (user_id, idempotency_key) refused it.
    """
    lower, upper = hold(live.seats[3], PAYER), hold(live.seats[4], PAYER)

    first = pay(live, lower, "order-abc")
    second = pay(live, upper, "ORDER-ABC")

    assert first.status_code == 201, first.get_data(as_text=True)
    assert second.status_code == 201, second.get_data(as_text=True)
    assert first.get_json()["paymentId"] != second.get_json()["paymentId"]
    keys = {p.reservation_id: p.idempotency_key for p in Payment.select()}
    assert keys == {lower: "order-abc", upper: "ORDER-ABC"}
    assert points.get_balance(user_id=PAYER).balance == 100_000
    # each key still answers with its own payment, exactly
    assert pay(live, upper, "ORDER-ABC").get_json() == second.get_json()
    assert pay(live, lower, "order-abc").get_json() == first.get_json()


CHARGE_THREADS = 8


def test_concurrent_charges_with_one_key_charge_once_and_answer_alike_on_mariadb(live: Live) -> None:
    """Eight retries of one lost charge at once (real threads released by a barrier, a client each).

    Hidden ways to fail: the header ignored (eight entries), two transactions that both saw no
    entry committing two (only UNIQUE (user_id, idempotency_key) stops them), the loser answering
    409 CONCURRENT_UPDATE or a 500 on the duplicate key, or answers that differ.
    """
    user, key = 4711, f"top-up-{uuid.uuid4().hex}"

    def retry() -> tuple[int, Any]:
        client = live.client.application.test_client()
        response = client.post(
            f"{API}/users/{user}/points/charge", json={"amount": 700}, headers={"Idempotency-Key": key}
        )
        return response.status_code, response.get_json()

    answers = run_in_threads([retry] * CHARGE_THREADS)

    assert answers == [(200, {"userId": user, "balance": 700})] * CHARGE_THREADS
    entries = list(points.LedgerEntry.select().where(points.LedgerEntry.user_id == user))
    assert [(e.amount, e.idempotency_key) for e in entries] == [(700, key)]
    assert points.get_balance(user_id=user).balance == 700
    other = live.client.post(f"{API}/me/points/charge", json={"amount": 701}, headers={
        "Idempotency-Key": key, **user_headers(user)})  # fmt: skip
    assert (other.status_code, problem_of(other)["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert check.violations() == []
