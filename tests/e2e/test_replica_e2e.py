"""End to end through real HTTP: the Procfile's gunicorn web with DATABASE_URL on the MariaDB
primary and DATABASE_REPLICA_URL on its replica, configured from the environment only.

Hidden ways it can fail: the replica URL read by Settings but never wired into the processes
(every read on the primary: the lagging replica's view never shows); a gunicorn worker that
forks with a replica connection of its parent; a replica that dies answered with 500s."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.env import drop_database, redis_db_url, sibling_database_url
from tests.support.helpers import flush_redis, free_port
from tests.support.identity import TEST_JWT_SECRET
from tests.support.mariadb_pair import Pair

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB_URL = redis_db_url(11)  # this module's own database on the test Redis server
ADMIN_TOKEN = "e2e-replica-admin"
pytestmark = pytest.mark.e2e


@pytest.fixture
def pair_env(mariadb_pair: Pair, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh database `<test>_e2e` on the primary (replicated), an empty Redis db, the environment."""
    primary = sibling_database_url(mariadb_pair.primary_url, "e2e", fresh=True)
    replica = primary.replace(mariadb_pair.primary_url.rsplit("/", 1)[0], mariadb_pair.replica_url.rsplit("/", 1)[0])
    flush_redis(REDIS_DB_URL)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=primary,
        DATABASE_REPLICA_URL=replica,
        DATABASE_REPLICA_MAX_LAG="0",  # lag is how this test tells the servers apart
        REDIS_URL=REDIS_DB_URL,
        PORT=str(free_port()),
        HOST="127.0.0.1",
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        AUTH_JWT_SECRET=TEST_JWT_SECRET,
        ADMIN_TOKEN=ADMIN_TOKEN,
    )
    yield env
    if not mariadb_pair.replicating():
        mariadb_pair.start_replication()
    drop_database(primary)
    flush_redis(REDIS_DB_URL)


def test_gunicorn_serves_the_concert_list_from_the_replica_and_from_the_primary_when_it_is_gone(
    pair_env: dict[str, str], mariadb_pair: Pair, tmp_path: Path
) -> None:
    subprocess.run([sys.executable, "-m", "models", "migrate"], cwd=ROOT, env=pair_env, check=True)
    subprocess.run([sys.executable, "-m", "models", "demo"], cwd=ROOT, env=pair_env, check=True)
    mariadb_pair.wait_caught_up()
    web_cmd = next(
        line.split(":", 1)[1] for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    with open(tmp_path / "web.log", "wb") as log:
        web = subprocess.Popen(
            ["/bin/sh", "-c", web_cmd],
            cwd=ROOT,
            env=pair_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = ApiClient(f"http://127.0.0.1:{pair_env['PORT']}/api/v1")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        api.wait_ready()
        _, _, before = api.get("/concerts")
        demo_titles = [c["title"] for c in before["concerts"]]
        assert demo_titles

        # Given replication stops and a concert is created through the API (on the primary)
        mariadb_pair.stop_replication()
        body = {
            "title": "After the stop",
            "venue": "Hall",
            "schedules": [{"startsAt": "2030-01-01T19:00:00Z", "seatCount": 2, "price": 10}],
        }
        status, _, created = api.post("/admin/concerts", body, headers=admin)
        assert status == 201, created

        # Then every gunicorn worker lists the replica's concerts: the new one is not there yet
        for _ in range(6):
            status, _, listed = api.get("/concerts")
            assert status == 200 and [c["title"] for c in listed["concerts"]] == demo_titles

        # When the replica goes away, the primary answers (with the new concert), never a 500
        mariadb_pair.shutdown_replica()
        for _ in range(6):
            status, _, listed = api.get("/concerts")
            assert status == 200, listed
            assert [c["title"] for c in listed["concerts"]] == [*demo_titles, "After the stop"]
        status, _, ready = api.get("/readyz")
        assert status == 200 and ready["checks"]["database"] == "ok"
    finally:
        os.killpg(web.pid, 15)
        web.wait(timeout=30)
        try:
            mariadb_pair.replicating()
        except Exception:
            mariadb_pair.restart_replica()
