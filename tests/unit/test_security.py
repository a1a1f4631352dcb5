"""Security rules of issue 8, on the unit tier (SQLite + fakeredis).

Tokens are unguessable and bound to one user and one concert; another user's reservation,
payment or job answers exactly like one that does not exist; admin routes need ADMIN_TOKEN
(constant-time compare); bodies are size-limited; token issue, polling and job creation are
rate-limited; a 500 shows no stack trace, SQL or secret, and the log shows no secret.
"""

from __future__ import annotations

import hmac
import logging
import re
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from models import payments, points, reservations
from models.concerts import Schedule, Seat
from models.queue_tokens import new_token_for
from models.seed import seed_demo
from tests.support.helpers import active_token, hold, make_app, problem_of, queue_headers, user_headers

API = "/api/v1"
ADMIN = {"Authorization": "Bearer test-admin-token"}
OWNER, INTRUDER = 31, 32
BEARER_1 = user_headers(1)
URLSAFE = set(string.ascii_letters + string.digits + "-_")


@dataclass(frozen=True)
class World:
    """The demo concert (A) and a second concert (B), each with one schedule."""

    concert_a: int
    schedule_a: int
    seats_a: list[Seat]
    concert_b: int
    schedule_b: int
    seat_b: int


@pytest.fixture
def world(client: FlaskClient) -> World:
    seed_demo()
    schedule_a = Schedule.select().order_by(Schedule.id).first()
    seats_a = list(Seat.select().where(Seat.schedule == schedule_a.id).order_by(Seat.number))
    body = {
        "title": "B",
        "venue": "b",
        "schedules": [{"startsAt": "2030-01-01T19:00:00Z", "seatCount": 3, "price": 10}],
    }
    created = client.post(f"{API}/admin/concerts", json=body, headers=ADMIN).get_json()
    schedule_b = created["schedules"][0]["scheduleId"]
    seat_b = Seat.select().where(Seat.schedule == schedule_b).order_by(Seat.number).first().id
    return World(schedule_a.concert_id, schedule_a.id, seats_a, created["concertId"], schedule_b, seat_b)


def same_problem(a: Any, b: Any, a_id: int | str, b_id: int | str) -> None:
    """Two answers are indistinguishable except for the id the caller sent."""
    pa, pb = problem_of(a), problem_of(b)
    assert a.status_code == b.status_code
    assert {k: v for k, v in pa.items() if k not in ("detail", "instance")} == {
        k: v for k, v in pb.items() if k not in ("detail", "instance")
    }
    assert pa["detail"].replace(str(a_id), "ID") == pb["detail"].replace(str(b_id), "ID")


# --- tokens: unguessable --------------------------------------------------------------------
def test_ten_thousand_tokens_are_distinct_and_carry_128_random_bits() -> None:
    tokens = [new_token_for(7) for _ in range(10_000)]

    assert len(set(tokens)) == 10_000
    secrets_part = [t.split(".", 1)[1] for t in tokens]
    assert all(
        t.startswith("7.") and len(s) == 22 and set(s) <= URLSAFE for t, s in zip(tokens, secrets_part, strict=True)
    )
    # 22 base64url characters = 21 x 6 bits + 2 bits = 128 bits: each of the first 21 positions
    # takes all 64 symbols over 10,000 tokens (a biased or short source would not)
    for position in range(21):
        assert len({s[position] for s in secrets_part}) == 64, position
    assert len({s[21] for s in secrets_part}) == 4  # the last character holds the remaining 2 bits


def test_tokens_come_from_the_secrets_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.queue_tokens as wr

    asked: list[int] = []
    real = wr.secrets.token_urlsafe

    def spy(nbytes: int) -> str:
        asked.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(wr.secrets, "token_urlsafe", spy)
    new_token_for(1)

    assert asked == [16]


def test_an_issued_token_has_the_documented_form(client: FlaskClient, world: World) -> None:
    token = active_token(client, OWNER, world.concert_a)

    assert re.fullmatch(rf"{world.concert_a}\.[A-Za-z0-9_-]{{22}}", token)


