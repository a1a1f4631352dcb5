"""A web process's poll memo: a waiting fan far from the front is answered without Redis.

A waiting poll is one Redis round trip (the poll script). Under a sale's load that round trip is
what a poll waits for beyond a bare route's work: the thread sends, Redis must get a CPU, the
reply must wake the thread again (issue 15: poll p50 1.09-1.65x the bare route beside it with
Redis at nice -10, 1.57-3.88x without, 2026-12-04). Most waiting fans are far back, and what a
poll tells them there (still waiting, about where, when to ask again) does not need a fresh read
of their own place, only of how the line moved. So each web process keeps, per token it saw
answered by Redis (a join or a poll), that verified answer with the concert's two departure
counters as they were in the same script:

  wr:{c:N}:popped  waiting tokens ever popped from the head by admission (admitted or dropped):
                   every one was ahead of every fan still waiting
  wr:{c:N}:gone    waiting tokens ever removed elsewhere (a leave, the abandoned-waiter sweep, a
                   dead token replaced on join): ahead or behind

and per concert the counters, the admission rate, sold out and gate as last read (by any join or
poll of this process, or one small script when that is older than FRESH_S). A fan's place now is
then between `low` = rank - popped since - gone since (every departure was ahead) and `high` =
rank - popped since (every other departure was behind). The memo answers the poll itself when

  - the caller is the token's user (else Redis answers, and the route its 403);
  - the fan's answer was verified by Redis less than VERIFY_S ago;
  - the concert's gate is open (as read less than FRESH_S ago);
  - `low` > the concert's active limit + 1,000: one admission pass pops at most its free slots
    and 1,000 abandoned waiters, so the fan cannot have been admitted since the counters were
    read (sold out or not: within FRESH_S seats may come back and a pass admit);
  - `high` and `low` are less than SPREAD apart (else the fan would read a rank far worse than
    the truth), unless the concert is sold out: then the fan learns soldOut here. At a sell-out
    every waiting fan polls once more to learn it (4,793 of the flash sale's 7,445 polls,
    2026-12-05 03:27 UTC, when the memo left sold-out polls to Redis), and their leaving makes
    `gone` grow by thousands within seconds.

The answer says WAITING with rank `high` (never better than the truth: a later exact read only
lowers it) and paces the next poll from `low` (never later than an exact read would say). Such a
fan's poll more than 20 % before the pollAfterMs this process gave is refused here as the script
would refuse it (RateLimited), with no Redis work at all; any other early poll is the script's
to refuse. A memo answer keeps the place alive as a Redis poll does, one second later: its poll
time is written by a background flush once a second, one short script per concert and up to
FLUSH_SLICE tokens (`p` only moves forward, and only on a token still WAITING; a token found
gone is forgotten). A process killed between two flushes loses up to a second of keep-alive: the
place survives, since pollAfterMs is at most a third of WAITING_TTL.

What it costs: a token left through another process reads WAITING here once more: the flush
after that answer finds it gone and forgets it (a leave or a payment through this process
forgets it at once). The memo holds at most MAX_ENTRIES tokens (cleared when
full, as the ACTIVE-status cache is). Fair-start concerts are never answered here (their
pre-queue is ranked by the draw): the hot path sends them to Flask.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from models.errors import RateLimited
from models.queue_tokens import QueueToken
from models.redis_support import NOW_MS_LUA
from models.tally import TALLY
from models.waiting_room_lua import EARLY_FRACTION, MIN_POLL_MS

log = logging.getLogger(__name__)

FRESH_S = 0.25  # the concert's counters are read again when older than this
VERIFY_S = 120.0  # a fan's place is read from Redis again at least this often (4 of the longest polls)
SPREAD = 0.1  # ... and when the departures of unknown side make `high` and `low` this far apart
FLUSH_S = 1.0  # memo-answered polls' keep-alive is written this often
FLUSH_SLICE = 500  # tokens per keep-alive script call (one short script)
MAX_ENTRIES = 200_000  # tokens remembered per process (cleared when full)
POP_BUDGET = 1_000  # the admission script's extra pops per pass (abandoned waiters dropped)
WAITING = "WAITING"
POLL_ANSWERS = Counter(
    "queue_poll_answers_total",
    "Waiting fans' polls by who answered: memo (this web process), memo_early (refused early here), redis",
    ["source"],
)

# The concert's counters now: ARGV[1..5] as the waiting room's prelude, KEYS[1] routes it
SNAPSHOT_LUA = """
local c = redis.call('MGET', TAG .. ':rate', TAG .. ':popped', TAG .. ':gone', TAG .. ':soldout', TAG .. ':gate')
return {tostring(per_second(c[1])), c[2] or 0, c[3] or 0, c[4] and 1 or 0, c[5] and 1 or 0}
"""

# Keep-alive of memo-answered polls: KEYS = token hashes, ARGV = (ms ago, pollAfterMs) for each.
# `p` only moves forward and only on a token still WAITING; returns the indexes of the others.
KEEPALIVE = (
    NOW_MS_LUA
    + """
