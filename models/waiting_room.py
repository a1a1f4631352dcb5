"""The waiting room over Redis: issue, poll and leave queue tokens; admit waiters in FIFO order.

Keys (all of one concert share the hash tag `{c:<id>}`, so they live on one Cluster slot):

  wr:{c:N}:waiting   ZSET  token -> arrival sequence (FIFO order of arrival at Redis)
  wr:{c:N}:active    ZSET  token -> expiry time (ms); members past their score are expired
  wr:{c:N}:seq       STRING arrival counter (INCR)
  wr:{c:N}:t:<token> HASH  user, concert, status, issued, admitted, expires (ms), and for a WAITING
                           token p = "<last poll ms>:<due ms>": the one field a poll writes (pacing,
                           keep-alive); no TTL while WAITING: the sweep drops it WAITING_TTL after p
  wr:{c:N}:u:<user>  STRING the user's live token for the concert
  wr:{c:N}:sweep     STRING the abandoned-waiter sweep's cursor (an arrival sequence)
  wr:{c:N}:admits    ZSET  "<ms>:<count>" (a pass) or "<token>:1" (admitted on join) -> ms: admissions
                           of the last minute; wr:{c:N}:rate = "<count>:<oldest ms>" (wait estimate)
  wr:{c:N}:soldout   STRING "1" while no seat of the concert can still be sold (none AVAILABLE or HELD)
  wr:{c:N}:reopen    STRING set for REOPEN_MS when the pass clears soldout (seats came back): no
                           admission meanwhile, so a poll memo's sold-out snapshot stays true of
                           who was admitted until it is read again (models/poll_memo.py)
  wr:{c:N}:admitted  STRING admissions ever (pass and join), for the operator console
  wr:{c:N}:popped    STRING waiting tokens ever popped from the head by admission (admitted or dropped)
  wr:{c:N}:gone      STRING waiting tokens ever removed elsewhere (leave, sweep, replaced on join);
                           with popped, what lets a web process answer far-back polls itself
                           (models/poll_memo.py)
  wr:{c:N}:gate      STRING "1" until a fair-start concert opens (models/prequeue.py):
                           no admission, no direct admission on join
  wr:{c:N}:pre       ZSET  a fair start's pre-queue, "<draw key>:<token>" in drawn order (models/prequeue.py):
                           the head of the queue, ranked and admitted before wr:{c:N}:waiting
  wr:concerts        SET   concert ids with waiters (admission finds work without KEYS); global, so
                           updated next to the scripts, never inside one

Tokens are `<concertId>.<22 url-safe chars>` (128 random bits), so a token names its concert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from config.settings import Settings
from models.errors import Forbidden, RateLimited, TokenInvalid, ValidationError
from models.poll_memo import POLL_ANSWERS, REOPEN_MS, SNAPSHOT_LUA, PollMemo
from models.queue_tokens import QueueToken, concert_of_token, fingerprint, new_token_for, token_of_reply
from models.redis_support import evalsha_direct, is_cluster
from models.tally import TALLY
from models.waiting_room_lua import (
    ADMIT,
    COUNTS,
    ISSUE,
    LEAVE,
    LIMITS,
    POLL,
    PRELUDE,
    RATE,
    REOPEN,
    SWEEP,
    SWEEP_SLICE,
)

WAITING, ACTIVE = "WAITING", "ACTIVE"
CONCERTS_KEY = "wr:concerts"
RECENT_S = 0.5  # an ACTIVE status read from Redis is believed again in this process for this long
RECENT_MAX = 65_536  # statuses kept per process (cleared when full)
_ENDS_HERE = [0]  # tokens this process ended (leave, payment): a status kept before is void


def ends_here() -> int:
    """A stamp to read before a status, for remember_active()."""
    return _ENDS_HERE[0]


RATE_WINDOW_MS = 60_000


@dataclass(frozen=True)
class Rate:
    """One fixed-window rate limit the issue script checks: `requests` per `window_ms` under `name`."""

    name: str
    requests: int
    window_ms: int


@dataclass(frozen=True)
class Window:
    """A rate-limit window as the client sees it (X-RateLimit-Limit, -Remaining, -Reset)."""

    limit: int
    remaining: int
    reset_ms: int


class JoinLimited(RateLimited):
    """A join over one of its rate limits: 429 RATE_LIMITED, Retry-After until the window resets."""

    def __init__(self, window: Window, wait_ms: int) -> None:
        super().__init__(f"too many joins; try again in {wait_ms} ms", retry_after=max(1, -(-wait_ms // 1000)))
        self.window = window


@dataclass(frozen=True)
class Admission:
    """What one admission pass did for one concert."""

    concert_id: int
    admitted: int
    waiting: int
    active: int
    dropped: int


def _tag(concert_id: int) -> str:
    return f"wr:{{c:{concert_id}}}"


def _keys(concert_id: int) -> dict[str, str]:
    tag = _tag(concert_id)
    return {
        "waiting": f"{tag}:waiting",
        "active": f"{tag}:active",
        "sweep": f"{tag}:sweep",
        "seq": f"{tag}:seq",
        "admits": f"{tag}:admits",
        "soldout": f"{tag}:soldout",
        "reopen": f"{tag}:reopen",
        "admitted": f"{tag}:admitted",
        "popped": f"{tag}:popped",
        "gone": f"{tag}:gone",
        # a fair start's pre-queue: models/prequeue.py owns these; the queue reads them
        "gate": f"{tag}:gate",
        "pre": f"{tag}:pre",
        "entrants": f"{tag}:entrants",
        "token_prefix": f"{tag}:t:",
        "user_prefix": f"{tag}:u:",
    }


class WaitingRoom:
    """The waiting room of every concert, over one Redis client."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        active_limit: int,
        active_ttl: int,
        waiting_ttl: int,
        poll_max_interval: float = 30.0,
        poll_memo: bool = False,
        admit_interval: float = 1.0,
    ) -> None:
        self.r = client
        self._cluster = is_cluster(client)  # an isinstance of a typing Protocol: ~2 µs, once
        self.active_limit = active_limit
        self.active_ttl_ms = active_ttl * 1000
        self.waiting_ttl_ms = waiting_ttl * 1000
        self.poll_max_ms = int(poll_max_interval * 1000)
        self._issue = client.register_script(ISSUE)
        self._limits = client.register_script(LIMITS)
        self._poll = client.register_script(POLL)
        self._leave = client.register_script(LEAVE)
        self._sweep = client.register_script(SWEEP)
        self._admit = client.register_script(ADMIT)
        self._counts = client.register_script(COUNTS)
        self._rate = client.register_script(RATE)
        self._snapshot = client.register_script(PRELUDE + SNAPSHOT_LUA)
        self._reopen = client.register_script(REOPEN)
        # a web process answers far-back polls itself (POLL_MEMO; the composition root turns it on)
        self.memo: PollMemo | None = None
        if poll_memo:
            self.memo = PollMemo(
                client,
                snapshot=self.snapshot,
                poll_max_ms=self.poll_max_ms,
                waiting_ttl_ms=self.waiting_ttl_ms,
                admit_interval_s=admit_interval,
            )
        self._recent: dict[str, tuple[float, int, QueueToken]] = {}  # token -> (until, ends here, status)

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> WaitingRoom:
        """The waiting room with the configured limits and timings."""
        return cls(
            client,
            active_limit=settings.active_limit,
            active_ttl=settings.active_ttl,
            waiting_ttl=settings.waiting_ttl,
            poll_max_interval=settings.poll_max_interval,
            poll_memo=settings.poll_memo,
            admit_interval=settings.admit_interval,
        )

    def _args(self, concert_id: int) -> list[str | int]:
        """The prelude's ARGV[1..5]: tag, limit, waiting ttl, active ttl, longest poll interval (no
        "now": the scripts read the Redis server's clock)."""
        return [
            _tag(concert_id),
            self.active_limit,
            self.waiting_ttl_ms,
            self.active_ttl_ms,
            self.poll_max_ms,
        ]

    def issue(self, *, user_id: int, concert_id: int, limit: int | None = None) -> QueueToken:
        """Join the queue (one live token per user and concert; asking again returns the same token).

        One Lua script, one round trip: it finds or creates the token and describes it. A joiner
        is admitted at once only when nobody waits and fewer than `limit` (default ACTIVE_LIMIT)
        are active; the operator controls pass 0 while admission is paused or paced.
        """
        return self.issue_limited(user_id=user_id, concert_id=concert_id, limit=limit)[0]

    def issue_limited(
        self, *, user_id: int, concert_id: int, limit: int | None = None, rates: tuple[Rate, ...] = ()
    ) -> tuple[QueueToken, Window | None]:
        """issue() with the join's rate limits checked inside the same script, first: JoinLimited
        (nothing else read or written) when one is over; else the token and the tightest window.

        The windows live in the concert's slot (`rl:{c:N}:<name>`), so a limit counts one
        concert's joins: what Flask-Limiter did here cost four more round trips and about half of
        the join's web CPU (bench/unit_costs.py, the flash sale's joins).
        """
        if user_id < 1 or concert_id < 1:
            raise ValidationError("userId and concertId must be positive integers")
        # built in place (no helper lists, no star-unpacking): the join is the hottest call here
        tag = _tag(concert_id)
        keys = [f"{tag}:waiting"]
        args: list[str | int] = [
            tag,
            self.active_limit,
            self.waiting_ttl_ms,
            self.active_ttl_ms,
            self.poll_max_ms,
            new_token_for(concert_id),
            user_id,
            concert_id,
            -1 if limit is None else limit,
            len(rates),
        ]
        for rate in rates:
            keys.append(f"rl:{{c:{concert_id}}}:{rate.name}")
            args += (rate.requests, rate.window_ms)
        # wr:concerts is global (its own Cluster slot): on one Redis the script adds the concert
        # itself (the last of KEYS), so a join is one EVALSHA, no pipeline; on a Cluster the SADD
        # follows the script, never precedes it: an admission pass that just dropped the concert
        # (nobody waited) sees it again.
        if not self._cluster:
            keys.append(CONCERTS_KEY)
        reply = evalsha_direct(self.r, self._issue, keys, args)
        _refuse_if_limited(reply)
        window = Window(int(reply[10]), int(reply[11]), int(reply[12])) if rates else None
        issued = token_of_reply(_text(reply[0]), reply[2:10], created=int(reply[1]) == 1)
        if self.memo is not None:
            self.memo.remember(issued, reply[13:16])
        if issued.created and issued.status != ACTIVE and self._cluster:
            self.r.sadd(CONCERTS_KEY, concert_id)
        return issued, window

    def check_rates(self, *, concert_id: int, rates: tuple[Rate, ...]) -> Window | None:
        """Count one join against `rates` alone (JoinLimited when one is over): for the joins that
        do not reach the issue script (a fair start's pre-queue, an unknown concert)."""
        if not rates:
            return None
        args = [*self._args(concert_id), *_rate_args(rates)]
        reply = self._limits(keys=[f"{_tag(concert_id)}:waiting", *_rate_keys(concert_id, rates)], args=args)
        _refuse_if_limited(reply)
        return Window(int(reply[1]), int(reply[2]), int(reply[3]))

    def status(self, *, token: str, touch: bool = True) -> QueueToken:
        """A token's status, rank, estimate and pollAfterMs in one round trip.

        A poll (touch) of a WAITING token records the poll time, which keeps the place alive, and
        is refused with RateLimited when it comes more than 20 % before the last pollAfterMs.
        """
        script, keys, args = self.status_call(token=token, touch=touch)
        found = evalsha_direct(self.r, script, keys, args)
        info = self.status_from(token=token, found=found)
        if touch and self.memo is not None:
            self.memo.remember(info, found[8:11])
        return info

    def poll_as(self, *, token: str, user_id: int, limit: int) -> QueueToken:
        """A fan's poll: from this process's memo when the fan is far enough back (no Redis at
        all, models/poll_memo.py), else status(). `limit` is the concert's active limit in force."""
        if self.memo is not None:
            found = self.memo.answer(token, user_id, limit)
            if found is not None:
                return found
            TALLY.inc(POLL_ANSWERS, ("redis",))
        return self.status(token=token)

    def snapshot(self, concert_id: int, reach: int) -> Any:
        """The concert's (admissions/s, popped, gone, sold out, gate closed, the arrival sequence at
        rank `reach`) now: the poll memo's read."""
        k = _keys(concert_id)
        keys = [k["waiting"], f"{_tag(concert_id)}:rate", k["popped"], k["gone"], k["soldout"], k["gate"], k["pre"]]
        return self._snapshot(keys=keys, args=[*self._args(concert_id), reach])

    def status_call(self, *, token: str, touch: bool = False) -> tuple[Any, list[str], list[str | int]]:
        """The poll script's (script, keys, args), to run in one round trip with other reads."""
        concert_id = concert_of_token(token)
        return self._poll, [f"{_tag(concert_id)}:waiting"], [*self._args(concert_id), token, int(touch)]

    def status_from(self, *, token: str, found: Any) -> QueueToken:
        """The QueueToken of a poll script's reply (TokenInvalid, or RateLimited for an early poll)."""
        if not found:
            raise TokenInvalid("the queue token is unknown or has expired")
        if found[0] == b"EARLY" or found[0] == "EARLY":
            wait_ms = int(found[1])
            raise RateLimited(f"poll again in {wait_ms} ms (pollAfterMs)", retry_after=max(1, -(-wait_ms // 1000)))
        return token_of_reply(token, found[:8], created=False)

    def recent_active(self, token: str) -> QueueToken | None:
        """The ACTIVE status of `token` this process read less than RECENT_S ago (else None).

        For read-only routes (the seat map): a fan browsing the map repeats the same token check.
        Never past the token's own expiry; dropped sooner when this process ends a token (leave,
        payment). What it costs: a token ended by another process still reads for up to RECENT_S.
        """
        found = self._recent.get(token)
        if found is None or found[1] != _ENDS_HERE[0]:
            return None
        if time.monotonic() < found[0] and _now_ms() < found[2].expires_at_ms:
            return found[2]
        return None

    def remember_active(self, info: QueueToken, stamp: int) -> None:
        """Keep an ACTIVE status for recent_active(), stamped with ends_here() as it was before the
        read (a token ended meanwhile voids it); other statuses are never kept."""
        if info.status != ACTIVE:
            return
        if len(self._recent) >= RECENT_MAX:
            self._recent.clear()
        self._recent[info.token] = (time.monotonic() + RECENT_S, stamp, info)

    def leave(self, *, token: str) -> bool:
        """Give up the place or the active slot; True if the token existed."""
        return self._left(token, "") == 1

    def leave_as(self, *, token: str, user_id: int) -> bool:
        """A fan's own leave (DELETE /queue/token): the owner check and the leave in one script,
        one round trip. True if the token existed and was the user's; Forbidden (nothing
        changed) if it is another user's."""
        left = self._left(token, str(user_id))
        if left < 0:
            raise Forbidden("the queue token belongs to another user")
        return left == 1

    def _left(self, token: str, caller: str) -> int:
        _ENDS_HERE[0] += 1
        concert_id = concert_of_token(token)
        if self.memo is not None:
            self.memo.forget(token)
        k = _keys(concert_id)
        keys = [f"{k['token_prefix']}{token}", k["waiting"], k["active"], k["pre"], k["entrants"], k["gone"]]
        return int(evalsha_direct(self.r, self._leave, keys, [token, k["user_prefix"], caller]))

    def owner(self, *, token: str) -> int | None:
        """The user a live token was issued to (None when unknown, expired or malformed)."""
        try:
            concert_id = concert_of_token(token)
        except TokenInvalid:
            return None
        user = self.r.hget(f"{_keys(concert_id)['token_prefix']}{token}", "user")
        return int(_text(user)) if user else None

    def expire_user(self, *, user_id: int, concert_id: int, token_fingerprint: str | None = None) -> bool:
        """End the user's live token for a concert (after payment); idempotent, True if one was live.

        With `token_fingerprint` (PaymentCompleted names the token that paid) only that token ends:
        a late or replayed event never ends a newer token the user joined with since.
        """
        k = _keys(concert_id)
        token = self.r.get(f"{k['user_prefix']}{user_id}")
        if not token:
            return False
        if token_fingerprint is not None and fingerprint(_text(token)) != token_fingerprint:
            return False
        return self.leave(token=_text(token))

    def sweep(self, *, concert_id: int, slice_size: int = SWEEP_SLICE) -> tuple[int, int, bool, int]:
        """One bounded slice of the abandoned-waiter sweep: (examined, dropped, wrapped, waiting)."""
        k = _keys(concert_id)
        args: list[str | int] = [k["token_prefix"], k["user_prefix"], self.waiting_ttl_ms, slice_size]
        examined, dropped, wrapped, waiting = (
            int(v) for v in self._sweep(keys=[k["waiting"], k["sweep"], k["gone"]], args=args)
        )
        return examined, dropped, bool(wrapped), waiting

    def sweep_pass(self, *, concert_id: int) -> int:
        """Enough slices (each one short script) that the whole line is swept every WAITING_TTL / 2
        at one pass a second; returns how many abandoned waiters were dropped."""
        total, slices = 0, 0
        while True:
            _, dropped, wrapped, waiting = self.sweep(concert_id=concert_id)
            total, slices = total + dropped, slices + 1
            needed = -(-waiting * 2000 // (SWEEP_SLICE * self.waiting_ttl_ms))
            if wrapped or slices >= needed:
                return total

    def admit(
        self, *, concert_id: int, sold_out: bool = False, limit: int | None = None, per_pass: int | None = None
    ) -> Admission:
        """One admission pass: sweep abandoned waiters, expire actives, fill free slots (FIFO).

        `limit` (default ACTIVE_LIMIT) and `per_pass` (default no cap) come from the operator controls.
        """
        k = _keys(concert_id)
        if sold_out:
            self.r.set(k["soldout"], "1", px=max(self.active_ttl_ms, 60_000))
        else:
            self._reopen(keys=[k["soldout"], k["reopen"]], args=[REOPEN_MS])
        swept = self.sweep_pass(concert_id=concert_id)
        keys = [k["waiting"], k["active"], k["admits"], k["soldout"], k["gate"], k["pre"], k["popped"], k["reopen"]]
        args: list[str | int] = [
            k["token_prefix"],
            self.active_limit if limit is None else limit,
            self.active_ttl_ms,
            self.waiting_ttl_ms,
            k["user_prefix"],
            -1 if per_pass is None else per_pass,
        ]
        admitted, waiting, active, dropped = (int(v) for v in self._admit(keys=keys, args=args))
        if admitted:
            self.r.incrby(k["admitted"], admitted)
        if waiting == 0:
            self.r.srem(CONCERTS_KEY, concert_id)
            if self.r.zcard(k["waiting"]) + self.r.zcard(k["pre"]) > 0:  # someone joined meanwhile: keep it listed
                self.r.sadd(CONCERTS_KEY, concert_id)
        return Admission(concert_id, admitted, waiting, active, dropped + swept)

    def admit_all(
        self,
        *,
        is_sold_out: Callable[[int], bool],
        controls: Callable[[int], tuple[int | None, int | None]] | None = None,
    ) -> list[Admission]:
        """Admit for every concert with waiters (found without KEYS); `controls(concert)` gives the
        operator's (limit, per_pass) for the pass."""
        passes = []
        for cid in sorted(self.r.smembers(CONCERTS_KEY), key=int):  # type: ignore[union-attr]
            sold_out = is_sold_out(int(cid))  # first: ADMIT_MODE=stock sizes the limit from the same read
            limit, per_pass = controls(int(cid)) if controls is not None else (None, None)
            passes.append(self.admit(concert_id=int(cid), sold_out=sold_out, limit=limit, per_pass=per_pass))
        return passes

    def admitted_total(self, *, concert_id: int) -> int:
        """Admissions ever made for a concert (pass and join)."""
        return int(self.r.get(_keys(concert_id)["admitted"]) or 0)

    def counts(self, *, concert_id: int) -> tuple[int, int]:
        """(waiting, active-and-unexpired) of a concert; fans waiting for a fair start's draw are not counted."""
        k = _keys(concert_id)
        keys = [k["waiting"], k["pre"], k["gate"], k["active"]]
        waiting, prequeued, gated, active = (int(v) for v in self._counts(keys=keys))
        # a fair start's pre-queue counts as waiting once its gate is open (before, it is "prequeued")
        return int(waiting) + (0 if gated else int(prequeued)), int(active)

    def admission_rate(self, *, concert_id: int) -> float:
        """Tokens admitted per second over the last minute."""
        entries = self._rate(keys=[_keys(concert_id)["admits"]], args=[RATE_WINDOW_MS])
        total = sum(int(_text(e).rsplit(":", 1)[1]) for e in entries)  # type: ignore[union-attr]
        return total / (RATE_WINDOW_MS / 1000)


def _rate_args(rates: tuple[Rate, ...]) -> list[str | int]:
    """The scripts' rate-limit arguments: how many, then (requests, window ms) each."""
    return [len(rates), *(v for rate in rates for v in (rate.requests, rate.window_ms))]


def _rate_keys(concert_id: int, rates: tuple[Rate, ...]) -> list[str]:
    """The rate limits' windows `rl:{c:N}:<name>`: KEYS of the script that counts them (a Cluster
    requires every key a script touches declared; the concert's tag keeps them in its slot)."""
    return [f"rl:{{c:{concert_id}}}:{rate.name}" for rate in rates]


def _refuse_if_limited(reply: list[Any]) -> None:
    """JoinLimited for a script's {'LIMITED', ms until the window resets, requests, 0, reset ms}."""
    if reply[0] == "LIMITED" or reply[0] == b"LIMITED":
        raise JoinLimited(Window(int(reply[2]), 0, int(reply[4])), int(reply[1]))


def _now_ms() -> int:
    """This host's clock, for the in-process status cache only (scripts read the server's TIME)."""
    return int(time.time() * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
