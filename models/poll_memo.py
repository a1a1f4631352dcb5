"""A web process's poll memo: a waiting fan far from the front is answered without Redis.

A waiting poll is one Redis round trip (the poll script). Under a sale's load that round trip is
what a poll waits for beyond a bare route's work: the thread sends, Redis must get a CPU, the
reply must wake the thread again (issue 15: poll p50 1.09-1.65x the bare route beside it with
Redis at nice -10, 1.57-3.88x without, 2026-12-04). Most waiting fans are far back, and what a
poll tells them there (still waiting, about where, when to ask again) does not need a fresh read
of their own place, only of how the line moved. So each web process keeps, per token it saw
answered by Redis (a join or a poll), that verified answer with what the same script read: the
token's arrival sequence (its score in wr:{c:N}:waiting) and the concert's two departure counters

  wr:{c:N}:popped  waiting tokens ever popped from the head by admission (admitted or dropped):
                   every one was ahead of every fan still waiting
  wr:{c:N}:gone    waiting tokens ever removed elsewhere (a leave, the abandoned-waiter sweep, a
                   dead token replaced on join): ahead or behind

and per concert, read by one small script at most every FRESH_S (the snapshot: the counters, the
admission rate, sold out, gate, and `beyond`, the arrival sequence of the fan at rank `reach`).
`reach` is how far admission can get before the next snapshot: one pass pops at most its free
slots and POP_BUDGET abandoned waiters, and `passes` passes fit in FRESH_S (those of the interval
and one more, a late pass and the next on time): reach = passes x (active limit + 1,000), 2,200
for the flash sale's 100. A fan whose arrival sequence is above `beyond` was further back than
that when the snapshot was read, so it cannot have been admitted since, whoever left meanwhile:
an exact test, whatever thousands leave at a sell-out. Its place now is between `low` = rank -
popped since - gone since (every departure was ahead) and `high` = rank - popped since (every
other departure was behind). The memo answers the poll itself when

  - the caller is the token's user (else Redis answers, and the route its 403);
  - the fan's answer was verified by Redis less than VERIFY_S ago;
  - the concert's gate is open (as read less than FRESH_S ago); and either
  - it is not sold out, the fan is beyond `reach` and `high` and `low` are less than SPREAD apart
    (else the fan would read a rank far worse than the truth);
  - or it is sold out (as read less than FRESH_S ago) and the fan's arrival sequence is not below
    the head's then: it had not been popped, and admission had stopped. When a sold-out concert's
    seats come back, the admission pass that clears `soldout` sets `wr:{c:N}:reopen` for
    REOPEN_MS (twice FRESH_S) in the same script, and no pass admits while it is set: a sold-out
    snapshot stays true of who was admitted until it is read again. So every waiting fan of this
    process learns soldOut here. At a sell-out every waiting fan polls once more to learn it
    (4,793 of the flash sale's 7,445 polls, 2026-12-05 03:27 UTC) and leaves, thousands within
    seconds: the line gets shorter than `reach` at once, so `beyond` alone would send them all
    to Redis (8,032 of 8,032 polls at 03:56).

The answer says WAITING with rank `high` (never better than the truth: a later exact read only
lowers it) and paces the next poll from `low` (never later than an exact read would say). The
snapshot is the memo's only Redis read: one round trip per concert per FRESH_S per process,
whatever the number of polls. Such a fan's poll more than 20 % before the pollAfterMs this
process gave is refused here as the script would refuse it (RateLimited), with no Redis work at
all; any other early poll is the script's to refuse. A memo answer keeps the place alive as a
Redis poll does, one second later: its poll time is written by a background flush once a second,
one short script per concert and up to FLUSH_SLICE tokens (`p` only moves forward, and only on a
token still WAITING; a token found gone is forgotten). A process killed between two flushes
loses up to a second of keep-alive: the place survives, since pollAfterMs is at most a third of
WAITING_TTL.

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
REOPEN_MS = int(2 * FRESH_S * 1000)  # no admission this long after a sold-out concert's seats come back
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

# The concert now: ARGV[1..5] as the waiting room's prelude, ARGV[6] the reach; every key it reads is
# declared (KEYS = waiting, rate, popped, gone, soldout, gate, pre: one concert's slot).
# {admissions/s, popped, gone, sold out, gate closed, the arrival sequence of the fan at rank
# `reach` ('inf' when fewer wait; 0 when the pre-queue alone is that long), the head's ('inf': none)}
SNAPSHOT_LUA = """
local c = redis.call('MGET', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
local reach, pre = tonumber(ARGV[6]), redis.call('ZCARD', KEYS[7])
local beyond = '0'
if reach > pre then
  beyond = redis.call('ZRANGE', KEYS[1], reach - pre - 1, reach - pre - 1, 'WITHSCORES')[2] or 'inf'
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or 'inf'
-- c[1] is false, never nil, when no rate is set: per_second reads nothing more
return {tostring(per_second(c[1])), c[2] or 0, c[3] or 0, c[4] and 1 or 0, c[5] and 1 or 0, beyond, head}
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
    seq: int  # its arrival sequence: its place in the line (0: none, never answered here)
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
    reach: int  # how far back one admission can reach in FRESH_S (the snapshot's ARGV[6])
    beyond: float  # the arrival sequence at rank `reach` when read (inf: the line is shorter)
    head: float  # the arrival sequence at the head when read (inf: nobody waits)
    read: float  # monotonic time of the snapshot (-inf: none yet)


def reach(limit: int, admit_interval_s: float) -> int:
    """How many fans from the front admission may pop before a snapshot is read again: one pass
    pops at most its free slots and POP_BUDGET abandoned waiters, and the passes that fit in
    FRESH_S run, and one more (a late pass and the next on time). The capacity model counts it too."""
    return (math.ceil(FRESH_S / admit_interval_s) + 1) * (limit + POP_BUDGET)


def monotonic() -> float:
    """The memo's clock (seconds): time.monotonic, unless a test moves it."""
    return time.monotonic()


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
        snapshot: Callable[[int, int], Sequence[Any]],
        poll_max_ms: int,
        waiting_ttl_ms: int,
        admit_interval_s: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.r = client
        self._snapshot = snapshot  # (concert id, reach) -> the SNAPSHOT script's reply
        self._keepalive = client.register_script(KEEPALIVE)
        self.poll_max_ms = poll_max_ms
        self.waiting_ttl_ms = waiting_ttl_ms
        self.admit_interval_s = admit_interval_s
        self.clock = clock if clock is not None else (lambda: monotonic())  # looked up each call: tests move it
        self._fans: dict[str, _Fan] = {}
        self._concerts: dict[int, _Concert] = {}
        self._pending: dict[str, tuple[str, float, int]] = {}  # token -> (hash key, polled at, pollAfterMs)
        self._lock = threading.Lock()
        self._pid = 0  # the process whose flush thread runs (a fork starts its own)
        self.answered = 0  # polls answered here (tests, bench/unit_costs.py)
        self.background = True  # the flush runs on its own thread (tests call flush() themselves)

    def reach(self, limit: int) -> int:
        """reach() at this process's ADMIT_INTERVAL."""
        return reach(limit, self.admit_interval_s)

    # -- what Redis said -------------------------------------------------------------------------

    def remember(self, info: QueueToken, counters: Sequence[Any]) -> None:
        """A verified answer (a join's or a poll's) and what the same script read: the concert's
        (popped, gone) and the token's arrival sequence; anything but WAITING is forgotten.

        It never touches the concert's snapshot: a reply's sold out (or counters) mixed into an
        older read of the line would let that read speak for a fan a pass admitted since."""
        if info.status != WAITING:
            self._fans.pop(info.token, None)
            return
        now = self.clock()
        popped, gone, seq = int(counters[0]), int(counters[1]), int(float(_text(counters[2]) or 0))
        if len(self._fans) >= MAX_ENTRIES:
            self._fans.clear()
        self._fans[info.token] = _Fan(
            info.user_id,
            info.concert_id,
            seq,
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

    def _concert(self, concert_id: int, now: float, reach: int) -> _Concert:
        c = self._concerts.get(concert_id)
        if c is not None and now - c.read <= FRESH_S and c.reach == reach:
            return c
        per_s, popped, gone, sold_out, gated, beyond, head = self._snapshot(concert_id, reach)
        c = self._concerts[concert_id] = _Concert(
            float(_text(per_s)),
            int(popped),
            int(gone),
            int(sold_out) == 1,
            int(gated) == 1,
            reach,
            float(_text(beyond)),
            float(_text(head)),
            now,
        )
        return c

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
        reach = self.reach(limit)
        c = self._concert(fan.concert_id, now, reach)  # a stale one could refuse an admitted fan's poll
        place = self._place(fan, c, reach)
        if place is None:
            return None
        if now < fan.due - (fan.due - fan.last) * EARLY_FRACTION:  # as the poll script refuses one
            wait_ms = math.ceil((fan.due - now) * 1000)
            TALLY.inc(POLL_ANSWERS, ("memo_early",))
            raise RateLimited(f"poll again in {wait_ms} ms (pollAfterMs)", retry_after=max(1, -(-wait_ms // 1000)))
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
    def _place(fan: _Fan, c: _Concert, reach: int) -> tuple[int, int] | None:
        """(rank shown, rank paced from) when the memo may answer for the fan, else None."""
        if c.gated or c.per_s <= 0 or fan.seq <= 0 or c.reach != reach:
            return None
        high = fan.rank - (c.popped - fan.popped)
        low = high - (c.gone - fan.gone)
        if c.sold_out:  # not popped before the snapshot, and no pass admits until it is read again
            return (high, max(low, 1)) if fan.seq >= c.head else None
        if not fan.seq > c.beyond:  # not certainly beyond what admission can reach before the next read
            return None
        if high - low > SPREAD * high:
            return None
        return high, max(low, 1)

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
