"""The service on a real 6-node Redis Cluster (tests/support/redis_cluster.sh): readiness and routing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from models.db import db
from tests.support.helpers import flush_redis, make_app, problem_of

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster_client(live_settings: Settings, redis_cluster_url: str) -> Iterator[FlaskClient]:
    """The app on the live database and the Redis Cluster (emptied)."""
    flush_redis(redis_cluster_url)
    app = make_app(live_settings.with_(redis_url=redis_cluster_url))
    yield app.test_client()
    db.close()


def test_readyz_checks_the_cluster_state_and_says_ok(cluster_client: FlaskClient) -> None:
    response = cluster_client.get("/api/v1/readyz")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["checks"] == {"database": "ok", "redis": "ok", "broker": "disabled"}


def test_an_unknown_job_is_404_on_the_cluster_not_a_moved_error(cluster_client: FlaskClient) -> None:
    # job keys hash to slots all over the cluster: the client follows the slot map, never MOVED
    for job_id in ("x", "abc", "0123456789abcdef0123456789abcdef"):
        response = cluster_client.get(f"/api/v1/jobs/{job_id}")

        assert response.status_code == 404, response.get_data(as_text=True)
        assert problem_of(response)["code"] == "NOT_FOUND"
