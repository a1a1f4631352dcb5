"""Helpers every tier shares: a fresh app, problem bodies, tokens, holds, waiting on a condition.

One copy each, so that a change to how a user reaches the API (a header, a token) is one edit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings
from tests.support.identity import IdentityClient, bearer, with_identity

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"
QUEUE_HEADER = "X-Queue-Token"


def fresh_schema() -> None:
    """Drop every table and apply the migrations again."""
    from models import concerts, draws, schema

    concerts.forget_cached()
    draws.forget_cached()
    schema.drop_all()
    schema.migrate()


def make_app(settings: Settings) -> Flask:
    """A Flask app bound to these settings (with the test JWT secret unless they name a key), with
    a fresh schema; its test clients sign each request as the user it acts for."""
    from web import create_app

    app = create_app(with_identity(settings))
    app.config["TESTING"] = True
    app.test_client_class = IdentityClient
    fresh_schema()
    return app


def flush_redis(url: str) -> None:
    """Empty a test Redis: the URL's db on a single server, every primary of a cluster."""
    from config.bootstrap import make_redis

    client = make_redis(url)
    client.flushdb()
    client.close()


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


# --- a user's way in --------------------------------------------------------------------------
def user_headers(user_id: int) -> dict[str, str]:
    """The headers that say who the caller is: the user's bearer JWT (signed with the test secret)."""
    return bearer(user_id)


def issue_token(client: FlaskClient, user_id: int, concert_id: int) -> Any:
    """POST /queue/tokens for a user and concert; the raw response."""
    return client.post(
        f"{API}/queue/tokens", json={"userId": user_id, "concertId": concert_id}, headers=user_headers(user_id)
    )


def active_token(client: FlaskClient, user_id: int, concert_id: int) -> str:
    """Join (or rejoin) the queue of a concert and return the user's ACTIVE queue token."""
    response = issue_token(client, user_id, concert_id)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    assert response.get_json()["status"] == "ACTIVE", response.get_json()
    return str(response.get_json()["token"])


def queue_headers(client: FlaskClient, user_id: int, concert_id: int) -> dict[str, str]:
    """The headers of a user with an ACTIVE token for the concert (for seat, hold and pay routes)."""
    return {**user_headers(user_id), QUEUE_HEADER: active_token(client, user_id, concert_id)}


# --- domain shortcuts (a test's "given") ------------------------------------------------------
def hold_directly(seat: Any, user_id: int, *, job_id: str | None = None, ttl: int = 300, max_holds: int = 4) -> Any:
    """Hold a seat through the domain function (no job, no worker) on the caller's connection;
    the reservation view."""
    from models import reservations

    return reservations.hold_seat(
        user_id=user_id,
        schedule_id=seat.schedule_id,
        seat_id=seat.id,
        job_id=job_id or uuid.uuid4().hex,
        hold_ttl=ttl,
        max_holds=max_holds,
    )


def hold(seat: Any, user_id: int) -> int:
    """Hold a seat for a user directly; the reservation id."""
    return int(hold_directly(seat, user_id).reservation_id)


# --- waiting ----------------------------------------------------------------------------------
def wait_for(condition: Callable[[], object], timeout: float, step: float = 0.02) -> float | None:
    """Seconds until condition() was truthy, or None after `timeout`."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(step)


def run_in_threads(calls: list[Callable[[], Any]], timeout: float = 60) -> list[Any]:
    """Run each call in its own thread, released together by a barrier; their results in order.

    An exception raised in a thread is re-raised here, in the caller's thread (an assert inside
    a bare threading.Thread is only printed, and the test would pass).
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[i] = calls[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), f"a thread did not finish within {timeout} s"
    return results


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def worker_thread(tick_interval: float = 0.2, claim_timeout: float = 10.0) -> Iterator[Any]:
    """The partition worker of `python -m workers run` (workers.batch.partition_worker, batches
    included) as a thread of this process, owning every partition; always stopped and joined."""
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


def models_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m models ARGS` as its own process on `database_url` (as an operator would)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "REDIS_URL")}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "models", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
