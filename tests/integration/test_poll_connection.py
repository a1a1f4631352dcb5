"""A poll and a leave on one Redis server go on the thread's own connection (models.redis_support.evalsha_direct).

What that must keep: the same answers, no connection checked out of the pool (the cost it
removes), and a poll that still answers after its connection was killed or the server lost
the scripts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from config.bootstrap import make_redis
from models.errors import RateLimited
from models.waiting_room import ACTIVE, WAITING, WaitingRoom

pytestmark = pytest.mark.integration

CONCERT = 730_015  # no other test uses this concert id


@pytest.fixture
def room(redis_url: str) -> Iterator[WaitingRoom]:
    """A waiting room (ACTIVE_LIMIT 1) on an empty db of the single Redis server."""
    client = make_redis(redis_url)
    client.flushdb()
    yield WaitingRoom(client, active_limit=1, active_ttl=600, waiting_ttl=300)
    client.flushdb()
    client.close()


def _checkouts(room: WaitingRoom, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pool: Any = room.r.connection_pool
    taken: list[int] = []
    original = pool.get_connection

    def counted(*args: Any, **kwargs: Any) -> Any:
        taken.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", counted)
    return taken


def test_a_poll_and_a_leave_take_no_connection_from_the_pool_and_answer_as_before(
    room: WaitingRoom, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = room.issue(user_id=1, concert_id=CONCERT)
    second = room.issue(user_id=2, concert_id=CONCERT)
    now_ms = int(room.r.time()[0]) * 1000  # the fan last polled now and is due now: an on-time poll
    room.r.hset(f"wr:{{c:{CONCERT}}}:t:{second.token}", "p", f"{now_ms}:{now_ms}")
    room.status(token=first.token, touch=False)  # the server loads the scripts once (NOSCRIPT, then SCRIPT LOAD)
    room.leave(token=room.issue(user_id=3, concert_id=CONCERT).token)
    taken = _checkouts(room, monkeypatch)

    polled = room.status(token=second.token)
    with pytest.raises(RateLimited):  # the same fan again at once: early
        room.status(token=second.token)
    active = room.status(token=first.token, touch=False)
    left = room.leave_as(token=second.token, user_id=2)

    assert (polled.status, polled.rank, polled.user_id) == (WAITING, 1, 2)
    assert (active.status, active.user_id) == (ACTIVE, 1)
    assert left is True
    assert taken == []  # redis-py's pool checkout (~25 µs a call) is not paid


def test_a_poll_answers_after_its_connection_was_killed_and_after_the_scripts_were_flushed(
    room: WaitingRoom,
) -> None:
    room.issue(user_id=1, concert_id=CONCERT)
    waiting = room.issue(user_id=2, concert_id=CONCERT)
    room.status(token=waiting.token, touch=False)  # this thread's connection is open now

    room.r.client_kill_filter(_type="normal", skipme=True)  # every other client: this thread's own one
    after_kill = room.status(token=waiting.token, touch=False)
    room.r.script_flush()
    after_flush = room.status(token=waiting.token, touch=False)

    assert (after_kill.status, after_kill.rank) == (WAITING, 1)
    assert (after_flush.status, after_flush.rank) == (WAITING, 1)


def test_each_thread_polls_on_its_own_connection(room: WaitingRoom) -> None:
    waiting = [room.issue(user_id=u, concert_id=CONCERT) for u in range(1, 10)][1:]
    ranks: dict[int, int | None] = {}

    def poll(token: str, user: int) -> None:
        for _ in range(50):
            ranks[user] = room.status(token=token, touch=False).rank

    threads = [threading.Thread(target=poll, args=(t.token, t.user_id)) for t in waiting]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert ranks == {t.user_id: t.user_id - 1 for t in waiting}  # no thread read another's reply
