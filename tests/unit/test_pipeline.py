"""The reservation pipeline in-process on the unit tier: HTTP -> job record -> partition queue -> worker -> job outcome.

Embedded fakeredis carries both the job records and Dramatiq's RedisBroker; a real
PartitionWorker (its own threads) consumes the 16 partitions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.bootstrap import current
from models import quick_refusal
from models.concerts import NewSchedule, Schedule, Seat, create_concert
from models.db import utcnow
from models.reservations import Reservation
from models.seed import seed_demo
from tests.support.helpers import active_token, problem_of, worker_thread
from workers import reservations as reservation_actors
from workers.jobs import FAILED, SUCCEEDED, JobStore

API = "/api/v1"
HEADER = "X-Queue-Token"
WAIT = {"Prefer": "wait=5"}


@dataclass
class Demo:
    concert_id: int
    schedule_id: int
    seats: list[Seat]


@pytest.fixture
def demo(app: Flask) -> Demo:
    concert_id = seed_demo()
    assert concert_id is not None
    schedule = Schedule.select().where(Schedule.concert == concert_id).order_by(Schedule.id).first()
    return Demo(concert_id, schedule.id, list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number)))


def hold(client: FlaskClient, token: str, seat: Seat, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    body = {"scheduleId": seat.schedule_id, "seatId": seat.id, **extra}
    return client.post(f"{API}/reservations", json=body, headers={HEADER: token, **(headers or {})})


def finished_job(client: FlaskClient, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"{API}/jobs/{job_id}").get_json()
        if job["status"] in (SUCCEEDED, FAILED) or time.monotonic() > deadline:
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)


def seat_status(client: FlaskClient, token: str, seat: Seat) -> str:
    seats = client.get(f"{API}/schedules/{seat.schedule_id}/seats", headers={HEADER: token}).get_json()["seats"]
    return next(s["status"] for s in seats if s["seatId"] == seat.id)


def test_a_hold_is_accepted_with_202_and_its_job_succeeds_with_the_reservation(client, demo):
    token = active_token(client, 1, demo.concert_id)
    seat = demo.seats[9]

    accepted = hold(client, token, seat)  # no worker runs yet: the job waits in its partition

    assert accepted.status_code == 202
    body = accepted.get_json()
    assert body == {"jobId": body["jobId"], "status": "QUEUED", "statusUrl": f"{API}/jobs/{body['jobId']}"}
    assert accepted.headers["Location"] == body["statusUrl"]
    assert client.get(body["statusUrl"]).get_json()["status"] == "QUEUED"
    with worker_thread():
        job = finished_job(client, body["jobId"])
    assert (job["status"], job["type"], job["error"]) == (SUCCEEDED, "RESERVATION", None)
    assert job["finishedAt"] is not None
    result = job["result"]
    assert (result["userId"], result["seatId"], result["seatNumber"], result["status"]) == (1, seat.id, 10, "HELD")
    mine = client.get(f"{API}/reservations/{result['reservationId']}", headers={HEADER: token})
    assert (mine.status_code, mine.get_json()) == (200, result)
    assert seat_status(client, token, seat) == "HELD"


def test_a_hold_of_a_seat_just_taken_is_refused_at_once_with_no_job(client, demo):
    first, second = active_token(client, 1, demo.concert_id), active_token(client, 2, demo.concert_id)
    seat = demo.seats[0]
    jobs_before = len(current().redis.keys("job:*"))

    with worker_thread():
        created = hold(client, first, seat, WAIT)
        jobs_after_hold = len(current().redis.keys("job:*"))
        refused = hold(client, second, seat)  # no Prefer: wait, yet the answer is final

    assert created.status_code == 201
    assert refused.status_code == 409
    problem = problem_of(refused)
    assert (problem["code"], problem["detail"]) == ("SEAT_NOT_AVAILABLE", "seat 1 is held")
    assert "jobId" not in problem
    assert len(current().redis.keys("job:*")) == jobs_after_hold > jobs_before  # the refusal created no job
    assert Reservation.select().count() == 1


def test_a_hold_behind_the_seats_queued_first_hold_waits_for_it_and_is_refused_with_no_job(client, demo):
    """At a sale's start hundreds of holds of a seat find no mark; only the first is queued, the
    others wait for its end instead of queueing doomed jobs behind it (models/quick_refusal.py)."""
    first, second = active_token(client, 1, demo.concert_id), active_token(client, 2, demo.concert_id)
    seat = demo.seats[0]
    queued = hold(client, first, seat)  # no worker yet: the first hold stays queued
    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(hold(client, second, seat, WAIT)))
    waiter.start()
    time.sleep(0.3)

    with worker_thread():
        waiter.join(10)
        job = finished_job(client, queued.get_json()["jobId"])

    assert queued.status_code == 202 and job["status"] == SUCCEEDED
    (refused,) = answers
    assert refused.status_code == 409
    problem = problem_of(refused)
    assert (problem["code"], problem["detail"]) == ("SEAT_NOT_AVAILABLE", "seat 1 is held")
    assert "jobId" not in problem  # answered by the first hold's end: no job of its own
    assert Reservation.select().count() == 1


def test_prefer_wait_answers_with_the_reservation_and_a_second_hold_of_the_seat_with_409(client, demo):
    first, second = active_token(client, 1, demo.concert_id), active_token(client, 2, demo.concert_id)
    seat = demo.seats[0]

    with worker_thread():
        created = hold(client, first, seat, WAIT)
    # the mark has lapsed, so the second hold reaches the pipeline (deleted with that worker stopped:
    # its mark keeper rewrites the mark of a remembered taken seat every 0.3 s, which made the
    # second hold a job-less edge refusal in some runs)
    current().redis.delete(quick_refusal.taken_key(seat.schedule_id, seat.id))
    with worker_thread():
        refused = hold(client, second, seat, WAIT)

    assert created.status_code == 201
    reservation = created.get_json()
    assert (reservation["userId"], reservation["seatId"], reservation["status"]) == (1, seat.id, "HELD")
    assert created.headers["Location"] == f"{API}/reservations/{reservation['reservationId']}"
    assert refused.status_code == 409
    problem = problem_of(refused)
    assert problem["code"] == "SEAT_NOT_AVAILABLE"
    job = client.get(f"{API}/jobs/{problem['jobId']}").get_json()
    assert (job["status"], job["result"]) == (FAILED, None)
    assert job["error"]["type"] == "/problems/seat-not-available"
    assert (job["error"]["status"], job["error"]["code"]) == (409, "SEAT_NOT_AVAILABLE")
    assert Reservation.select().count() == 1


def test_a_fifth_hold_in_one_schedule_is_refused_with_422(client, demo):
    token = active_token(client, 1, demo.concert_id)

    with worker_thread():
        answers = [hold(client, token, seat, WAIT) for seat in demo.seats[:5]]

    assert [a.status_code for a in answers] == [201, 201, 201, 201, 422]
    assert problem_of(answers[4])["code"] == "LIMIT_EXCEEDED"
    assert seat_status(client, token, demo.seats[4]) == "AVAILABLE"


def test_only_the_owner_reads_or_cancels_a_reservation_and_cancel_frees_the_seat(client, demo):
    owner, other = active_token(client, 1, demo.concert_id), active_token(client, 2, demo.concert_id)
    seat = demo.seats[2]

    with worker_thread():
        reservation = hold(client, owner, seat, WAIT).get_json()
        url = f"{API}/reservations/{reservation['reservationId']}"
        assert client.get(url, headers={HEADER: owner}).status_code == 200
        assert problem_of(client.get(url, headers={HEADER: other}))["code"] == "NOT_FOUND"
        assert problem_of(client.delete(url, headers={HEADER: other}))["code"] == "NOT_FOUND"
        assert seat_status(client, owner, seat) == "HELD"
        cancelled = client.delete(url, headers={HEADER: owner})
        assert (cancelled.status_code, cancelled.get_json()["status"]) == (200, "CANCELLED")
        assert seat_status(client, owner, seat) == "AVAILABLE"
        retaken = hold(client, other, seat, WAIT)

    assert client.get(url, headers={HEADER: owner}).get_json()["status"] == "CANCELLED"
    assert (retaken.status_code, retaken.get_json()["userId"]) == (201, 2)


def test_a_body_user_other_than_the_tokens_user_is_403_and_queues_nothing(client, demo):
    token = active_token(client, 1, demo.concert_id)

    response = hold(client, token, demo.seats[0], userId=2)

    assert response.status_code == 403
    assert problem_of(response)["code"] == "FORBIDDEN"
    assert current().redis.zcard("jobs:open") == 0
    assert hold(client, token, demo.seats[0], userId=1).status_code == 202


def test_a_token_of_another_concert_cannot_hold_a_seat(client, demo):
    other_concert, _ = create_concert(title="Other", venue="Hall", schedules=[NewSchedule(utcnow(), 5, 1000)])
    token = active_token(client, 1, other_concert)

    response = hold(client, token, demo.seats[0])

    assert response.status_code == 403
    assert problem_of(response)["code"] == "FORBIDDEN"
    assert current().redis.zcard("jobs:open") == 0


@pytest.mark.parametrize("job_id", ["0123456789abcdef0123456789abcdef", "x" * 80])
def test_an_unknown_job_is_404(client, demo, job_id):
    response = client.get(f"{API}/jobs/{job_id}")

    assert response.status_code == 404
    assert problem_of(response)["code"] == "NOT_FOUND"


def test_a_request_that_waited_longer_than_the_stale_limit_fails_without_holding_the_seat(client, demo):
    store, settings = JobStore(current().redis), current().settings
    seat = demo.seats[0]
    old = int(time.time() * 1000) - int((settings.job_stale_after + 1) * 1000)
    stale, fresh = store.create(job_type="RESERVATION", user_id=1), store.create(job_type="RESERVATION", user_id=2)
    args = {"schedule_id": demo.schedule_id, "seat_id": seat.id}

    reservation_actors.hold_seat(job_id=stale.job_id, user_id=1, enqueued_ms=old, **args)

    job = client.get(f"{API}/jobs/{stale.job_id}").get_json()
    assert job["status"] == FAILED
    assert (job["error"]["code"], job["error"]["status"]) == ("UNAVAILABLE", 503)
    assert Reservation.select().count() == 0
    assert Seat.get_by_id(seat.id).status == "AVAILABLE"
    reservation_actors.hold_seat(job_id=fresh.job_id, user_id=2, enqueued_ms=int(time.time() * 1000), **args)
    assert store.get(fresh.job_id).status == SUCCEEDED  # a timely one holds the seat


def test_the_sweeper_fails_a_job_whose_message_was_never_sent(client, demo):
    store = JobStore(current().redis)
    lost = store.create(job_type="RESERVATION", user_id=1)
    done = store.create(job_type="RESERVATION", user_id=1)
    store.succeed(done.job_id, {"reservationId": 1})

    assert store.sweep(older_than_s=60) == []  # too young to be declared lost
    assert store.sweep(older_than_s=0) == [lost.job_id]

    job = client.get(f"{API}/jobs/{lost.job_id}").get_json()
    assert (job["status"], job["error"]["code"], job["error"]["status"]) == (FAILED, "UNAVAILABLE", 503)
    assert store.get(done.job_id).status == SUCCEEDED
    assert store.sweep(older_than_s=0) == []