local now, ended = now_ms(), {}
for i, hk in ipairs(KEYS) do
  local h = redis.call('HMGET', hk, 'status', 'p')
  if h[1] == 'WAITING' then
    local last = now - tonumber(ARGV[2 * i - 1])
    if (tonumber(string.match(h[2] or '', '^(%d+)')) or 0) < last then
      redis.call('HSET', hk, 'p', last .. ':' .. (last + tonumber(ARGV[2 * i])))
    end
  else
    ended[#ended + 1] = i
  end
end
return ended
"""
)


@dataclass
class _Fan:
    user_id: int
    concert_id: int
    rank: int  # as Redis last said
    popped: int  # the concert's counters in the same script
    gone: int
    verified: float  # monotonic time of that answer
    expires_ms: int  # the token's expiry it gave
    last: float  # the last poll answered (monotonic), here or by Redis
    due: float  # the pollAfterMs it was given, as a monotonic time


@dataclass
class _Concert:
    per_s: float
    popped: int
    gone: int
    sold_out: bool
    gated: bool
    read: float  # monotonic


def pace(rank: int, per_s: float, *, poll_max_ms: int, waiting_ttl_ms: int) -> tuple[int, int]:
    """(estimated wait s, pollAfterMs) of a rank at an admission rate: the poll script's pace()."""
    wait_ms = rank / per_s * 1000
    after = min(max(MIN_POLL_MS, math.floor(wait_ms / 4)), poll_max_ms, math.floor(waiting_ttl_ms / 3))
    return max(1, math.floor(wait_ms / 1000 + 0.5)), after


class PollMemo:
    """One web process's memo of waiting fans (see the module's doc)."""

    def __init__(
        self,
        client: Any,
        *,
        snapshot: Callable[[int], Sequence[Any]],
        poll_max_ms: int,
        waiting_ttl_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.r = client
        self._snapshot = snapshot  # concert id -> the SNAPSHOT script's reply
        self._keepalive = client.register_script(KEEPALIVE)
        self.poll_max_ms = poll_max_ms
        self.waiting_ttl_ms = waiting_ttl_ms
        self.clock = clock
        self._fans: dict[str, _Fan] = {}
        self._concerts: dict[int, _Concert] = {}
        self._pending: dict[str, tuple[str, float, int]] = {}  # token -> (hash key, polled at, pollAfterMs)
        self._lock = threading.Lock()
        self._pid = 0  # the process whose flush thread runs (a fork starts its own)
        self.answered = 0  # polls answered here (tests, bench/unit_costs.py)
        self.background = True  # the flush runs on its own thread (tests call flush() themselves)

    # -- what Redis said -------------------------------------------------------------------------

    def remember(self, info: QueueToken, counters: Sequence[Any]) -> None:
        """A verified answer (a join's or a poll's) and the concert's (rate/s, popped, gone) read in
        the same script; anything but WAITING is forgotten."""
        if info.status != WAITING:
            self._fans.pop(info.token, None)
            return
        now = self.clock()
        per_s, popped, gone = float(_text(counters[0]) or 0), int(counters[1]), int(counters[2])
        self._seen(info.concert_id, per_s, popped, gone, sold_out=info.sold_out, gated=None, now=now)
        if len(self._fans) >= MAX_ENTRIES:
            self._fans.clear()
        self._fans[info.token] = _Fan(
            info.user_id,
            info.concert_id,
            info.rank,
            popped,
            gone,
            now,
            info.expires_at_ms,
            now,
            now + info.poll_after_ms / 1000,
        )

    def forget(self, token: str) -> None:
        """The token ended through this process (a leave, a payment): never answered here again."""
        self._fans.pop(token, None)
        with self._lock:
            self._pending.pop(token, None)

    def _seen(
        self, concert_id: int, per_s: float, popped: int, gone: int, *, sold_out: bool, gated: bool | None, now: float
    ) -> _Concert:
        c = self._concerts.get(concert_id)
        if c is None:
            c = self._concerts[concert_id] = _Concert(per_s, popped, gone, sold_out, bool(gated), now)
        elif popped >= c.popped and gone >= c.gone:  # not older than what is known (replies may cross)
            c.per_s, c.popped, c.gone, c.sold_out, c.read = per_s, popped, gone, sold_out, now
            if gated is not None:
                c.gated = gated
        return c

    def _concert(self, concert_id: int, now: float) -> _Concert:
        c = self._concerts.get(concert_id)
        if c is not None and now - c.read <= FRESH_S:
            return c
        per_s, popped, gone, sold_out, gated = self._snapshot(concert_id)
        return self._seen(
            concert_id,
            float(_text(per_s)),
            int(popped),
            int(gone),
            sold_out=int(sold_out) == 1,
            gated=int(gated) == 1,
            now=now,
        )

    # -- a poll ------------------------------------------------------------------------------------

    def answer(self, token: str, user_id: int, limit: int) -> QueueToken | None:
        """The poll's answer from the memo, or None (Redis answers). RateLimited for an early poll.

        `limit` is the concert's active limit in force (the operator's, else ACTIVE_LIMIT)."""
        fan = self._fans.get(token)
        if fan is None or fan.user_id != user_id:
            return None
        now = self.clock()
        if now - fan.verified > VERIFY_S:
            return None
        known = self._concerts.get(fan.concert_id)
        # a fan of this memo (as the counters last read): an early poll is refused here, unread,
        # as the poll script refuses one
        early = now < fan.due - (fan.due - fan.last) * EARLY_FRACTION
        if early and known is not None and self._place(fan, known, limit) is not None:
            wait_ms = math.ceil((fan.due - now) * 1000)
            TALLY.inc(POLL_ANSWERS, ("memo_early",))
            raise RateLimited(f"poll again in {wait_ms} ms (pollAfterMs)", retry_after=max(1, -(-wait_ms // 1000)))
        c = self._concert(fan.concert_id, now)
        place = self._place(fan, c, limit)
        if place is None:
            return None
        high, low = place
        wait_s, after = pace(low, c.per_s, poll_max_ms=self.poll_max_ms, waiting_ttl_ms=self.waiting_ttl_ms)
        fan.last, fan.due = now, now + after / 1000
        with self._lock:  # flush() swaps the dict under the lock
            self._pending[token] = (f"wr:{{c:{fan.concert_id}}}:t:{token}", now, after)
        self._start_flush()
        self.answered += 1
        TALLY.inc(POLL_ANSWERS, ("memo",))
        return QueueToken(
            token=token,
            user_id=user_id,
            concert_id=fan.concert_id,
            status=WAITING,
            rank=high,
            estimated_wait_seconds=wait_s,
            expires_at_ms=fan.expires_ms + int((now - fan.verified) * 1000),
            sold_out=c.sold_out,
            poll_after_ms=after,
        )

    @staticmethod
    def _place(fan: _Fan, c: _Concert, limit: int) -> tuple[int, int] | None:
        """(high, low) when the memo may answer for the fan at these counters, else None."""
        if c.gated or c.per_s <= 0:
            return None
        high = fan.rank - (c.popped - fan.popped)
        low = high - (c.gone - fan.gone)
        if low <= limit + POP_BUDGET:  # even when sold out: seats may return and a pass admit meanwhile
            return None
        if not c.sold_out and high - low > SPREAD * high:  # sold out, the rank matters less than the news
            return None
        return high, low

    # -- keep-alive ------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write the pending keep-alives (one script per FLUSH_SLICE tokens); how many were written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        now = self.clock()
        by_slot: dict[str, list[tuple[str, str, int, int]]] = {}
        for token, (key, at, after) in pending.items():
            by_slot.setdefault(key[: key.index("}") + 1], []).append((token, key, int((now - at) * 1000), after))
        written = 0
        for items in by_slot.values():
            for i in range(0, len(items), FLUSH_SLICE):
                chunk = items[i : i + FLUSH_SLICE]
                args = [v for _, _, ago, after in chunk for v in (ago, after)]
                try:
                    ended = self._keepalive(keys=[key for _, key, _, _ in chunk], args=args)
                except Exception:  # Redis away: try again at the next flush (newer polls win)
                    log.warning("poll memo keep-alive failed; retried next flush", exc_info=True)
                    with self._lock:
                        for token, key, ago, after in chunk:
                            self._pending.setdefault(token, (key, now - ago / 1000, after))
                    continue
                for index in ended:
                    self.forget(chunk[int(index) - 1][0])
                written += len(chunk) - len(ended)
        return written

    def _start_flush(self) -> None:
        if self._pid == os.getpid() or not self.background:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="poll-memo-flush", daemon=True).start()
        atexit.register(self.flush)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            try:
                self.flush()
            except Exception:  # never let the thread die
                log.exception("poll memo flush failed")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
