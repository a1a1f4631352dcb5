"""`make run`'s process (python -m config.embedded): one process, SQLite + embedded Redis + in-process bus,
served over real HTTP by gunicorn; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.helpers import free_port
from tests.support.identity import sign

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_make_run_serves_the_whole_flow_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    unset = ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "AUTH_JWT_SECRET", "AUTH_DEV_LOGIN")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(PORT=str(port), DATABASE_URL=f"sqlite:///{tmp_path / 'concert.db'}", HOLD_TTL="2")
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "config.embedded"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = ApiClient(f"http://127.0.0.1:{port}/api/v1")
    try:
        api.wait_ready()
        status, _, concerts = api.get("/concerts")
        assert status == 200 and concerts["concerts"][0]["title"] == "Demo Night"
        # make run generates AUTH_JWT_SECRET and enables the dev login: the README walk signs in first
        assert api.get("/me/points", headers={"Authorization": f"Bearer {sign(9)}"})[0] == 401
        api.dev_login(9)
        assert api.get("/me/points")[2] == {"userId": 9, "balance": 0}
        token = api.post("/queue/tokens", {"concertId": 1})[2]["token"]
        fan = {"X-Queue-Token": token}
        assert api.post("/users/9/points/charge", {"amount": 60_000})[2]["balance"] == 60_000

        # A hold that is not paid expires after HOLD_TTL=2 s and the seat is free again
        status, _, held = api.post(
            "/reservations", {"scheduleId": 2, "seatId": 51}, headers={**fan, "Prefer": "wait=5"}
        )
        assert status == 201 and held["status"] == "HELD"
        deadline = time.time() + 2 + 3
        while time.time() < deadline:
            seats = api.get("/schedules/2/seats?status=AVAILABLE", headers=fan)[2]["seats"]
            if 51 in [s["seatId"] for s in seats]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the unpaid hold was not released within HOLD_TTL + 3 s")
        assert api.get(f"/reservations/{held['reservationId']}", headers=fan)[2]["status"] == "EXPIRED"

        # Hold again and pay: the in-process bus runs the consumer handler, which ends the token
        status, _, held = api.post(
            "/reservations", {"scheduleId": 2, "seatId": 52}, headers={**fan, "Prefer": "wait=5"}
        )
        assert status == 201
        status, _, paid = api.post(
            "/payments", {"reservationId": held["reservationId"]}, headers={**fan, "Prefer": "wait=5"}
        )
        assert status == 201 and paid["balance"] == 10_000
        deadline = time.time() + 5
        while api.get("/queue/token", headers=fan)[0] != 401:
            assert time.time() < deadline, "the payer's token was not expired by the event"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    output = (tmp_path / "run.log").read_text()
    assert code == 0, output[-3000:]
    assert f"curl -s http://127.0.0.1:{port}/api/v1/concerts" in output
    assert "Traceback" not in output, output[-3000:]
