"""Holes of the attack (issue 13, item 4) that need real servers and real threads: parallel holds
of one user on MariaDB, every `Prefer: wait` waiter of a job waking on real Redis, and a malformed
chunked body through real gunicorn."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from flask import Flask

from config import bootstrap
from models import reservations
from models.concerts import Seat
from models.db import db
from models.seed import seed_demo
from tests.support.helpers import free_port, run_in_threads, user_headers, wait_for
from tests.support.procs import Cluster

pytestmark = pytest.mark.integration
USER = 4242
MAX_HOLDS = 4


def _hold_in_thread(seat: Seat) -> str:
    try:
        with db.connection_context():
            view = reservations.hold_seat(
                user_id=USER,
                schedule_id=seat.schedule_id,
                seat_id=seat.id,
                job_id=uuid.uuid4().hex,
                hold_ttl=300,
                max_holds=MAX_HOLDS,
            )
            return str(view.status)
    except Exception as exc:  # the answer a job would record
        return type(exc).__name__


def test_four_parallel_holds_of_one_user_within_the_cap_are_all_held(live_app: Flask) -> None:
    # Given seats of the demo schedule, and a user who may hold 4 of them
    seed_demo()
    seats = list(Seat.select().order_by(Seat.id).limit(4 * 5))
    for round_ in range(5):
        batch = seats[round_ * 4 : round_ * 4 + 4]

        # When the user's 4 holds run at the same moment on 4 threads (4 partitions)
        outcomes = run_in_threads([lambda s=s: _hold_in_thread(s) for s in batch])  # type: ignore[misc]

        # Then all 4 are HELD (before the fix: 2-3 HELD, the rest CONCURRENT_UPDATE on free[0])
        assert outcomes == ["HELD"] * 4, (round_, outcomes)
        for r in reservations.Reservation.select().where(reservations.Reservation.user_id == USER):
            if r.status == reservations.HELD:
                reservations.cancel_reservation(reservation_id=r.id, user_id=USER)


def test_every_waiter_of_a_job_wakes_when_it_ends(live_app: Flask) -> None:
    from config import bootstrap
    from workers.jobs import SUCCEEDED, JobStore

    store = JobStore(bootstrap.current().redis)
    job = store.create(job_type="PAYMENT", user_id=USER)
    woke: dict[int, tuple[float, str]] = {}

    def waiter(i: int) -> None:
        started = time.monotonic()
        seen = store.wait(job.job_id, 10)
        woke[i] = (time.monotonic() - started, seen.status if seen else "gone")

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # all three blocked on the job's end
    store.succeed(job.job_id, {"paymentId": 1})
    for t in threads:
        t.join(timeout=15)

    # before the fix one waiter woke and the others slept their full 10 s (0.08 s, 10.04 s, 10.14 s)
    assert sorted(status for _, status in woke.values()) == [SUCCEEDED] * 3
    assert max(elapsed for elapsed, _ in woke.values()) < 5.0, woke


def _raw_http(port: int, request: bytes) -> tuple[int, str, str]:
    """Send raw bytes, read the answer: (status, Content-Type, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)  # the broken body ends here: the server must not wait for more
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body.decode(errors="replace")


def test_a_malformed_chunked_body_through_real_gunicorn_is_a_400_problem(live_app: Flask) -> None:
    """The attack's raw request (a chunk without its CRLF terminator) against config/gunicorn.py.

    Hidden ways to fail: gunicorn's ChunkMissingTerminator escaping the app as a 500, gunicorn
    answering its own HTML 400 instead of problem+json, or the worker hanging on the body.
    """
    port = free_port()
    settings = bootstrap.current().settings
    procs = Cluster(settings.database_url, settings.redis_url)
    web = procs.start("web", "gunicorn", "-c", "config/gunicorn.py", "web:create_app()",
                      HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1", WEB_THREADS="2")  # fmt: skip
    try:
        assert wait_for(lambda: _healthy(port), timeout=30) is not None, web.output()
        bearer = user_headers(USER)["Authorization"]
        request = (
            "POST /api/v1/me/points/charge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {bearer}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            '5\r\n{"amo'  # the chunk's data, then junk where its CRLF belongs
            "XX"
        ).encode()

        status, content_type, body = _raw_http(port, request)

        assert status == 400, f"{status} {body}\n{procs.logs()}"
        assert content_type.startswith("application/problem+json"), (content_type, body)
        assert '"code":"VALIDATION_ERROR"' in body.replace(" ", "")
        assert web.alive() and _healthy(port)
    finally:
        procs.stop()


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
