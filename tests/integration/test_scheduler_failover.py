"""Two real `python -m scheduler` processes: one leads and admits, the standby takes over when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from models.db import db, init_database
from models.seed import seed_demo
from models.waiting_room import ACTIVE, WAITING, WaitingRoom
from tests.support.env import need_service, redis_db_url
from tests.support.helpers import fresh_schema, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEDULER_REDIS = redis_db_url(14)  # this module's own database on the test Redis server
LEADER_KEY = "scheduler:leader"
TAKEOVER_DEADLINE = 60.0  # seconds: no takeover by then is a failure, not a slow one


class Scheduler:
    """One `python -m scheduler` child process with its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler"], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()


def leader_pid(client: redis.Redis) -> int | None:
    """The pid named by the lease identity host:pid:rand, or None when nobody holds it."""
    value = client.get(LEADER_KEY)
    return int(value.decode().rsplit(":", 2)[1]) if value else None


@pytest.fixture
def scheduler_redis() -> Iterator[redis.Redis]:
    """Redis db 14 of the test server, empty before and after."""
    client = redis.Redis.from_url(SCHEDULER_REDIS)
    try:
        client.ping()
    except redis.RedisError as exc:
        need_service(f"Redis at {SCHEDULER_REDIS}", exc)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def concert_id(mysql_url: str) -> Iterator[int]:
    """A fresh schema on MariaDB with the demo concert (available seats, so not sold out)."""
    init_database(mysql_url)
    fresh_schema()
    created = seed_demo()
    assert created is not None
    yield created
    db.close()


@pytest.fixture
def start(mysql_url: str, tmp_path: Path) -> Iterator[Callable[[], Scheduler]]:
    """Start scheduler processes (ACTIVE_LIMIT=2, ADMIT_INTERVAL=0.2); every one is killed at the end."""
    env = {
        **os.environ,
        "DATABASE_URL": mysql_url,
        "REDIS_URL": SCHEDULER_REDIS,
        "ACTIVE_LIMIT": "2",
        "ADMIT_INTERVAL": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    started: list[Scheduler] = []

    def launch() -> Scheduler:
        started.append(Scheduler(env, tmp_path / f"scheduler-{len(started) + 1}.log"))
        return started[-1]

    yield launch
    for process in started:
        process.kill()


def test_the_standby_takes_over_and_admits_and_a_stopped_leader_releases_the_lease(
    scheduler_redis: redis.Redis, concert_id: int, start: Callable[[], Scheduler]
) -> None:
    room = WaitingRoom(scheduler_redis, active_limit=2, active_ttl=600, waiting_ttl=300)

    # Given a first scheduler holding the lease and a second one started after it
    first = start()
    assert wait_for(lambda: leader_pid(scheduler_redis) == first.pid, 20) is not None, first.output()
    second = start()
    assert wait_for(lambda: "started" in second.output(), 20) is not None, second.output()
    time.sleep(2.5)  # a few lease ticks: the standby must not steal a live lease
    assert leader_pid(scheduler_redis) == first.pid

    # And two users in the 2 active slots with three waiters behind them
    users = {user: room.issue(user_id=user, concert_id=concert_id).token for user in range(1, 6)}
    assert [room.status(touch=False, token=t).status for t in users.values()] == [
        ACTIVE,
        ACTIVE,
        WAITING,
        WAITING,
        WAITING,
    ]

    # When a slot frees up, the running leader admits the first waiter within a few seconds
    room.leave(token=users[1])
    assert wait_for(lambda: room.status(touch=False, token=users[3]).status == ACTIVE, 5) is not None, first.output()
    assert room.counts(concert_id=concert_id) == (2, 2)

    # When the leader is killed with SIGKILL (no chance to release the lease)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    killed_at = time.monotonic()

    # Then the standby holds the lease once the dead leader's lease lapsed (the delay is printed)
    takeover = wait_for(lambda: leader_pid(scheduler_redis) == second.pid, TAKEOVER_DEADLINE)
    assert takeover is not None, f"lease holder {scheduler_redis.get(LEADER_KEY)!r}\n{second.output()}"
    print(f"\nscheduler takeover after SIGKILL of the leader: {time.monotonic() - killed_at:.2f} s")

    # And it admits: a freed slot goes to the next waiter, and only one waiter gets in
    room.leave(token=users[2])
    assert wait_for(lambda: room.status(touch=False, token=users[4]).status == ACTIVE, 5) is not None, second.output()
    time.sleep(1.0)  # several more admission ticks
    assert room.status(touch=False, token=users[5]).status == WAITING
    assert room.status(touch=False, token=users[5]).rank == 1
    assert room.counts(concert_id=concert_id) == (1, 2)

    # When the new leader is stopped with SIGTERM, it releases the lease at once and exits
    second.proc.send_signal(signal.SIGTERM)
    released = wait_for(lambda: scheduler_redis.exists(LEADER_KEY) == 0, 5)
    assert released is not None, second.output()
    assert second.proc.wait(timeout=10) == 0, second.output()
