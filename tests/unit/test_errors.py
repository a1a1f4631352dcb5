"""The one problem map: models.errors.CODES / problem_of, and web/errors.py answering with them.

`Retry-After` appears only on 409 CONCURRENT_UPDATE, 429 and 503 (SPEC §3), with one value per
code whether the problem comes straight from a route or through a job; admin auth errors say so.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.bootstrap import current
from models import errors as e
from models.seed import seed_demo
from tests.support.helpers import issue_token, make_app, problem_of, queue_headers, worker_thread
from workers.jobs import JobStore

API = "/api/v1"
ADMIN = {"Authorization": "Bearer test-admin-token"}
SPEC_CODES = {  # SPEC §3 "Error codes (HTTP status)", v2 codes included
    "VALIDATION_ERROR": 400,
    "AUTH_REQUIRED": 401,
    "AUTH_INVALID": 401,
    "TOKEN_MISSING": 401,
    "TOKEN_INVALID": 401,
    "TOKEN_NOT_ACTIVE": 403,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "SEAT_NOT_AVAILABLE": 409,
    "RESERVATION_NOT_HELD": 409,
    "RESERVATION_EXPIRED": 409,
    "ALREADY_PAID": 409,
    "INSUFFICIENT_POINTS": 409,
    "CONCURRENT_UPDATE": 409,
    "EXTENSION_LIMIT": 409,
    "REFUND_NOT_ALLOWED": 409,
    "SALE_NOT_OPEN": 409,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "LIMIT_EXCEEDED": 422,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
}


# --- the code table ---------------------------------------------------------------------------
def test_every_spec_code_has_its_status_and_only_three_codes_say_when_to_retry() -> None:
    assert {code: e.CODES[code].status for code in SPEC_CODES} == SPEC_CODES
    assert {code for code, meaning in e.CODES.items() if meaning.retry_after} == {
        "CONCURRENT_UPDATE",
        "RATE_LIMITED",
        "UNAVAILABLE",
    }


def _all_errors(cls: type[e.DomainError] = e.DomainError) -> list[type[e.DomainError]]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_all_errors(direct))]


def test_every_domain_error_has_a_code_in_the_table_and_a_title() -> None:
    for cls in _all_errors():
        assert cls.code in e.CODES, cls
        assert cls.title, cls


def test_an_error_class_with_a_code_missing_from_the_table_is_refused_where_it_is_written() -> None:
    with pytest.raises(TypeError, match="NOT_IN_TABLE"):

        class Stray(e.DomainError):
            code = "NOT_IN_TABLE"


def test_problem_of_builds_the_whole_problem_object_from_the_table() -> None:
    error = e.ValidationError("bad input", errors=[{"field": "seatId", "message": "invalid id"}])

    assert e.problem_of(error) == {
        "type": "/problems/validation-error",
        "title": "Invalid request",
        "status": 400,
        "detail": "bad input",
        "code": "VALIDATION_ERROR",
        "errors": [{"field": "seatId", "message": "invalid id"}],
    }
    assert e.problem_of(e.NotFound()) == {
        "type": "/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "Not found",
        "code": "NOT_FOUND",
    }


def test_retry_after_comes_from_the_table_and_an_error_may_name_its_own_seconds() -> None:
    assert e.Unavailable().retry_after == e.CODES["UNAVAILABLE"].retry_after
    assert e.ConcurrentUpdate("lost").retry_after == 1
    assert e.RateLimited("early", retry_after=7).retry_after == 7
    assert e.SeatNotAvailable().retry_after is None
    assert e.SeatNotAvailable(retry_after=5).retry_after is None  # a 409 conflict never says when


def test_admin_errors_keep_their_codes_but_say_they_are_about_the_admin_token() -> None:
    assert (e.AdminTokenMissing.code, e.AdminTokenMissing.title) == ("TOKEN_MISSING", "Admin token missing")
    assert (e.AdminTokenInvalid.code, e.AdminTokenInvalid.title) == ("TOKEN_INVALID", "Admin token invalid")
    assert (e.AdminDisabled.code, e.AdminDisabled.title) == ("FORBIDDEN", "Admin routes disabled")
    assert e.TokenMissing.title == "Queue token missing"


# --- over HTTP --------------------------------------------------------------------------------
@pytest.fixture
def concert(app: Flask) -> int:
    concert_id = seed_demo()
    assert concert_id is not None
    return concert_id


def _join(client: FlaskClient, user_id: int, concert_id: int) -> Any:
    return issue_token(client, user_id, concert_id)


def test_a_new_queue_token_is_201_without_retry_after(client: FlaskClient, concert: int) -> None:
    # Given rate limiting on (the default), which adds X-RateLimit-* headers to a limited route
    created = _join(client, 1, concert)

    assert created.status_code == 201
    assert created.headers.get("X-RateLimit-Limit")  # the limiter did look at it
    assert "Retry-After" not in created.headers  # nothing was refused: nothing to come back for
    again = _join(client, 1, concert)
    assert (again.status_code, again.headers.get("Retry-After")) == (200, None)


def test_reservation_answers_202_201_and_409_carry_no_retry_after(client: FlaskClient, concert: int) -> None:
    from models.concerts import Schedule, Seat

    schedule = Schedule.select().where(Schedule.concert == concert).order_by(Schedule.id).first()
    seats = list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number))
    first, second = queue_headers(client, 1, concert), queue_headers(client, 2, concert)

    def hold(headers: dict[str, str], seat: Seat) -> Any:
        return client.post(f"{API}/reservations", json={"scheduleId": schedule.id, "seatId": seat.id}, headers=headers)

    accepted = hold(first, seats[0])  # no worker yet: 202
    with worker_thread():
        created = hold({**second, "Prefer": "wait=5"}, seats[1])
        taken = hold({**first, "Prefer": "wait=5"}, seats[1])

    assert (accepted.status_code, accepted.headers.get("Retry-After")) == (202, None)
    assert (created.status_code, created.headers.get("Retry-After")) == (201, None)
    assert problem_of(taken)["code"] == "SEAT_NOT_AVAILABLE"
    assert "Retry-After" not in taken.headers


def test_a_refusal_on_a_limited_route_carries_no_retry_after(client: FlaskClient, concert: int) -> None:
    missing = _join(client, 1, concert + 1000)

    assert problem_of(missing)["code"] == "NOT_FOUND"
    assert missing.headers.get("X-RateLimit-Limit")
    assert "Retry-After" not in missing.headers


def test_unavailable_says_the_same_retry_after_over_http_and_through_a_job(app: Flask) -> None:
    # Given one request that meets a lost database and one job the sweeper failed as UNAVAILABLE
    import peewee as pw

    @app.get("/test-lost-db")
    def lost_db() -> None:
        raise pw.OperationalError("(2006, 'MySQL server has gone away')")

    client = app.test_client()
    store = JobStore(current().redis)
    job = store.create(job_type="PAYMENT", user_id=1)
    store.sweep(older_than_s=0)

    direct = client.get("/test-lost-db")
    from web.jobs import job_answer

    with app.test_request_context("/api/v1/payments"):
        through_job = job_answer(store.get(job.job_id), location=lambda _: "/")  # type: ignore[arg-type]

    assert (direct.status_code, through_job.status_code) == (503, 503)
    seconds = str(e.CODES["UNAVAILABLE"].retry_after)
    assert direct.headers["Retry-After"] == through_job.headers["Retry-After"] == seconds


@pytest.mark.parametrize(
    ("headers", "title", "code"),
    [
        ({}, "Admin token missing", "TOKEN_MISSING"),
        ({"Authorization": "Bearer wrong"}, "Admin token invalid", "TOKEN_INVALID"),
    ],
)
def test_admin_auth_errors_name_the_admin_token_not_the_queue_token(
    client: FlaskClient, headers: dict[str, str], title: str, code: str
) -> None:
    response = client.post(f"{API}/admin/concerts", json={}, headers=headers)

    body = problem_of(response)
    assert (response.status_code, body["code"], body["title"]) == (401, code, title)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
    assert "Retry-After" not in response.headers


def test_admin_routes_closed_without_admin_token_say_so(unit_settings: Any) -> None:

    client = make_app(unit_settings.with_(admin_token="")).test_client()

    response = client.post(f"{API}/admin/concerts", json={}, headers=ADMIN)

    body = problem_of(response)
    assert (response.status_code, body["code"], body["title"]) == (403, "FORBIDDEN", "Admin routes disabled")


def test_a_limiter_429_says_when_its_window_resets(unit_settings: Any) -> None:
    from web.limits import limiter

    client = make_app(unit_settings.with_(rate_issue_user="1/minute")).test_client()
    limiter.reset()
    seed_demo()
    try:
        first, second = (_join(client, 5, 1) for _ in range(2))
    finally:
        limiter.reset()

    assert (first.status_code, "Retry-After" in first.headers) == (201, False)
    assert problem_of(second)["code"] == "RATE_LIMITED"
    assert 1 <= int(second.headers["Retry-After"]) <= 60
    assert int(second.headers["X-RateLimit-Reset"]) >= int(time.time())


def test_an_unknown_route_and_a_wrong_method_use_the_table_titles(client: FlaskClient) -> None:
    missing = client.get(f"{API}/no-such-route")
    wrong = client.delete(f"{API}/concerts")

    assert (problem_of(missing)["code"], problem_of(missing)["title"]) == ("NOT_FOUND", "Not found")
    assert (problem_of(wrong)["code"], problem_of(wrong)["title"]) == ("METHOD_NOT_ALLOWED", "Method not allowed")
    assert "GET" in wrong.headers["Allow"]
