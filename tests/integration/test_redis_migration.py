"""Moving a running single-node deployment to the cluster-safe key layout, on a real Redis server.

The Redis is planted with keys as the single-node code wrote them (names from git history:
`job:<id>`, `dramatiq:seats.pN…`, `wake:seats.pN`, `cache:ver:<id>`…) beside keys of the new
layout. Hidden ways this can fail: a job answered before the switch is a 404 after it (the record
is under its old name); the check misses a message still queued under the old names (it would
never run: no new worker reads them) or reports new-layout keys as old; --clean deletes a queue
or a job record, or a new key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from config.settings import Settings
from models.db import db
from tests.support.env import redis_db_url
from tests.support.helpers import make_app
from tests.support.identity import bearer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 9
DONE, OPEN = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
RESULT = {"reservationId": 7, "seatId": 3, "status": "HELD"}
NEW_KEYS = ["job:{j:" + "a" * 32 + "}", "dramatiq:{dq:p3}:seats.p3", "wake:{dq:p3}", "cache:{s:1}:ver"]


@pytest.fixture
def old_redis(redis_url: str) -> Iterator[tuple[str, redis.Redis]]:
    """Redis db 9 holding a single-node deployment's keys as the old code named them."""
    url = redis_db_url(REDIS_DB, redis_url)
    r = redis.Redis.from_url(url)
    r.flushdb()
    # a job answered before the switch, and one whose message still waits in the old seat queue
    r.hset(f"job:{DONE}", mapping=job_record(DONE, "SUCCEEDED", result=json.dumps(RESULT)))
    r.rpush(f"job:{DONE}:done", "SUCCEEDED")
    r.hset(f"job:{OPEN}", mapping=job_record(OPEN, "QUEUED"))
    r.rpush("dramatiq:seats.p3", "msg-1")
    r.hset("dramatiq:seats.p3.msgs", "msg-1", json.dumps({"message_id": "msg-1", "kwargs": {"job_id": OPEN}}))
    r.zadd("dramatiq:seats.p3.XQ", {"msg-0": 1})
    r.hset("dramatiq:seats.p3.XQ.msgs", "msg-0", "{}")
    r.lpush("wake:seats.p3", 1)
    r.set("cache:ver:1", 4)
    r.hset("cache:seats:1", "1", "AVAILABLE")
    r.set("cache:avail:1", 49)
    r.set("cache:sched:1", "[]")
    for key in NEW_KEYS:
        r.set(key, "new")
    yield url, r
    r.flushdb()
    r.close()


def job_record(job_id: str, status: str, **fields: str) -> dict[str, str]:
    return {"id": job_id, "type": "hold", "status": status, "user": "42", "created": "1764650000000", **fields}


def redis_migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "DATABASE_URL": "sqlite:///:memory:"}
    return subprocess.run(
        [sys.executable, "-m", "models", "redis-migrate", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def client(live_settings: Settings, old_redis: tuple[str, redis.Redis]) -> Iterator[FlaskClient]:
    app = make_app(live_settings.with_(redis_url=old_redis[0]))
    yield app.test_client()
    db.close()


def test_a_job_answered_before_the_switch_is_still_answered_under_its_old_name(client: FlaskClient) -> None:
    # When its owner asks for a job recorded as job:<id> (read-both for one release)
    response = client.get(f"/api/v1/jobs/{DONE}", headers=bearer(42))

    # Then it is the job's outcome, not a 404; another user still gets 404
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["jobId"], body["status"], body["result"]) == (DONE, "SUCCEEDED", RESULT)
    assert client.get(f"/api/v1/jobs/{DONE}", headers=bearer(43)).status_code == 404


def test_the_check_names_what_must_drain_and_clean_deletes_only_derived_data(
    old_redis: tuple[str, redis.Redis],
) -> None:
    url, r = old_redis

    # When the check runs while a message waits in an old seat queue
    before = redis_migrate(url, "--check")

    # Then it exits 1 and counts each family (new-layout keys not among them)
    assert before.returncode == 1, before.stderr
    assert before.stdout.splitlines() == [
        "seat queues: 4 old key(s) (drain)",
        "job records: 3 old key(s) (read-both)",
        "wake-up lists: 1 old key(s) (delete)",
        "catalogue cache: 4 old key(s) (delete)",
        "to drain: 1 message(s) in the old seat queues, 1 old job(s) not finished; 1 dead-lettered message(s)",
        "old workers must drain before the switch",
    ]

    # When the old workers drain (the message runs, its job ends) and --clean runs
    r.delete("dramatiq:seats.p3", "dramatiq:seats.p3.msgs")
    r.hset(f"job:{OPEN}", "status", "SUCCEEDED")
    after = redis_migrate(url, "--clean")

    # Then nothing is left to drain, the derived data is gone, queues' dead letters, job records
    # and every new-layout key stay
    assert after.returncode == 0, after.stderr
    assert after.stdout.splitlines() == [
        "deleted 5 old key(s) of derived data",
        "seat queues: 2 old key(s) (drain)",
        "job records: 3 old key(s) (read-both)",
        "wake-up lists: 0 old key(s) (delete)",
        "catalogue cache: 0 old key(s) (delete)",
        "to drain: 0 message(s) in the old seat queues, 0 old job(s) not finished; 1 dead-lettered message(s)",
        "nothing left to drain",
    ]
    assert all(r.get(key) == b"new" for key in NEW_KEYS)
    assert r.hget(f"job:{DONE}", "status") == b"SUCCEEDED"
