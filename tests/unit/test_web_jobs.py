"""web/jobs.py on its own: how a job record becomes an HTTP answer, `Prefer: wait`, and who may read it.

Job records are written straight into the store (no worker, no actor), so each answer is seen alone.
"""

from __future__ import annotations

import json

import pytest
from flask import Flask

from config.bootstrap import current
from models import errors as e
from models.seed import seed_demo
from tests.support.helpers import problem_of, user_headers
from web.jobs import MAX_WAIT, job_answer, job_problem, prefer_wait
from workers.jobs import JobStore

API = "/api/v1"


@pytest.fixture
def store(app: Flask) -> JobStore:
    return JobStore(current().redis)


def location(result: dict[str, object]) -> str:
    return f"/api/v1/reservations/{result['reservationId']}"


def answer(app: Flask, store: JobStore, job_id: str):  # type: ignore[no-untyped-def]
    job = store.get(job_id)
    assert job is not None
    with app.test_request_context("/api/v1/reservations", method="POST"):
        return job_answer(job, location=location)


@pytest.mark.parametrize(
    ("prefer", "seconds"),
    [
        ("wait=3", 3.0),
        ("respond-async, wait=5", 5.0),
        ("wait=0", 0.0),
        ("wait=600", MAX_WAIT),  # capped
        ("wait=abc", 0.0),
        ("waiting=3", 0.0),
        ("", 0.0),
    ],
)
def test_prefer_wait_reads_seconds_and_caps_them(app: Flask, prefer: str, seconds: float) -> None:
    with app.test_request_context(headers={"Prefer": prefer}):
        assert prefer_wait() == seconds


def test_a_running_job_is_202_with_where_to_poll(app: Flask, store: JobStore) -> None:
    job = store.create(job_type="RESERVATION", user_id=1)

    response = answer(app, store, job.job_id)

    url = f"{API}/jobs/{job.job_id}"
    assert (response.status_code, response.headers["Location"]) == (202, url)
    assert response.get_json() == {"jobId": job.job_id, "status": "QUEUED", "statusUrl": url}


def test_a_succeeded_job_is_201_with_the_resource_and_its_location(app: Flask, store: JobStore) -> None:
    job = store.create(job_type="RESERVATION", user_id=1)
    store.succeed(job.job_id, {"reservationId": 7, "status": "HELD"})

    response = answer(app, store, job.job_id)

    assert (response.status_code, response.headers["Location"]) == (201, "/api/v1/reservations/7")
    assert response.get_json() == {"reservationId": 7, "status": "HELD"}
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (e.SeatNotAvailable("seat 3 is held"), 409, None),
        (e.ConcurrentUpdate("lost a race"), 409, "1"),
        (e.InsufficientPoints("balance 10"), 409, None),
        (e.Unavailable("dropped"), 503, str(e.CODES["UNAVAILABLE"].retry_after)),
    ],
)
def test_a_failed_job_is_its_problem_with_the_job_id(
    app: Flask, store: JobStore, error: e.DomainError, status: int, retry_after: str | None
) -> None:
    job = store.create(job_type="RESERVATION", user_id=1)
    store.fail(job.job_id, e.problem_of(error))

    response = answer(app, store, job.job_id)

    body = problem_of(response)
    assert (response.status_code, body["code"], body["detail"]) == (status, error.code, error.detail)
    assert (body["jobId"], body["instance"]) == (job.job_id, "/api/v1/reservations")
    assert response.headers.get("Retry-After") == retry_after


def test_a_problem_stored_before_problems_carried_type_and_status_is_completed(app: Flask, store: JobStore) -> None:
    # Given a record written by the previous release: only code, title and detail
    job = store.create(job_type="PAYMENT", user_id=1)
    store.fail(job.job_id, {"code": "ALREADY_PAID", "title": "Already paid", "detail": "paid before"})

    stored = store.get(job.job_id)
    assert stored is not None

    assert job_problem(stored) == {
        "type": "/problems/already-paid",
        "title": "Already paid",
        "status": 409,
        "detail": "paid before",
        "code": "ALREADY_PAID",
    }


def test_get_job_shows_status_result_and_error_and_404s_an_unknown_id(app: Flask, store: JobStore) -> None:
    client = app.test_client()
    job = store.create(job_type="PAYMENT", user_id=1)
    store.fail(job.job_id, e.problem_of(e.InsufficientPoints("balance 10 < 50")))

    found = client.get(f"{API}/jobs/{job.job_id}")
    missing = client.get(f"{API}/jobs/{'0' * 32}")

    body = found.get_json()
    assert (found.status_code, body["jobId"], body["type"], body["status"]) == (200, job.job_id, "PAYMENT", "FAILED")
    assert body["error"]["code"] == "INSUFFICIENT_POINTS" and body["result"] is None
    assert body["createdAt"] and body["finishedAt"]
    assert (missing.status_code, problem_of(missing)["code"]) == (404, "NOT_FOUND")


def test_a_job_is_read_by_its_users_identity_only(app: Flask, store: JobStore) -> None:
    concert = seed_demo()
    assert concert is not None
    others_token = app.extensions["waiting_room"].issue(user_id=2, concert_id=concert).token
    job = store.create(job_type="RESERVATION", user_id=1)
    client = app.test_client()

    def read(user: int, **headers: str) -> int:
        return client.get(f"{API}/jobs/{job.job_id}", headers={**user_headers(user), **headers}).status_code

    assert read(1) == 200  # the identity is enough: no queue token needed (SPEC v2)
    assert read(2) == 404  # another user's job is exactly like a missing one
    assert read(2, **{"X-Queue-Token": others_token}) == 404
    assert read(1, **{"X-Queue-Token": others_token}) == 200  # a token names nobody here
    assert json.loads(client.get(f"{API}/jobs/{job.job_id}", headers=user_headers(1)).data)["status"] == "QUEUED"
