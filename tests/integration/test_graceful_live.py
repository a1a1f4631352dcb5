"""SIGTERM drains every process for real: partition workers, gunicorn and the scheduler.

The processes run against MariaDB (a database `<test database>_graceful` of its own) and a
redis-server of the test's own on a free port. Figures printed with `-s` are the ones in
docs/RELIABILITY.md ("Graceful behaviour").
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from config.bootstrap import Services, bootstrap
from config.settings import Settings
from models import check
from models.db import db
from tests.support.env import sibling_database_url
from tests.support.helpers import free_port, fresh_schema, user_headers
from tests.support.pipeline import enqueue_holds, jobs, wait_terminal
from tests.support.procs import ROOT, Cluster, cluster, wait_for_leases
from tests.support.redis_server import RedisServer, own_redis
from workers.jobs import SUCCEEDED, TERMINAL

pytestmark = pytest.mark.integration

EXIT_LIMIT = 20.0  # seconds a SIGTERMed process may take to exit


@pytest.fixture
def env(mysql_url: str) -> Iterator[tuple[Services, RedisServer]]:
    """This process bootstrapped on its own database + our own Redis, with a fresh schema and the demo concert."""
    from models.seed import seed_demo

    with own_redis() as server:
        services = bootstrap(
            Settings().with_(database_url=sibling_database_url(mysql_url, "graceful"), redis_url=server.url)
        )
        fresh_schema()
        seed_demo()
        db.close()
        yield services, server
        db.close()


def _seats() -> list[Any]:
    from models.concerts import Seat

    with db.connection_context():
        return list(Seat.select().order_by(Seat.id))


def _reservations() -> list[tuple[int, int, int, str]]:
    """(seat, user, id, status) of every reservation row."""
    from models.reservations import Reservation

    with db.connection_context():
        rows = Reservation.select(Reservation.seat, Reservation.user_id, Reservation.id, Reservation.status).tuples()
        return sorted((int(s), int(u), int(i), str(st)) for s, u, i, st in rows)


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM a process; its exit code and how long it took to exit."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=EXIT_LIMIT)  # raises TimeoutExpired: it did not exit
    return code, time.monotonic() - started


def test_a_sigtermed_worker_exits_0_mid_stream_and_a_new_worker_finishes_every_job_exactly_once(
    env: tuple[Services, RedisServer],
) -> None:
    services, server = env
    seats = _seats()
    assert len(seats) == 100
    with cluster(services.settings.database_url, server.url, JOB_STALE_AFTER="600") as c:
        first = c.start_worker()
        wait_for_leases(services.redis, c)

        # Given a stream of 3,000 holds over 100 seats (30 users per seat), 100 every 0.1 s
        requests = [(user, seats[user % 100]) for user in range(1, 3001)]
        ids: list[str] = []

        def produce() -> None:
            for k in range(0, len(requests), 100):
                ids.extend(enqueue_holds(services, requests[k : k + 100], threads=4))
                time.sleep(0.1)

        producer = threading.Thread(target=produce)
        producer.start()
        deadline = time.monotonic() + 60
        while sum(r["status"] in TERMINAL for r in jobs(services, list(ids))) < 200:
            assert time.monotonic() < deadline, c.logs()
            time.sleep(0.02)

        # When the worker gets SIGTERM mid-stream
        code, took = _stop(first.popen)
        done_at_stop = sum(r["status"] in TERMINAL for r in jobs(services, list(ids)))
        producer.join()
        assert len(ids) == 3000
        print(f"\nworker SIGTERM with {done_at_stop}/3000 jobs done: exit {code} after {took:.2f} s")

        # Then it exits 0 (within EXIT_LIMIT, or _stop raised), leaving the rest queued (not lost, not half-done)
        assert code == 0, first.output()
        assert done_at_stop < 3000, "the stream was over before the signal; nothing was drained"
        assert "finishing the messages in hand" in first.output()
        assert services.redis.keys("partition:lease:*") == []  # every lease released on the way out
        running = [r for r in jobs(services, ids) if r["status"] == "RUNNING"]
        assert running == []  # the message in hand was finished, not abandoned

        # When a new worker starts, every job ends, and the database matches the jobs exactly
        restarted = time.monotonic()
        c.start_worker()
        records = wait_terminal(services, ids, 120, c)
        print(f"new worker finished the remaining {3000 - done_at_stop} jobs in {time.monotonic() - restarted:.2f} s")
    succeeded = [json.loads(r["result"]) for r in records if r["status"] == SUCCEEDED]
    assert len(succeeded) == 100
    rows = _reservations()
    assert len(rows) == 100  # no hold applied twice, none half-applied
    assert rows == sorted((r["seatId"], r["userId"], r["reservationId"], "HELD") for r in succeeded)
    assert {json.loads(r["error"])["code"] for r in records if r["status"] != SUCCEEDED} == {"SEAT_NOT_AVAILABLE"}
    with db.connection_context():
        assert check.violations() == []


def _http(port: int, method: str, path: str, body: dict[str, Any] | None = None, **headers: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = json.dumps(body) if body is not None else None
        hdrs = {
            "Content-Type": "application/json",
            **user_headers(1),  # every request here is user 1's
            **{k.replace("_", "-"): v for k, v in headers.items()},
        }
        conn.request(method, path, body=payload, headers=hdrs)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def test_gunicorn_sigterm_lets_an_in_flight_request_finish_with_its_answer(env: tuple[Services, RedisServer]) -> None:
    services, server = env
    seat = _seats()[0]
    port = free_port()
    procs = Cluster(services.settings.database_url, server.url)
    web_env = {"HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1", "WEB_THREADS": "4"}
    web = procs.start("web", "gunicorn", "-c", "config/gunicorn.py", "web:create_app()", **web_env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _http(port, "GET", "/api/v1/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and web.alive(), web.output()
            time.sleep(0.1)
        status, issued = _http(
            port, "POST", "/api/v1/queue/tokens", {"userId": 1, "concertId": seat.schedule.concert_id}
        )
        assert status == 201, issued

        # Given a hold request waiting for its job (Prefer: wait=10) while no worker runs
        answer: dict[str, Any] = {}

        def hold() -> None:
            answer["response"] = _http(
                port,
                "POST",
                "/api/v1/reservations",
                {"scheduleId": seat.schedule_id, "seatId": seat.id},
                X_Queue_Token=issued["token"],
                Prefer="wait=10",
            )

        client = threading.Thread(target=hold)
        client.start()
        time.sleep(1.0)
        assert "response" not in answer

        # When gunicorn gets SIGTERM with that request in flight, and a worker starts after it
        stopped = time.monotonic()
        web.popen.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        procs.start_worker()
        code = web.popen.wait(timeout=EXIT_LIMIT)  # raises TimeoutExpired: it did not exit
        took = time.monotonic() - stopped
        client.join(timeout=30)

        # Then the client still gets its answer (the hold, 201) and gunicorn exits 0 once it is sent
        status, body = answer["response"]
        print(f"\ngunicorn SIGTERM with a request in flight: answer {status}, exit {code} after {took:.2f} s")
        assert status == 201, f"{body}\n{procs.logs()}"
        assert (body["seatId"], body["userId"], body["status"]) == (seat.id, 1, "HELD")
        assert code == 0, web.output()
    finally:
        procs.stop()


def test_a_sigtermed_scheduler_leader_releases_the_lease_and_the_standby_leads(
    env: tuple[Services, RedisServer],
) -> None:
    services, server = env
    r = services.redis
    procs = Cluster(services.settings.database_url, server.url)
    try:
        leader = procs.start_scheduler()
        deadline = time.monotonic() + 30
        while not (r.get("scheduler:leader") or "").startswith(f"{socket.gethostname()}:{leader.pid}:"):
            assert time.monotonic() < deadline and leader.alive(), leader.output()
            time.sleep(0.05)
        standby = procs.start_scheduler()
        while "started" not in standby.output():
            assert time.monotonic() < deadline + 30 and standby.alive(), standby.output()
            time.sleep(0.05)

        # When the leader gets SIGTERM
        code, took = _stop(leader.popen)
        stopped = time.monotonic()

        # Then it exits 0 having released the lease (not left it to expire), and the standby takes it
        released = not (r.get("scheduler:leader") or "").startswith(f"{socket.gethostname()}:{leader.pid}:")
        while not (r.get("scheduler:leader") or "").startswith(f"{socket.gethostname()}:{standby.pid}:"):
            assert time.monotonic() - stopped < 30, standby.output()
            time.sleep(0.05)
        takeover = time.monotonic() - stopped
        print(f"\nscheduler leader SIGTERM: exit {code} after {took:.2f} s, standby leads {takeover:.2f} s later")
        assert code == 0, leader.output()
        assert released, "the stopped leader's lease was still in Redis after it exited"
    finally:
        procs.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", __file__, "-s"], cwd=ROOT))
