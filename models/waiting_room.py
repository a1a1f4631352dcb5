"""The waiting room over Redis: issue, poll and leave queue tokens; admit waiters in FIFO order.

Keys (all of one concert share the hash tag `{c:<id>}`, so they live on one Cluster slot):

  wr:{c:N}:waiting   ZSET  token -> arrival sequence (FIFO order of arrival at Redis)
  wr:{c:N}:active    ZSET  token -> expiry time (ms); members past their score are expired
  wr:{c:N}:seen      ZSET  token -> last poll time (ms) of WAITING tokens (abandoned ones are dropped)
  wr:{c:N}:seq       STRING arrival counter (INCR)
  wr:{c:N}:t:<token> HASH  user, concert, status, issued, admitted, expires (ms)
  wr:{c:N}:u:<user>  STRING the user's live token for the concert
  wr:{c:N}:admits    ZSET  "<ms>:<count>" (a pass) or "<token>:1" (admitted on join) -> ms: admissions
                           of the last minute; wr:{c:N}:rate = "<count>:<oldest ms>" (wait estimate)
  wr:{c:N}:soldout   STRING "1" while no schedule of the concert has an AVAILABLE seat
  wr:{c:N}:admitted  STRING admissions ever (pass and join), for the operator console
  wr:{c:N}:gate      STRING "1" while a fair-start concert's pre-queue is not released (models/prequeue.py):
                           no admission, no direct admission on join
  wr:concerts        SET   concert ids with waiters (admission finds work without KEYS); global, so
                           updated next to the scripts, never inside one

Tokens are `<concertId>.<22 url-safe chars>` (128 random bits), so a token names its concert.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from models.errors import TokenInvalid, ValidationError

WAITING, ACTIVE = "WAITING", "ACTIVE"
CONCERTS_KEY = "wr:concerts"
RATE_WINDOW_MS = 60_000

# Shared by the issue and poll scripts: describe a token in one reply
# {user, concert, status, rank, expires, soldout, admitted in the last minute}. Key names are
# derived from the concert's tag inside the scripts (all on the tag's one Cluster slot).
_DESCRIBE = """
local function describe(tag, token, now)
  local h = redis.call('HMGET', tag .. ':t:' .. token, 'user', 'concert', 'status', 'expires')
  if not h[3] then return false end
  local rank = 0
  if h[3] == 'ACTIVE' then
    local exp = redis.call('ZSCORE', tag .. ':active', token)
    if not exp or tonumber(exp) <= now then return false end
  else
    local r = redis.call('ZRANK', tag .. ':waiting', token)
    if not r then return false end
    rank = r + 1
  end
  return {h[1], h[2], h[3], rank, h[4], redis.call('EXISTS', tag .. ':soldout'),
          redis.call('GET', tag .. ':rate') or '0'}
end
"""

_ISSUE = (
    _DESCRIBE
    + """
local tag, new_token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local limit, wttl, attl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local user, concert = ARGV[7], ARGV[8]
local waiting, active, ukey = tag .. ':waiting', tag .. ':active', tag .. ':u:' .. user
local existing = redis.call('GET', ukey)
if existing then
  local found = describe(tag, existing, now)
  if found then
    table.insert(found, 1, 0)
    table.insert(found, 1, existing)
    return found
  end
  redis.call('DEL', tag .. ':t:' .. existing)
  redis.call('ZREM', waiting, existing)
  redis.call('ZREM', tag .. ':seen', existing)
end
local hk = tag .. ':t:' .. new_token
local soldout = redis.call('EXISTS', tag .. ':soldout')
local rate = redis.call('GET', tag .. ':rate') or '0'
local nwaiting = redis.call('ZCARD', waiting)
if nwaiting == 0 and soldout == 0 then
  redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
