"""`make run`'s log: quiet when idle, one JSON object a line with LOG_FORMAT=json, and a hold and a
payment each one INFO line naming the request id and the job id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.helpers import free_port
from tests.support.identity import TEST_JWT_SECRET
from tests.support.procs import ROOT

pytestmark = pytest.mark.e2e
IDLE_SECONDS = 60
BANNER_END = "Ctrl-C stops everything."


def _after_banner(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    assert BANNER_END in text, text[-2000:]
    return [line for line in text.split(BANNER_END, 1)[1].splitlines() if line.strip()]


def _wait_for(path: Path, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{needle!r} never logged:\n{path.read_text(errors='replace')[-3000:]}"
        time.sleep(0.2)


def test_make_run_is_quiet_when_idle_and_logs_json_lines_with_request_and_job_ids(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    # the API client signs each request with the test secret: the service must verify with it
    env.update(
        PORT=str(port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'concert.db'}",
        LOG_FORMAT="json",
        AUTH_JWT_SECRET=TEST_JWT_SECRET,
    )
    env.pop("LOG_LEVEL", None)
    env.pop("ACCESS_LOG", None)
    out = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "config.embedded"],
        cwd=ROOT,
        env=env,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Given the service has started (its partition worker owns the partitions) and nobody calls it
        _wait_for(out, "claimed partition")
        time.sleep(IDLE_SECONDS)
        idle = _after_banner(out)
        assert len(idle) <= 10, "\n".join(idle)

        # When a fan holds a seat and pays for it
        api = ApiClient(f"http://127.0.0.1:{port}/api/v1")
        token = api.post("/queue/tokens", {"userId": 3, "concertId": 1})[2]["token"]
        fan = {"X-Queue-Token": token, "Prefer": "wait=5"}
        api.post("/users/3/points/charge", {"amount": 60_000})
        status, headers, held = api.post(
            "/reservations", {"scheduleId": 1, "seatId": 7}, headers={**fan, "X-Request-Id": "hold-req"}
        )
        assert status == 201 and headers["X-Request-Id"] == "hold-req"
        status, _, _ = api.post(
            "/payments", {"reservationId": held["reservationId"]}, headers={**fan, "X-Request-Id": "pay-req"}
        )
        assert status == 201
        _wait_for(out, "PaymentCompleted")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)

    # Then every line is one JSON object, and each job wrote one INFO line naming both ids
    lines = [json.loads(line) for line in _after_banner(out)]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    jobs = [line for line in lines if line["logger"] == "workers.jobs"]
    assert [(j["level"], j["requestId"], j["msg"].split()[0]) for j in jobs] == [
        ("INFO", "hold-req", "hold"),
        ("INFO", "pay-req", "pay"),
    ]
    assert all(len(j["jobId"]) == 32 for j in jobs)
    access = [line["msg"] for line in lines if line["logger"] == "access"]
    assert any(m.startswith("POST /api/v1/reservations 201 ") for m in access), access
    assert not any("warm-up skipped" in line["msg"] for line in lines)  # the schema exists before the warm-up
