"""The poll memo on real Redis (single server and Cluster): far-back polls answered by the web
process itself, never better than the truth, never after an admission, kept alive by the flush."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.connection import AbstractConnection

from config.bootstrap import make_redis
from models import poll_memo
from models.errors import RateLimited, TokenInvalid
from models.poll_memo import POP_BUDGET, pace
from models.queue_tokens import QueueToken
from models.waiting_room import ACTIVE, WAITING, WaitingRoom

pytestmark = pytest.mark.integration

CONCERT = 731_001  # no other test uses this concert id
LIMIT = 2
# a fan further back than this is the memo's to answer: two admission passes at ADMIT_INTERVAL 1 s
REACH = 2 * (LIMIT + POP_BUDGET)
FANS = REACH + 60


class Clock:
    """The memo's monotonic clock, moved by the test (Redis keeps its own)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(redis_any: str) -> Iterator[tuple[WaitingRoom, Clock, list[QueueToken]]]:
    """A room with the memo on (ACTIVE_LIMIT 2) and FANS joined: 2 admitted at once, the rest waiting."""
    client = make_redis(redis_any)
    client.flushdb()
    room = WaitingRoom(client, active_limit=LIMIT, active_ttl=600, waiting_ttl=300, poll_memo=True)
    clock = Clock()
    assert room.memo is not None
    room.memo.clock = clock
    room.memo.background = False  # the test flushes
    fans = [room.issue(user_id=user, concert_id=CONCERT) for user in range(1, FANS + 1)]
    assert [f.status for f in fans[:LIMIT]] == [ACTIVE] * LIMIT and fans[-1].rank == FANS - LIMIT
    room.snapshot(CONCERT, REACH)  # its script loaded (another test may have flushed the scripts): not counted later
    yield room, clock, fans
    client.flushdb()
    client.close()


