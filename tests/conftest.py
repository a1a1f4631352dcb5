"""Shared fixtures: unit tier on SQLite + fakeredis, integration tier on real MariaDB/Redis.

A missing server skips the tests that need it, with the server named in the reason; with
REQUIRE_SERVICES=1 (set by .ci/run) the skip becomes a failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "mysql://root:@127.0.0.1:3306/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_KAFKA_BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def need_service(name: str, error: BaseException) -> None:
    """Skip (or fail, with REQUIRE_SERVICES=1) because a server is unreachable."""
    message = f"{name} is not reachable: {type(error).__name__}: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {message}", pytrace=False)
    pytest.skip(message)


def fresh_schema() -> None:
    """Drop every table and apply the migrations again."""
    from models import concerts, schema

    concerts.forget_cached()
    schema.drop_all()
    schema.migrate()


def make_app(settings: Settings) -> Flask:
    """A Flask app bound to these settings, with a fresh schema."""
    from web import create_app

    app = create_app(settings)
    app.config["TESTING"] = True
    fresh_schema()
    return app


# --- unit tier ------------------------------------------------------------------------------
@pytest.fixture
def unit_settings(tmp_path: Path) -> Settings:
    """Settings for the unit tier: a temporary SQLite file and the embedded fakeredis."""
    return Settings().with_(
        database_url=f"sqlite:///{tmp_path / 'unit.db'}",
        redis_url="embedded",
        admin_token="test-admin-token",
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
def redis_url() -> str:
    """The Redis URL of the integration tier (skips or fails if unreachable)."""
    import redis

    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        need_service(f"Redis at {TEST_REDIS_URL} (TEST_REDIS_URL)", exc)
    return TEST_REDIS_URL


@pytest.fixture
def live_settings(mysql_url: str, redis_url: str) -> Settings:
    """Settings for the integration tier: real MariaDB and Redis."""
    return Settings().with_(database_url=mysql_url, redis_url=redis_url, admin_token="test-admin-token")


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


def problem_of(response: Any) -> dict[str, Any]:
    """Assert a response is problem+json and return its body."""
    assert response.mimetype == "application/problem+json", response.get_data(as_text=True)
    body = response.get_json()
    for key in ("type", "title", "status", "detail", "code"):
        assert key in body, body
    assert body["status"] == response.status_code
    return body  # type: ignore[no-any-return]


def drop_catalogue_cache() -> None:
    """Forget cached schedules/seat maps (after a test changes seats directly in the database,
    which bypasses the write-through every real seat transition does)."""
    from config import bootstrap

    r = bootstrap.current().redis
    for key in r.scan_iter("cache:*"):
        r.delete(key)


def hold_directly(seat: Any, user_id: int, *, job_id: str | None = None) -> Any:
    """A test's given: hold a seat through the domain function (no job, no worker); the reservation view.

    Runs on the caller's current connection (HOLD_TTL 300 s, 4 holds per user and schedule).
    """
    import uuid

    from models import reservations

    return reservations.hold_seat(
        user_id=user_id,
        schedule_id=seat.schedule_id,
        seat_id=seat.id,
        job_id=job_id or uuid.uuid4().hex,
        hold_ttl=300,
        max_holds=4,
    )


@contextlib.contextmanager
def worker_thread(tick_interval: float = 0.2, claim_timeout: float = 10.0) -> Iterator[Any]:
    """The partition worker of `python -m workers run` (workers.batch.partition_worker, batches
    included) as a thread of this process, owning every partition; always stopped and joined."""
    import threading
    import time

    from config.bootstrap import current
    from workers.batch import partition_worker

    services = current()
    worker = partition_worker(services)
    worker.tick_interval = tick_interval
    thread = threading.Thread(target=worker.run, name="test-partition-worker", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + claim_timeout
        while len(worker.owned) < services.settings.partitions:
            assert time.monotonic() < deadline, f"the worker claimed only {worker.owned}"
            time.sleep(0.02)
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the partition worker did not stop"
