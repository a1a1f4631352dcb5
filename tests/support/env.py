"""The test environment: where the real servers are, and what a missing one means.

Every address a test uses derives from TEST_DATABASE_URL and TEST_REDIS_URL, so that parallel
checkouts with their own database and Redis server never touch each other's data.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse, urlunparse

import pytest

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "mysql://root:@127.0.0.1:3306/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# SPEC §8: tests/support/redis_cluster.sh starts a 6-node cluster there (.ci/run calls it)
TEST_REDIS_CLUSTER_URL = os.environ.get("TEST_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7000")
# tests/support/mariadb_pair.sh starts a MariaDB primary + replica there (.ci/run calls it)
TEST_DATABASE_PRIMARY_URL = os.environ.get("TEST_DATABASE_PRIMARY_URL", "mysql://root:@127.0.0.1:3307/test")
TEST_DATABASE_REPLICA_URL = os.environ.get("TEST_DATABASE_REPLICA_URL", "mysql://root:@127.0.0.1:3308/test")
# SPEC §8: a Kafka-protocol broker of your own for the tests that only need one (unset: each such test
# starts its own Tansu; the tests that kill and restart a broker always do). See tests/support/kafka_broker.py.
TEST_KAFKA_BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP", "").strip()
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def need_service(name: str, error: BaseException) -> None:
    """Skip (or fail, with REQUIRE_SERVICES=1) because a server is unreachable."""
    message = f"{name} is not reachable: {type(error).__name__}: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {message}", pytrace=False)
    pytest.skip(message)


def redis_db_url(db: int, base: str = TEST_REDIS_URL) -> str:
    """Database `db` of the Redis server of `base` (a test module's own database on the test server)."""
    return urlunparse(urlparse(base)._replace(path=f"/{db}"))


def sibling_database_url(mysql_url: str, suffix: str, *, port: int | None = None, fresh: bool = False) -> str:
    """A second database `<test database>_<suffix>` on the server of `mysql_url` (created if missing,
    dropped first with fresh=True), optionally reached through another port (a proxy)."""
    import pymysql

    u = urlparse(mysql_url)
    name = f"{u.path.lstrip('/') or 'test'}_{suffix}"
    conn = pymysql.connect(
        host=u.hostname, port=u.port or 3306, user=u.username or "root", password=u.password or "", connect_timeout=3
    )
    try:
        with conn.cursor() as cur:
            if fresh:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    netloc = u.netloc
    if port is not None:
        auth, _, host = netloc.rpartition("@")
        netloc = f"{auth}@{host.split(':')[0]}:{port}" if auth else f"{host.split(':')[0]}:{port}"
    return urlunparse(u._replace(netloc=netloc, path=f"/{name}"))


def drop_database(url: str) -> None:
    """Drop the database of `url` (the undo of sibling_database_url)."""
    import pymysql

    u = urlparse(url)
    conn = pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or "root", password=u.password or "")
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{u.path.lstrip('/')}`")
    finally:
        conn.close()
