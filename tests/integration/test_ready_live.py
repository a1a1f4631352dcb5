"""Readiness against real services: ok when they answer, 503 naming the one that does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from models.db import db, init_database
from tests.support.helpers import make_app, problem_of

pytestmark = pytest.mark.integration

CLOSED_REDIS = "redis://127.0.0.1:1/0"
CLOSED_MYSQL = "mysql://root:@127.0.0.1:1/test"


def test_readyz_is_ok_for_database_redis_and_broker_on_live_services(live_client: FlaskClient) -> None:
    response = live_client.get("/api/v1/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "disabled"}}


def test_readyz_is_503_naming_redis_and_broker_when_redis_is_down(live_settings: Settings) -> None:
    # Given an app on the live database whose Redis URL points at a closed port
    app = make_app(live_settings.with_(redis_url=CLOSED_REDIS))
    client = app.test_client()
    try:
        # When readiness is asked
        response = client.get("/api/v1/readyz")

        # Then it is 503: the database is ok, Redis and the broker report their error
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "unavailable"
        checks = body["checks"]
        assert checks["database"] == "ok"
        assert checks["redis"].startswith("error")
        assert checks["broker"] == "disabled"  # no event broker configured
        assert "Connection" in checks["redis"]
        assert "Traceback" not in response.get_data(as_text=True)

        # and liveness is unaffected, as is a database-only route
        health = client.get("/api/v1/healthz")
        assert health.status_code == 200
        assert health.get_json() == {"status": "ok"}
        assert client.get("/api/v1/users/1/points").get_json() == {"userId": 1, "balance": 0}
    finally:
        db.close()


@pytest.fixture
def database_down(live_client: FlaskClient) -> Iterator[FlaskClient]:
    """The live app after its database stopped answering (the proxy points at a closed port)."""
    assert live_client.get("/api/v1/users/1/points").status_code == 200
    original = db.obj
    db.close()
    init_database(CLOSED_MYSQL)
    yield live_client
    db.close()
    db.initialize(original)


def test_a_route_that_needs_the_lost_database_answers_503_unavailable(database_down: FlaskClient) -> None:
    response = database_down.get("/api/v1/users/1/points")

    assert response.status_code == 503
    assert problem_of(response)["code"] == "UNAVAILABLE"
    assert int(response.headers["Retry-After"]) >= 1


def test_readyz_reports_each_check_when_the_database_is_down(database_down: FlaskClient) -> None:
    response = database_down.get("/api/v1/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body.get("status") == "unavailable", body
    assert body["checks"]["database"].startswith("error")
    assert (body["checks"]["redis"], body["checks"]["broker"]) == ("ok", "disabled")


def test_healthz_stays_200_when_the_database_is_down(database_down: FlaskClient) -> None:
    response = database_down.get("/api/v1/healthz")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"status": "ok"}
