"""Shared fixtures: unit tier on SQLite + fakeredis, integration tier on real MariaDB/Redis.

Helpers live in tests/support (test modules import them from there, never from each other).

A missing server skips the tests that need it, with the server named in the reason; with
REQUIRE_SERVICES=1 (set by .ci/run) the skip becomes a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings
from tests.support.env import (
    TEST_DATABASE_PRIMARY_URL,
    TEST_DATABASE_REPLICA_URL,
    TEST_DATABASE_URL,
    TEST_REDIS_CLUSTER_URL,
    TEST_REDIS_URL,
    need_service,
)
from tests.support.helpers import make_app
from tests.support.identity import TEST_JWT_SECRET
from tests.support.mariadb_pair import Pair as MariaDBPair


# --- unit tier ------------------------------------------------------------------------------
@pytest.fixture
def unit_settings(tmp_path: Path) -> Settings:
    """Settings for the unit tier: a temporary SQLite file and the embedded fakeredis."""
    return Settings().with_(
        database_url=f"sqlite:///{tmp_path / 'unit.db'}",
        redis_url="embedded",
        admin_token="test-admin-token",
        auth_jwt_secret=TEST_JWT_SECRET,
    )


@pytest.fixture
def app(unit_settings: Settings) -> Iterator[Flask]:
    """A unit-tier app (SQLite + fakeredis) with an empty, migrated schema."""
    from config import bootstrap

    application = make_app(unit_settings)
    bootstrap.current().redis.flushall()
    yield application
    from models.db import db

    db.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the unit-tier app."""
    return app.test_client()


# --- integration tier -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The MariaDB/MySQL URL of the integration tier (skips or fails if unreachable)."""
    from urllib.parse import urlparse

    import pymysql

    u = urlparse(TEST_DATABASE_URL)
    try:
        pymysql.connect(
            host=u.hostname,
            port=u.port or 3306,
            user=u.username or "root",
            password=u.password or "",
            database=u.path.lstrip("/"),
            connect_timeout=3,
        ).close()
    except Exception as exc:
        need_service(f"MySQL/MariaDB at {u.hostname}:{u.port or 3306} (TEST_DATABASE_URL)", exc)
    return TEST_DATABASE_URL


@pytest.fixture(scope="session")
def redis_single_url() -> str:
    """The single Redis server of the integration tier (skips or fails if unreachable); unlike
    `redis_url`, a module cannot point it at the Cluster."""
    import redis

    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        need_service(f"Redis at {TEST_REDIS_URL} (TEST_REDIS_URL)", exc)
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def redis_url(redis_single_url: str) -> str:
    """The Redis URL of the integration tier (a module may override it, e.g. with `redis_any`)."""
    return redis_single_url


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """The Redis Cluster URL of the integration tier (tests/support/redis_cluster.sh starts one on
    127.0.0.1:7000-7005); skips or fails unless every slot is served."""
    from config.bootstrap import make_cluster

    try:
        client = make_cluster(TEST_REDIS_CLUSTER_URL)
        state = client.cluster_info().get("cluster_state")
        client.close()
        if state != "ok":
            raise RuntimeError(f"cluster_state is {state}")
    except Exception as exc:
        need_service(f"the Redis Cluster at {TEST_REDIS_CLUSTER_URL} (TEST_REDIS_CLUSTER_URL)", exc)
    return TEST_REDIS_CLUSTER_URL


@pytest.fixture(scope="session")
def mariadb_pair() -> MariaDBPair:
    """The MariaDB primary + replica (tests/support/mariadb_pair.sh starts them on 127.0.0.1:3307 and
    3308); skips or fails unless both answer and the replica replicates."""
    from tests.support.mariadb_pair import Pair

    pair = Pair(TEST_DATABASE_PRIMARY_URL, TEST_DATABASE_REPLICA_URL)
    try:
        if not pair.replicating():
            raise RuntimeError("the replica's IO or SQL thread is not running")
        pair.wait_caught_up()
    except Exception as exc:
        need_service(
            f"the MariaDB pair at {TEST_DATABASE_PRIMARY_URL} and {TEST_DATABASE_REPLICA_URL} "
            "(TEST_DATABASE_PRIMARY_URL, TEST_DATABASE_REPLICA_URL)",
            exc,
        )
    return pair


@pytest.fixture(params=["single", "cluster"])
def redis_any(request: pytest.FixtureRequest) -> str:
    """The single Redis server, then the Redis Cluster (ids `[single]`, `[cluster]`; `-k cluster`
    selects the cluster tier). A module runs all its Redis-facing tests against both by
    overriding `redis_url` with it: `@pytest.fixture def redis_url(redis_any): return redis_any`."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    return str(request.getfixturevalue("redis_single_url"))


@pytest.fixture
def live_settings(mysql_url: str, redis_url: str) -> Settings:
    """Settings for the integration tier: real MariaDB and Redis."""
    return Settings().with_(
        database_url=mysql_url, redis_url=redis_url, admin_token="test-admin-token", auth_jwt_secret=TEST_JWT_SECRET
    )


@pytest.fixture
def live_app(live_settings: Settings) -> Iterator[Flask]:
    """An app on real MariaDB + Redis, with a fresh schema and an empty Redis db."""
    from config import bootstrap

    application = make_app(live_settings)
    bootstrap.current().redis.flushdb()
    yield application
    from models.db import db

    db.close()


@pytest.fixture
def live_client(live_app: Flask) -> FlaskClient:
    """A test client of the integration-tier app."""
    return live_app.test_client()