# --- tokens: bound to one concert and one user ----------------------------------------------
def test_a_token_of_concert_a_cannot_read_concert_b_seats_or_hold_them(client: FlaskClient, world: World) -> None:
    headers = queue_headers(client, OWNER, world.concert_a)

    seat_map = client.get(f"{API}/schedules/{world.schedule_b}/seats", headers=headers)
    hold_b = client.post(
        f"{API}/reservations", json={"scheduleId": world.schedule_b, "seatId": world.seat_b}, headers=headers
    )

    assert seat_map.status_code == 403
    assert problem_of(seat_map)["code"] == "FORBIDDEN"
    assert hold_b.status_code == 403
    assert problem_of(hold_b)["code"] == "FORBIDDEN"
    assert client.get(f"{API}/schedules/{world.schedule_a}/seats", headers=headers).status_code == 200


def test_a_token_of_concert_a_cannot_act_on_its_users_concert_b_reservation(client: FlaskClient, world: World) -> None:
    rid = hold(Seat.get_by_id(world.seat_b), OWNER)
    headers = queue_headers(client, OWNER, world.concert_a)

    answers = [
        client.delete(f"{API}/reservations/{rid}", headers=headers),
        client.post(f"{API}/payments", json={"reservationId": rid}, headers=headers),
    ]

    assert [(a.status_code, problem_of(a)["code"]) for a in answers] == [(403, "FORBIDDEN")] * 2
    # reading it needs the identity only (SPEC v2): the owner may, whatever token they hold
    assert client.get(f"{API}/reservations/{rid}", headers=user_headers(OWNER)).status_code == 200
    assert reservations.get_reservation(reservation_id=rid, user_id=OWNER).status == reservations.HELD


@pytest.mark.parametrize("path", ["/reservations", "/payments"])
def test_a_body_user_id_other_than_the_tokens_user_is_403(client: FlaskClient, world: World, path: str) -> None:
    rid = hold(world.seats_a[0], OWNER)
    headers = queue_headers(client, OWNER, world.concert_a)
    body = {"scheduleId": world.schedule_a, "seatId": world.seats_a[1].id, "userId": INTRUDER}
    if path == "/payments":
        body = {"reservationId": rid, "userId": INTRUDER}

    response = client.post(f"{API}{path}", json=body, headers=headers)

    assert response.status_code == 403
    assert problem_of(response)["code"] == "FORBIDDEN"
    assert "userId" in problem_of(response)["detail"]


# --- another user's resources: 404 exactly like a missing one -------------------------------
def test_another_users_reservation_answers_like_a_missing_one(client: FlaskClient, world: World) -> None:
    rid = hold(world.seats_a[0], OWNER)
    missing = rid + 1000
    intruder = queue_headers(client, INTRUDER, world.concert_a)

    for method in ("GET", "DELETE"):
        theirs = client.open(f"{API}/reservations/{rid}", method=method, headers=intruder)
        nothing = client.open(f"{API}/reservations/{missing}", method=method, headers=intruder)
        assert theirs.status_code == 404
        same_problem(theirs, nothing, rid, missing)
    pay_theirs = client.post(f"{API}/payments", json={"reservationId": rid}, headers=intruder)
    pay_nothing = client.post(f"{API}/payments", json={"reservationId": missing}, headers=intruder)
    assert pay_theirs.status_code == 404
    same_problem(pay_theirs, pay_nothing, rid, missing)
    # and nothing happened to it
    assert reservations.get_reservation(reservation_id=rid, user_id=OWNER).status == reservations.HELD


def test_another_users_payment_answers_like_a_missing_one(client: FlaskClient, world: World) -> None:
    points.charge(user_id=OWNER, amount=100_000, max_charge=1_000_000, max_balance=100_000_000)
    rid = hold(world.seats_a[0], OWNER)
    paid = payments.pay(reservation_id=rid, user_id=OWNER, job_id=uuid.uuid4().hex, idempotency_key=None)
    pid = paid.payment_id
    intruder = queue_headers(client, INTRUDER, world.concert_a)

    theirs = client.get(f"{API}/payments/{pid}", headers=intruder)
    nothing = client.get(f"{API}/payments/{pid + 1000}", headers=intruder)

    assert theirs.status_code == 404
    same_problem(theirs, nothing, pid, pid + 1000)