end
-- a fair-start concert's gate stays closed until its pre-queue is released (models/prequeue.py)
local gated = redis.call('EXISTS', tag .. ':gate')
if nwaiting == 0 and soldout == 0 and gated == 0 and redis.call('ZCARD', active) < limit then
  redis.call('ZADD', active, now + attl, new_token)
  redis.call('HSET', hk, 'user', user, 'concert', concert, 'status', 'ACTIVE', 'issued', now, 'admitted', now,
             'expires', now + attl)
  redis.call('PEXPIRE', hk, attl + 60000)
  redis.call('SET', ukey, new_token, 'PX', attl)
  redis.call('ZADD', tag .. ':admits', now, new_token .. ':1')  -- a direct admission counts in the rate
  return {new_token, 1, user, concert, 'ACTIVE', 0, now + attl, soldout, rate}
end
redis.call('ZADD', waiting, redis.call('INCR', tag .. ':seq'), new_token)
redis.call('ZADD', tag .. ':seen', now, new_token)
redis.call('HSET', hk, 'user', user, 'concert', concert, 'status', 'WAITING', 'expires', now + wttl)
redis.call('PEXPIRE', hk, wttl)
redis.call('SET', ukey, new_token, 'PX', wttl)
-- the newest arrival has the highest sequence: its rank is the queue's length
return {new_token, 1, user, concert, 'WAITING', nwaiting + 1, now + wttl, soldout, rate}
"""
)

_POLL = (
    _DESCRIBE
    + """
local tag, token, now, wttl, touch = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local found = describe(tag, token, now)
if not found then return false end
if found[3] == 'WAITING' and touch == '1' then
  local hk = tag .. ':t:' .. token
  redis.call('PEXPIRE', hk, wttl)
  redis.call('PEXPIRE', tag .. ':u:' .. found[1], wttl)
  redis.call('ZADD', tag .. ':seen', now, token)
  redis.call('HSET', hk, 'expires', now + wttl)
  found[5] = tostring(now + wttl)
end
return found
"""
)

_LEAVE = """
local hk, waiting, active, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, uprefix = ARGV[1], ARGV[2]
local user = redis.call('HGET', hk, 'user')
local ukey = uprefix .. (user or '')
local existed = redis.call('DEL', hk)
redis.call('ZREM', waiting, token)
redis.call('ZREM', active, token)
redis.call('ZREM', seen, token)
if redis.call('GET', ukey) == token then redis.call('DEL', ukey) end
return existed
"""

_ADMIT = """
local waiting, active, seen, admits, soldout = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local attl, wttl, ukprefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local cap = tonumber(ARGV[7])  -- operator controls: at most this many per pass (-1: no cap)
local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', now - wttl)
for _, t in ipairs(stale) do
  redis.call('ZREM', waiting, t)
  redis.call('ZREM', seen, t)
  redis.call('DEL', prefix .. t)
