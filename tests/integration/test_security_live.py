"""Security rules that depend on the real servers: rate-limit windows kept in Redis (shared by
every gunicorn worker), and ownership checks on MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from models import reservations
from models.concerts import Seat
from models.seed import seed_demo
from tests.support.helpers import make_app, problem_of

pytestmark = pytest.mark.integration

API = "/api/v1"


@pytest.fixture
def limited_live_client(live_settings: Settings) -> Iterator[FlaskClient]:
    from config import bootstrap
    from models.db import db

    app = make_app(live_settings.with_(rate_issue_user="2/minute"))
    bootstrap.current().redis.flushdb()
    seed_demo()
    yield app.test_client()
    bootstrap.current().redis.flushdb()
    db.close()


def test_the_issue_limit_is_kept_in_redis_and_answers_429_with_retry_after(limited_live_client: FlaskClient) -> None:
    from config import bootstrap

    answers = [limited_live_client.post(f"{API}/queue/tokens", json={"userId": 51, "concertId": 1}) for _ in range(3)]

    assert [a.status_code for a in answers] == [201, 200, 429]
    assert problem_of(answers[2])["code"] == "RATE_LIMITED"
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    # the window lives in Redis (the concert's slot, counted by the issue script), shared by every gunicorn worker
    windows = [k.decode() if isinstance(k, bytes) else k for k in bootstrap.current().redis.keys("rl:*")]
    assert "rl:{c:1}:u:51" in windows
    assert 0 < bootstrap.current().redis.pttl("rl:{c:1}:u:51") <= 60_000


def test_another_users_reservation_on_mariadb_answers_like_a_missing_one(limited_live_client: FlaskClient) -> None:
    seat = Seat.select().order_by(Seat.id).first()
    rid = reservations.hold_seat(
        user_id=61, schedule_id=seat.schedule_id, seat_id=seat.id, job_id=uuid.uuid4().hex, hold_ttl=300, max_holds=4
    ).reservation_id
    token = limited_live_client.post(f"{API}/queue/tokens", json={"userId": 62, "concertId": 1}).get_json()["token"]
    intruder = {"X-Queue-Token": token}

    theirs = limited_live_client.post(f"{API}/payments", json={"reservationId": rid}, headers=intruder)
    nothing = limited_live_client.post(f"{API}/payments", json={"reservationId": rid + 1000}, headers=intruder)
    read = limited_live_client.get(f"{API}/reservations/{rid}", headers=intruder)

    assert (theirs.status_code, nothing.status_code, read.status_code) == (404, 404, 404)
    assert problem_of(theirs)["code"] == problem_of(nothing)["code"] == "NOT_FOUND"
    assert reservations.get_reservation(reservation_id=rid, user_id=61).status == reservations.HELD