def test_another_users_job_answers_like_a_missing_one(client: FlaskClient, world: World) -> None:
    owner = queue_headers(client, OWNER, world.concert_a)
    accepted = client.post(
        f"{API}/reservations", json={"scheduleId": world.schedule_a, "seatId": world.seats_a[0].id}, headers=owner
    )
    assert accepted.status_code == 202
    job_id = accepted.get_json()["jobId"]
    missing = "0" * 32
    intruder = queue_headers(client, INTRUDER, world.concert_a)

    theirs = client.get(f"{API}/jobs/{job_id}", headers=intruder)
    nothing = client.get(f"{API}/jobs/{missing}", headers=intruder)

    assert theirs.status_code == 404
    same_problem(theirs, nothing, job_id, missing)
    assert client.get(f"{API}/jobs/{job_id}", headers=owner).status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)  # 128 bits from secrets: the id is the capability


# --- admin ------------------------------------------------------------------------------------
NEW_CONCERT = {
    "title": "T",
    "venue": "V",
    "schedules": [{"startsAt": "2030-01-01T19:00:00Z", "seatCount": 1, "price": 1}],
}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "TOKEN_MISSING"),
        ({"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="}, "TOKEN_MISSING"),
        ({"Authorization": "Bearer "}, "TOKEN_MISSING"),
        ({"Authorization": "Bearer test-admin-tokeN"}, "TOKEN_INVALID"),
        ({"Authorization": "Bearer test-admin-token-and-more"}, "TOKEN_INVALID"),
        ({"Authorization": "Bearer t\xe9st-admin-token"}, "TOKEN_INVALID"),
    ],
)
def test_admin_without_the_right_bearer_token_is_401_with_a_bearer_challenge(
    client: FlaskClient, headers: dict[str, str], code: str
) -> None:
    response = client.post(f"{API}/admin/concerts", json=NEW_CONCERT, headers=headers)

    assert response.status_code == 401
    assert problem_of(response)["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"{API}/concerts").get_json() == {"concerts": []}


def test_admin_auth_is_checked_before_the_body_is_validated(client: FlaskClient) -> None:
    response = client.post(f"{API}/admin/concerts", json={"nonsense": True})

    assert response.status_code == 401
    assert problem_of(response)["code"] == "TOKEN_MISSING"


def test_the_admin_token_is_compared_in_constant_time(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import web.admin

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web.admin.hmac, "compare_digest", spy)
    wrong = client.post(f"{API}/admin/concerts", json=NEW_CONCERT, headers={"Authorization": "Bearer nope"})
    right = client.post(f"{API}/admin/concerts", json=NEW_CONCERT, headers=ADMIN)

    assert (wrong.status_code, right.status_code) == (401, 201)
    assert compared == [(b"nope", b"test-admin-token"), (b"test-admin-token", b"test-admin-token")]


@pytest.fixture
def admin_off_client(unit_settings: Settings) -> Iterator[FlaskClient]:
    from models.db import db

    yield make_app(unit_settings.with_(admin_token="")).test_client()
    db.close()


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Bearer anything", "Bearer test-admin-token"])
def test_with_admin_token_unset_the_admin_routes_are_closed(
    admin_off_client: FlaskClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}

    response = admin_off_client.post(f"{API}/admin/concerts", json=NEW_CONCERT, headers=headers)

    assert response.status_code == 403
    assert problem_of(response)["code"] == "FORBIDDEN"
    assert admin_off_client.get(f"{API}/concerts").get_json() == {"concerts": []}


# --- body size --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/queue/tokens", "/users/1/points/charge", "/reservations", "/payments", "/admin/concerts"]
)
def test_a_body_over_max_body_bytes_is_413_problem_json(client: FlaskClient, path: str) -> None:
    oversized = '{"amount": 1, "pad": "' + "x" * 16_384 + '"}'

    headers = ADMIN if path.startswith("/admin") else user_headers(1)
    response = client.post(f"{API}{path}", data=oversized, content_type="application/json", headers=headers)

    assert response.status_code == 413
    assert problem_of(response)["code"] == "PAYLOAD_TOO_LARGE"