end
redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
redis.call('ZREMRANGEBYSCORE', admits, '-inf', now - 60000)
if redis.call('EXISTS', soldout) == 1 or redis.call('EXISTS', KEYS[6]) == 1 then
  return {0, redis.call('ZCARD', waiting), redis.call('ZCARD', active), #stale}
end
local free = limit - redis.call('ZCARD', active)
if cap >= 0 and free > cap then free = cap end
local admitted = 0
if free > 0 then
  local popped = redis.call('ZPOPMIN', waiting, free)
  for i = 1, #popped, 2 do
    local t = popped[i]
    local hk = prefix .. t
    local user = redis.call('HGET', hk, 'user')
    redis.call('ZREM', seen, t)
    if user then
      redis.call('ZADD', active, now + attl, t)
      redis.call('HSET', hk, 'status', 'ACTIVE', 'admitted', now, 'expires', now + attl)
      redis.call('PEXPIRE', hk, attl + 60000)
      redis.call('SET', ukprefix .. user, t, 'PX', attl)
      admitted = admitted + 1
    end
  end
  if admitted > 0 then redis.call('ZADD', admits, now, now .. ':' .. admitted) end
end
local total, oldest = 0, now
for i, e in ipairs(redis.call('ZRANGE', admits, 0, -1, 'WITHSCORES')) do
  if i % 2 == 1 then total = total + tonumber(string.match(e, ':(%d+)$'))
  elseif tonumber(e) < oldest then oldest = tonumber(e) end
end
redis.call('SET', string.sub(admits, 1, -8) .. ':rate', total .. ':' .. oldest, 'PX', 120000)
return {admitted, redis.call('ZCARD', waiting), redis.call('ZCARD', active), #stale}
"""


@dataclass(frozen=True)
class QueueToken:
    """A token's state as the API shows it."""

    token: str
    user_id: int
    concert_id: int
    status: str
    rank: int
    estimated_wait_seconds: int
    expires_at_ms: int
    sold_out: bool
    created: bool = False


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
        "seen": f"{tag}:seen",
        "seq": f"{tag}:seq",
        "admits": f"{tag}:admits",
        "soldout": f"{tag}:soldout",
        "admitted": f"{tag}:admitted",
        "gate": f"{tag}:gate",  # models/prequeue.py owns it
        "token_prefix": f"{tag}:t:",
        "user_prefix": f"{tag}:u:",
    }


TOKEN_BYTES = 16  # 128 random bits


def new_token_for(concert_id: int) -> str:
    """A fresh queue token: `<concertId>.<22 url-safe chars>`, 128 random bits from `secrets` (the OS CSPRNG).

    The concert id in clear only routes the token to its concert's keys; it grants nothing: the
    token is valid only while its hash exists in Redis, and that hash names its user and concert.
    """
    return f"{concert_id}.{secrets.token_urlsafe(TOKEN_BYTES)}"


def concert_of_token(token: str) -> int:
    """The concert id a token names, or TokenInvalid for a malformed token."""
    head, _, rest = token.partition(".")
    if not (head.isascii() and head.isdigit()) or len(head) > 19 or len(rest) < 16 or len(token) > 64:
        raise TokenInvalid("the queue token is malformed")
    return int(head)


class WaitingRoom:
    """The waiting room of every concert, over one Redis client."""

    def __init__(self, client: redis.Redis, *, active_limit: int, active_ttl: int, waiting_ttl: int) -> None:
        self.r = client
        self.active_limit = active_limit
        self.active_ttl_ms = active_ttl * 1000
        self.waiting_ttl_ms = waiting_ttl * 1000
        self._issue = client.register_script(_ISSUE)
        self._poll = client.register_script(_POLL)
        self._leave = client.register_script(_LEAVE)
        self._admit = client.register_script(_ADMIT)

    def issue(self, *, user_id: int, concert_id: int, limit: int | None = None) -> QueueToken:
        """Join the queue (one live token per user and concert; asking again returns the same token).

        One Lua script, one round trip: it finds or creates the token and describes it. A joiner
        is admitted at once only when nobody waits and fewer than `limit` (default ACTIVE_LIMIT)
        are active; the operator controls pass 0 while admission is paused or paced.
        """
        if user_id < 1 or concert_id < 1:
            raise ValidationError("userId and concertId must be positive integers")
        tag = _tag(concert_id)
        new_token = new_token_for(concert_id)
        args: list[str | int] = [
            tag,
            new_token,
            _now_ms(),
            self.active_limit if limit is None else limit,
            self.waiting_ttl_ms,
            self.active_ttl_ms,
            user_id,
            concert_id,
        ]
        token, created, *described = self._issue(keys=[f"{tag}:waiting"], args=args)
        issued = self._token(_text(token), described, created=bool(int(created)))
        if issued.created and issued.status == ACTIVE:
            self.r.incr(_keys(concert_id)["admitted"])
        elif issued.created:
            # wr:concerts is global (its own Cluster slot), so it is updated after the script, never
            # in it: an admission pass that just dropped the concert (nobody waited) sees it again.
            self.r.sadd(CONCERTS_KEY, concert_id)
        return issued

    def status(self, *, token: str, touch: bool = True) -> QueueToken:
        """A token's status, rank and estimate; polling (touch) keeps a WAITING token's place alive."""
        tag = _tag(concert_of_token(token))
        found = self._poll(
            keys=[f"{tag}:waiting"], args=[tag, token, _now_ms(), self.waiting_ttl_ms, "1" if touch else "0"]
        )
        if not found:
            raise TokenInvalid("the queue token is unknown or has expired")
        return self._token(token, found, created=False)

    def _token(self, token: str, described: list[object], *, created: bool) -> QueueToken:
        user, concert, status, rank, expires, sold_out, admitted = (_text(v) for v in described)
        rank_n = int(rank)
        return QueueToken(
            token=token,
            user_id=int(user),
            concert_id=int(concert),
            status=status,
            rank=rank_n,
            estimated_wait_seconds=self._estimate(rank_n, admitted),
            expires_at_ms=int(float(expires)),
            sold_out=sold_out == "1",
            created=created,
        )

    def leave(self, *, token: str) -> bool:
        """Give up the place or the active slot; True if the token existed."""
        concert_id = concert_of_token(token)
        k = _keys(concert_id)
        keys = [f"{k['token_prefix']}{token}", k["waiting"], k["active"], k["seen"]]
        return bool(int(self._leave(keys=keys, args=[token, k["user_prefix"]])))

    def expire_user(self, *, user_id: int, concert_id: int) -> bool:
        """End the user's live token for a concert (after payment); idempotent, True if one was live."""
        k = _keys(concert_id)
        token = self.r.get(f"{k['user_prefix']}{user_id}")
        if not token:
            return False
        return self.leave(token=_text(token))

    def admit(
        self, *, concert_id: int, sold_out: bool = False, limit: int | None = None, per_pass: int | None = None
    ) -> Admission:
        """One admission pass: drop abandoned waiters, expire actives, move waiters into free slots (FIFO).

        `limit` (default ACTIVE_LIMIT) and `per_pass` (default no cap) come from the operator controls.
        """
        k = _keys(concert_id)
        if sold_out:
            self.r.set(k["soldout"], "1", px=max(self.active_ttl_ms, 60_000))
        else:
            self.r.delete(k["soldout"])
        keys = [k["waiting"], k["active"], k["seen"], k["admits"], k["soldout"], k["gate"]]
        args: list[str | int] = [
            k["token_prefix"],
            _now_ms(),
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
            if self.r.zcard(k["waiting"]) > 0:  # someone joined meanwhile: keep the concert listed
                self.r.sadd(CONCERTS_KEY, concert_id)
        return Admission(concert_id, admitted, waiting, active, dropped)

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
            limit, per_pass = controls(int(cid)) if controls is not None else (None, None)
            passes.append(
                self.admit(concert_id=int(cid), sold_out=is_sold_out(int(cid)), limit=limit, per_pass=per_pass)
            )
        return passes

    def admitted_total(self, *, concert_id: int) -> int:
        """Admissions ever made for a concert (pass and join)."""
        return int(self.r.get(_keys(concert_id)["admitted"]) or 0)

    def counts(self, *, concert_id: int) -> tuple[int, int]:
        """(waiting, active-and-unexpired) of a concert."""
        k = _keys(concert_id)
        return int(self.r.zcard(k["waiting"])), int(self.r.zcount(k["active"], f"({_now_ms()}", "+inf"))

    def admission_rate(self, *, concert_id: int) -> float:
        """Tokens admitted per second over the last minute."""
        now = _now_ms()
        entries = self.r.zrangebyscore(_keys(concert_id)["admits"], now - RATE_WINDOW_MS, "+inf")
        total = sum(int(_text(e).rsplit(":", 1)[1]) for e in entries)  # type: ignore[union-attr]
        return total / (RATE_WINDOW_MS / 1000)

    def _estimate(self, rank: int, rate_key: str) -> int:
        """Seconds until admission: rank ÷ the measured admission rate.

        The rate is the admissions of the last minute over the time since the oldest of them
        (at least 1 s), not over a fixed minute: at the start of a sale 200 admissions in 2 s are
        100/s, not 3.3/s. With no admission yet: slots turn over once per ACTIVE_TTL.
        """
        if rank <= 0:
            return 0
        count, _, oldest = rate_key.partition(":")
        admitted = int(count or 0)
        if admitted > 0:
            span_s = max(1.0, (_now_ms() - int(oldest or _now_ms())) / 1000) if oldest else RATE_WINDOW_MS / 1000
            rate = admitted / span_s
        else:
            rate = self.active_limit / (self.active_ttl_ms / 1000)
        return max(1, round(rank / rate))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