@contextlib.contextmanager
def round_trips() -> Iterator[list[int]]:
    """Counts what this thread sends to Redis (socket writes: a pipeline or a script is one), on a
    single server or a Cluster; other threads of the suite (a scheduler's, a flush's) are not counted."""
    me, sent, original = threading.get_ident(), [0], AbstractConnection.send_packed_command

    def counted(conn: Any, command: Any, check_health: bool = True) -> None:
        if threading.get_ident() == me:
            sent[0] += 1
        original(conn, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def due_in_redis(room: WaitingRoom, token: str) -> None:
    """Redis's clock has not moved with the test's: make the token's next Redis poll on time."""
    now_ms = int(room.r.time()[0]) * 1000
    room.r.hset(f"wr:{{c:{CONCERT}}}:t:{token}", "p", f"{now_ms - 60_000}:{now_ms - 1}")


def exact(room: WaitingRoom, token: str) -> QueueToken:
    return room.status(token=token, touch=False)


def test_a_far_back_poll_costs_no_redis_round_trip_and_reads_as_redis_would(setup: Any) -> None:
    room, clock, fans = setup
    far = [f for f in fans if f.status == WAITING and f.rank > REACH]
    assert len(far) == FANS - LIMIT - REACH
    clock.now += 31  # every join's pollAfterMs (at most 30 s here) has passed: the counters are stale
    with round_trips() as sent:
        answers = [room.poll_as(token=f.token, user_id=f.user_id, limit=LIMIT) for f in far]
    assert sent == [1]  # one read of the concert's counters (the snapshot script) for all of them
    assert room.memo is not None and room.memo.answered == len(far)
    for fan, got in zip(far, answers, strict=True):
        truth = exact(room, fan.token)
        assert (got.status, got.rank, got.user_id, got.sold_out) == (WAITING, truth.rank, fan.user_id, False)
        assert (got.estimated_wait_seconds, got.poll_after_ms) == (truth.estimated_wait_seconds, truth.poll_after_ms)


def test_after_admissions_and_leaves_the_rank_is_never_better_than_the_truth_nor_the_pace_later(
    setup: Any,
) -> None:
    room, clock, fans = setup
    last = fans[-1]
    left_ahead = [f for f in fans if f.status == WAITING][:5]
    for f in left_ahead:
        assert room.leave(token=f.token)
    room.r.delete(f"wr:{{c:{CONCERT}}}:active")  # both slots free: the pass admits two
    admission = room.admit(concert_id=CONCERT)
    assert admission.admitted == LIMIT
    clock.now += 31
    got = room.poll_as(token=last.token, user_id=last.user_id, limit=LIMIT)
    truth = exact(room, last.token)
    assert room.memo is not None and room.memo.answered == 1
    assert truth.rank == last.rank - LIMIT - 5
    assert got.rank == last.rank - LIMIT  # popped from the head: certainly ahead; the leaves: unknown
    low = got.rank - 5
    per_s = float(room.snapshot(CONCERT, REACH)[0])
    assert (got.estimated_wait_seconds, got.poll_after_ms) == pace(
        low, per_s, poll_max_ms=room.poll_max_ms, waiting_ttl_ms=room.waiting_ttl_ms
    )
    assert got.poll_after_ms <= truth.poll_after_ms


def test_near_the_front_sold_out_or_another_users_poll_is_redis_s(setup: Any) -> None:
    room, clock, fans = setup
    clock.now += 31
    near = next(f for f in fans if f.status == WAITING)
    assert room.memo is not None
    assert room.memo.answer(near.token, near.user_id, LIMIT) is None
    due_in_redis(room, near.token)
    polled = room.poll_as(token=near.token, user_id=near.user_id, limit=LIMIT)
    assert polled.rank == 1 and room.memo.answered == 0
    far = fans[-1]
    assert room.memo.answer(far.token, far.user_id + 1, LIMIT) is None  # another user: the route's 403
    assert room.memo.answer(far.token, far.user_id, limit=FANS) is None  # an operator's larger limit


def test_at_a_sell_out_a_far_back_fan_learns_it_from_the_memo_and_the_front_from_redis(setup: Any) -> None:
    room, clock, fans = setup
    fans += [room.issue(user_id=user, concert_id=CONCERT) for user in range(FANS + 1, FANS + 401)]
    waiting = [f for f in fans if f.status == WAITING]
    room.r.delete(f"wr:{{c:{CONCERT}}}:active")
    assert room.admit(concert_id=CONCERT).admitted == LIMIT  # the first two waiting are ACTIVE now
    left = 300  # the rank's two bounds drift more than 10 % apart: only a sold-out concert is answered then
    for f in waiting[LIMIT : LIMIT + left]:
        assert room.leave(token=f.token)
    clock.now += 31
    last = fans[-1]
    assert room.memo is not None
    assert room.memo.answer(last.token, last.user_id, LIMIT) is None  # not sold out: Redis's exact rank
    assert room.admit(concert_id=CONCERT, sold_out=True).admitted == 0  # admission stops
    clock.now += poll_memo.FRESH_S + 0.01
    assert room.memo is not None
    answers = {f.token: room.memo.answer(f.token, f.user_id, LIMIT) for f in waiting[LIMIT + left :]}
    for fan in waiting[:LIMIT]:  # popped before admission stopped: Redis tells them
        assert room.memo.answer(fan.token, fan.user_id, LIMIT) is None
        due_in_redis(room, fan.token)
        assert room.poll_as(token=fan.token, user_id=fan.user_id, limit=LIMIT).status == ACTIVE
    for fan in waiting[LIMIT + left :]:  # every fan still waiting learns it here, near the front or not
        got, truth = answers[fan.token], exact(room, fan.token)
        assert got is not None and (got.status, got.sold_out, got.rank) == (WAITING, True, truth.rank + left)


def test_seats_coming_back_reopen_admission_only_once_every_memo_has_read_it(setup: Any) -> None:
    room = setup[0]
    room.r.delete(f"wr:{{c:{CONCERT}}}:active")
    assert room.admit(concert_id=CONCERT, sold_out=True).admitted == 0
    assert room.admit(concert_id=CONCERT).admitted == 0  # seats came back: reopened, nobody admitted yet
    assert 0 < room.r.pttl(f"wr:{{c:{CONCERT}}}:reopen") <= poll_memo.REOPEN_MS
    assert poll_memo.REOPEN_MS >= 2 * poll_memo.FRESH_S * 1000  # past any snapshot that saw it sold out
    time.sleep(poll_memo.REOPEN_MS / 1000 + 0.05)
    assert room.admit(concert_id=CONCERT).admitted == LIMIT
    assert room.admit(concert_id=CONCERT).admitted == 0  # full: no flag was cleared, nothing reopened
    assert room.r.exists(f"wr:{{c:{CONCERT}}}:reopen") == 0


def test_an_early_far_back_poll_is_refused_without_redis(setup: Any) -> None:
    room, clock, fans = setup
    far = fans[-1]
    clock.now += 31
    first = room.poll_as(token=far.token, user_id=far.user_id, limit=LIMIT)
    clock.now += first.poll_after_ms / 1000 * 0.5  # half way: more than 20 % early
    with round_trips() as sent, pytest.raises(RateLimited) as refused:
        room.poll_as(token=far.token, user_id=far.user_id, limit=LIMIT)
    assert refused.value.retry_after == -(-first.poll_after_ms // 2 // 1000)
    assert sent == [1]  # the concert read again (its last read is older than FRESH_S), nothing of the fan's
    with round_trips() as sent, pytest.raises(RateLimited):
        room.poll_as(token=far.token, user_id=far.user_id, limit=LIMIT)
    assert sent == [0]  # within FRESH_S: no Redis at all
    clock.now += first.poll_after_ms / 1000 * 0.35  # 15 % early: on time
    assert room.poll_as(token=far.token, user_id=far.user_id, limit=LIMIT).status == WAITING


def test_the_flush_keeps_a_memo_answered_place_alive_and_forgets_an_ended_token(setup: Any) -> None:
    room, clock, fans = setup
    a, b = fans[-1], fans[-2]
    key = f"wr:{{c:{CONCERT}}}:t:"
    p_before = {t.token: room.r.hget(key + t.token, "p") for t in (a, b)}
    clock.now += 31
    for fan in (a, b):
        room.poll_as(token=fan.token, user_id=fan.user_id, limit=LIMIT)
    other = WaitingRoom(room.r, active_limit=LIMIT, active_ttl=600, waiting_ttl=300)  # another web process
    assert other.leave(token=b.token)
    assert room.memo is not None
    assert room.memo.flush() == 1
    p = room.r.hget(key + a.token, "p")
    last, due = (int(v) for v in (p.decode() if isinstance(p, bytes) else p).split(":"))
    sec, usec = room.r.time()
    redis_now = int(sec) * 1000 + int(usec) // 1000
    assert p_before[a.token] != room.r.hget(key + a.token, "p") and redis_now - 2_000 <= last <= redis_now
    assert due - last >= 1_000  # the pollAfterMs it was given
    assert room.r.hget(key + b.token, "p") is None  # the flush never brings a left token back
    clock.now += 31
    with pytest.raises(TokenInvalid):  # forgotten: Redis answers, and the token is gone
        room.poll_as(token=b.token, user_id=b.user_id, limit=LIMIT)
    assert room.memo.flush() == 0


def test_a_sold_out_reply_never_makes_an_older_read_of_the_line_speak_for_an_admitted_fan(setup: Any) -> None:
    """Only the memo's own read of the concert decides: another fan's poll that says soldOut must
    not turn a read taken before a pass (the admitted fan at or past its head) into a sold-out one."""
    room, clock, fans = setup
    clock.now += 31
    far = fans[-1]
    assert room.poll_as(token=far.token, user_id=far.user_id, limit=LIMIT).status == WAITING  # read: not sold out
    front = next(f for f in fans if f.status == WAITING)
    room.r.delete(f"wr:{{c:{CONCERT}}}:active")
    assert room.admit(concert_id=CONCERT).admitted == LIMIT  # `front` is ACTIVE now
    room.r.set(f"wr:{{c:{CONCERT}}}:soldout", "1")
    other = fans[-2]
    due_in_redis(room, other.token)
    assert room.status(token=other.token).sold_out  # a Redis poll (remembered) says sold out
    assert room.memo is not None
    assert room.memo.answer(front.token, front.user_id, LIMIT) is None  # within FRESH_S of the read
    due_in_redis(room, front.token)
    assert room.poll_as(token=front.token, user_id=front.user_id, limit=LIMIT).status == ACTIVE