# --- rate limits ------------------------------------------------------------------------------
@pytest.fixture
def limited_client(unit_settings: Settings) -> Iterator[FlaskClient]:
    from config import bootstrap
    from models.db import db
    from web.limits import limiter

    limited = unit_settings.with_(rate_issue_user="3/minute", rate_jobs_user="2/minute")
    app = make_app(limited)
    bootstrap.current().redis.flushall()
    limiter.reset()
    seed_demo()
    yield app.test_client()
    limiter.reset()
    db.close()


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "RATE_LIMITED"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_token_issue_is_rate_limited_per_user(limited_client: FlaskClient) -> None:
    answers = [limited_client.post(f"{API}/queue/tokens", json={"userId": 41, "concertId": 1}) for _ in range(4)]

    assert [a.status_code for a in answers[:3]] == [201, 200, 200]
    assert_rate_limited(answers[3])
    other_user = limited_client.post(f"{API}/queue/tokens", json={"userId": 42, "concertId": 1})
    assert other_user.status_code == 201


def test_job_creation_is_rate_limited_per_token_across_reservations_and_payments(limited_client: FlaskClient) -> None:
    token = limited_client.post(f"{API}/queue/tokens", json={"userId": 44, "concertId": 1}).get_json()["token"]
    headers = {"X-Queue-Token": token}
    seats = list(Seat.select().order_by(Seat.id).limit(3))

    answers = [
        limited_client.post(f"{API}/reservations", json={"scheduleId": s.schedule_id, "seatId": s.id}, headers=headers)
        for s in seats[:2]
    ] + [limited_client.post(f"{API}/payments", json={"reservationId": 1}, headers=headers)]

    assert [a.status_code for a in answers[:2]] == [202, 202]
    assert_rate_limited(answers[2])


def test_with_rate_limits_off_the_app_starts_and_nothing_is_limited(unit_settings: Settings) -> None:
    from config import bootstrap
    from models.db import db

    app = make_app(unit_settings.with_(rate_limit_enabled=False, rate_issue_user="1/minute"))
    bootstrap.current().redis.flushall()
    seed_demo()
    client = app.test_client()

    answers = [client.post(f"{API}/queue/tokens", json={"userId": 45, "concertId": 1}) for _ in range(3)]

    assert [a.status_code for a in answers] == [201, 200, 200]
    db.close()


# --- nothing secret in answers or logs ----------------------------------------------------------
SQL_ERROR = "(1064) SELECT balance FROM point_wallets WHERE user_id = 1 -- password=db-secret-pw"


def test_an_internal_error_shows_no_trace_sql_or_secret_and_logs_no_secret(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_: Any) -> Any:
        raise RuntimeError(SQL_ERROR)

    monkeypatch.setattr(points, "get_balance", broken)
    with caplog.at_level(logging.INFO):
        response = client.get(
            f"{API}/users/1/points",
            headers={**BEARER_1, "X-Queue-Token": "1.tokentokentokentoken12", "Cookie": "session=cookie-secret"},
        )

    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert problem_of(response)["code"] == "INTERNAL_ERROR"
    for leak in ("Traceback", "RuntimeError", "SELECT", "point_wallets", "db-secret-pw", "test-admin-token", ".py"):
        assert leak not in body, leak
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "unhandled error on GET /api/v1/users/1/points" in logged  # the log says where...
    for secret in (BEARER_1["Authorization"][7:], "tokentokentokentoken12", "cookie-secret"):  # ...not who sent what
        assert secret not in caplog.text, secret
