"""bench/contention_bench.closed_loop over several client processes: every attempt runs once, in a child."""

from __future__ import annotations

import os

import pytest

from bench.contention_bench import closed_loop
from models.db import db, make_database


@pytest.fixture(params=["no database", "sqlite"])
def database(request):
    """closed_loop with the database proxy as a test left it: unset, or on SQLite as the unit tier
    sets it (closed_loop closed a pool with close_all, which SQLite has not: an AttributeError
    that failed this test in a full-suite run, 2026-12-02)."""
    previous = db.obj
    if request.param == "sqlite":
        db.initialize(make_database("sqlite:///:memory:"))
        db.connect(reuse_if_open=True)
    yield request.param
    db.initialize(previous)


def test_forked_client_processes_run_every_attempt_exactly_once_and_share_one_clock(database):
    parent = os.getpid()
    plan = [(user, user % 7, 1) for user in range(1, 301)]
    prepared: list[int] = []

    def hold(user_id: int, seat_id: int, schedule_id: int, state: object) -> str:
        assert state == "ready"
        return "held" if os.getpid() != parent and prepared == [3] else "wrong-process"

    result = closed_loop(
        plan, 24, hold, lambda: "ready", lambda _: None, processes=3, prepare=lambda n: prepared.append(n)
    )

    assert result["attempts"] == 300 and result["outcomes"] == {"held": 300}
    assert result["client_processes"] == 3
    assert prepared == []  # prepare ran in the children only
    assert 0 < result["seconds"] < 60 and result["latency"]["n"] == 300
