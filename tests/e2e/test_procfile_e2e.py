"""End to end through real HTTP: the Procfile's gunicorn web, two partition workers and the
scheduler against MariaDB and Redis, a single server and a Redis Cluster (no Kafka: the
scheduler's relay uses the in-process bus)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.env import drop_database, redis_db_url, sibling_database_url
from tests.support.helpers import flush_redis, free_port
from tests.support.identity import TEST_JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB_URL = redis_db_url(10)  # this module's own database on the test Redis server
pytestmark = pytest.mark.e2e


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): cmd.strip() for name, _, cmd in (line.partition(":") for line in lines if line.strip())}


@pytest.fixture(params=["single", "cluster"])
def e2e_redis(request: pytest.FixtureRequest) -> str:
    """Redis db 10 of the test server, then the Redis Cluster (SPEC §8: the e2e runs on both)."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    request.getfixturevalue("redis_url")
    return REDIS_DB_URL


@pytest.fixture
def e2e_env(mysql_url: str, e2e_redis: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh database `<test database>_e2e` on the test server, an empty Redis, and the process environment."""
    database_url = sibling_database_url(mysql_url, "e2e", fresh=True)
    flush_redis(e2e_redis)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=database_url,
        REDIS_URL=e2e_redis,
        PORT=str(free_port()),
        HOST="127.0.0.1",
        WEB_CONCURRENCY="2",
        ACTIVE_LIMIT="2",
        ADMIT_INTERVAL="0.5",
        OUTBOX_INTERVAL="0.5",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        AUTH_JWT_SECRET=TEST_JWT_SECRET,
    )
    yield env
    drop_database(database_url)
    flush_redis(e2e_redis)


def _start(name: str, cmd: str, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        ["/bin/sh", "-c", cmd], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.time()
    while time.time() - started < timeout:
        if predicate():
            return time.time() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_a_fan_queues_holds_pays_and_frees_the_slot_through_the_procfile_processes(
    e2e_env: dict[str, str], tmp_path: Path
) -> None:
    # Given: schema + demo concert, then web (gunicorn, 2 workers), two partition workers, scheduler
    for args in (["migrate"], ["demo"]):
        subprocess.run([sys.executable, "-m", "models", *args], cwd=ROOT, env=e2e_env, check=True)
    procs = _procfile()
    running = [
        _start("web", procs["web"], e2e_env, tmp_path),
        _start("worker1", procs["worker"], e2e_env, tmp_path),
        _start("worker2", procs["worker"], e2e_env, tmp_path),
        _start("scheduler", procs["scheduler"], e2e_env, tmp_path),
    ]
    api = ApiClient(f"http://127.0.0.1:{e2e_env['PORT']}/api/v1")
    try:
        api.wait_ready()
        status, _, ready = api.get("/readyz")
        assert status == 200 and ready["checks"] == {"database": "ok", "redis": "ok", "broker": "disabled"}

        # When: three fans join a concert with ACTIVE_LIMIT=2
        joined = [api.post("/queue/tokens", {"userId": user, "concertId": 1}) for user in (1, 2, 3)]
        assert [status for status, _, _ in joined] == [201, 201, 201]
        tokens = [body["token"] for _, _, body in joined]
        assert [body["status"] for _, _, body in joined] == ["ACTIVE", "ACTIVE", "WAITING"]
        assert [api.get("/queue/token", headers={"X-Queue-Token": t})[2]["status"] for t in tokens[:2]] == [
            "ACTIVE",
            "ACTIVE",
        ]
        fan1 = {"X-Queue-Token": tokens[0]}
        fan2 = {"X-Queue-Token": tokens[1]}

        # Then: fan 1 holds seat 5, fan 2 loses it, fan 1 pays with points
        assert api.post("/users/1/points/charge", {"amount": 100_000})[0] == 200
        status, headers, held = api.post(
            "/reservations", {"scheduleId": 1, "seatId": 5}, headers={**fan1, "Prefer": "wait=10"}
        )
        assert status == 201, held
        assert held["status"] == "HELD" and held["seatNumber"] == 5
        assert headers["Location"] == f"/api/v1/reservations/{held['reservationId']}"
        status, _, lost = api.post(
            "/reservations", {"scheduleId": 1, "seatId": 5}, headers={**fan2, "Prefer": "wait=10"}
        )
        assert status == 409 and lost["code"] == "SEAT_NOT_AVAILABLE"
        status, _, paid = api.post(
            "/payments",
            {"reservationId": held["reservationId"]},
            headers={**fan1, "Prefer": "wait=10", "Idempotency-Key": "e2e-1"},
        )
        assert status == 201, paid
        assert paid["amount"] == 50_000 and paid["balance"] == 50_000

        # And: the event frees fan 1's slot, so fan 3 is admitted; the seat shows RESERVED
        _wait(lambda: api.get("/queue/token", headers=fan1)[0] == 401, 10, "fan 1's token expiring")
        _wait(
            lambda: api.get("/queue/token", headers={"X-Queue-Token": tokens[2]})[2].get("status") == "ACTIVE",
            10,
            "fan 3's admission",
        )
        status, _, seats = api.get("/schedules/1/seats?status=RESERVED", headers=fan2)
        assert status == 200 and [s["number"] for s in seats["seats"]] == [5]
        status, _, history = api.get("/users/1/points/history")
        assert [(e["type"], e["amount"]) for e in history["entries"]] == [("USE", -50_000), ("CHARGE", 100_000)]

        # And: metrics come from both gunicorn workers (another worker's last second is written
        # within TALLY's 1 s, models/tally.py); the invariant checker is clean
        held_line = 'http_requests_total{endpoint="/api/v1/reservations",method="POST",status="201"} 1.0'
        _wait(lambda: held_line in api.get("/metrics")[2], 3, "the hold's count in /metrics")
        assert "outbox_pending 0.0" in api.get("/metrics")[2]
        check = subprocess.run(
            [sys.executable, "-m", "models", "check"], cwd=ROOT, env=e2e_env, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout
        assert "0 violation(s)" in check.stdout
    finally:
        for p in running:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in running:
            try:
                p.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    # SIGTERM drains every process cleanly (exit code 0 or gunicorn's normal shutdown)
    assert [p.returncode for p in running] == [0, 0, 0, 0], [
        (tmp_path / f"{n}.log").read_text()[-2000:] for n in ("web", "worker1", "worker2", "scheduler")
    ]
