"""The waiting room's "now" is the Redis server's clock (TIME inside the scripts), not the caller's.

Two web hosts share one concert: one with a correct clock, one whose clock is far off (time.time
monkeypatched for its calls only). Run on the single Redis server and on the Redis Cluster.

Hidden ways this can fail: a host an hour ahead treats every active token as expired (its issue
script drops them from the active set and admits its own joiner past the queue, its polls answer
401 for live tokens); a host an hour behind writes poll times an hour old, so the next sweep by a
correct host drops fans who just polled; expiry times handed to clients drift with the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from config.bootstrap import make_redis
from models.errors import TokenInvalid
from models.waiting_room import ACTIVE, WAITING, WaitingRoom

pytestmark = pytest.mark.integration

CONCERT = 730_077  # no other test uses this concert id
ACTIVE_TTL, WAITING_TTL = 600, 300
HOUR_MS = 3_600_000


@pytest.fixture
def redis_url(redis_any: str) -> str:
    """Every test here runs on the single Redis server and on the Redis Cluster."""
    return redis_any


@pytest.fixture
def room(redis_url: str) -> Iterator[WaitingRoom]:
    """A waiting room with one active slot on an empty real Redis db, emptied again afterwards."""
    client = make_redis(redis_url)
    client.flushdb()
    yield WaitingRoom(client, active_limit=1, active_ttl=ACTIVE_TTL, waiting_ttl=WAITING_TTL)
    client.flushdb()
    client.close()


@pytest.fixture
def skewed(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], object]:
    """`with skewed(offset_ms):` runs the block as a host whose clock is offset_ms off."""
    real = time.time

    @contextmanager
    def host(offset_ms: int) -> Iterator[None]:
        monkeypatch.setattr(time, "time", lambda: real() + offset_ms / 1000)
        try:
            yield
        finally:
            monkeypatch.setattr(time, "time", real)

    return host


def server_ms(room: WaitingRoom) -> int:
    seconds, micros = room.r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_host_an_hour_ahead_neither_expires_live_tokens_nor_lets_its_joiner_skip_the_queue(
    room: WaitingRoom, skewed: Callable[[int], object]
) -> None:
    # Given one fan holding the only active slot, admitted through a host with a correct clock
    first = room.issue(user_id=1, concert_id=CONCERT)
    assert first.status == ACTIVE

    # When a host whose clock is an hour ahead takes a second fan's join and polls the first
    with skewed(HOUR_MS):  # type: ignore[attr-defined]
        second = room.issue(user_id=2, concert_id=CONCERT)
        polled = room.status(token=first.token, touch=False)
        counts = room.counts(concert_id=CONCERT)

    # Then the second fan waits behind the first (rank 1), whose token is still live
    assert (second.status, second.rank) == (WAITING, 1)
    assert polled.status == ACTIVE
    assert counts == (1, 1)
    # and the expiry handed out is the server's now + ACTIVE_TTL, not the host's
    now = server_ms(room)
    assert abs(polled.expires_at_ms - (now + ACTIVE_TTL * 1000)) < 5_000, polled.expires_at_ms - now


def test_a_host_an_hour_behind_keeps_its_pollers_alive_and_admission_by_a_correct_host_sees_them(
    room: WaitingRoom, skewed: Callable[[int], object]
) -> None:
    # Given the active slot taken and a fan waiting behind it
    first = room.issue(user_id=1, concert_id=CONCERT)
    waiter = room.issue(user_id=2, concert_id=CONCERT)
    assert waiter.status == WAITING

    # whose last poll was almost WAITING_TTL ago (1.5 s of life left) and whose next poll is due
    now = server_ms(room)
    room.r.hset(f"wr:{{c:{CONCERT}}}:t:{waiter.token}", "p", f"{now - WAITING_TTL * 1000 + 1500}:{now - 1000}")

    # When the waiter's poll is served by a host whose clock is an hour behind
    with skewed(-HOUR_MS):  # type: ignore[attr-defined]
        polled = room.status(token=waiter.token, touch=True)
    assert (polled.status, polled.rank) == (WAITING, 1)

    # and, 2 s later, the first fan leaves and a host with a correct clock runs the admission pass
    # (which first sweeps away waiters whose last poll is WAITING_TTL old)
    time.sleep(2.0)
    assert room.leave(token=first.token)
    passed = room.admit(concert_id=CONCERT)

    # Then the waiter, whose poll kept the place, is admitted, not dropped as abandoned
    assert (passed.admitted, passed.dropped) == (1, 0)
    assert room.status(token=waiter.token, touch=False).status == ACTIVE
    with skewed(HOUR_MS), pytest.raises(TokenInvalid):  # type: ignore[attr-defined]
        room.status(token=first.token, touch=False)  # the one who left stays gone, whatever the clock
