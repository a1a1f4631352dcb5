"""The fair start's pre-queue over Redis: join before the opening, then release in drawn order.

A concert with a `saleOpensAt` takes joiners from `saleOpensAt - PREQUEUE_WINDOW` on as
PREQUEUED. The server knows the secret seed from the concert's creation, so each joiner's place
in the draw is fixed when they join: the pre-queue is a sorted set whose members start with
`sha256(seed || entrant)` in hex, all with score 0, so Redis keeps them in drawn order (by
member, lexicographically). The draw at the opening is then only a release: slices of the set,
in order, become WAITING tokens in front of everyone who joins later. Nothing is sorted at the
opening and no slice blocks the shard for long.

Keys (all under the concert's tag `wr:{c:N}`, one Cluster slot; the token and user keys are the
waiting room's):

  wr:{c:N}:pre     ZSET   "<draw key hex>:<token>" -> 0: the pre-queue, in drawn order
  wr:{c:N}:gate    STRING "1" while the concert's draw has not been released: no admission and
                          no direct admission on join (models/waiting_room.py reads it)
  wr:{c:N}:drawn   LIST   entrant hashes in drawn order, appended by each released slice; the
                          draw (models/draws.py) copies it to the database and then deletes it

Released tokens get waiting scores `RELEASED_BASE + position` (negative), so they rank before
every later joiner (whose scores are the positive arrival sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from models import fairness
from models.waiting_room import new_token_for

PREQUEUED = "PREQUEUED"
RELEASED_BASE = -(10**12)
RELEASE_SLICE = 2_000  # tokens per release script: ~10 ms of Redis time on this machine

_JOIN = """
local pre, ukey, newhk, gate = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tag, token, now, user, concert, member, entrant, ttl =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local existing = redis.call('GET', ukey)
if existing then
  local h = redis.call('HMGET', tag .. ':t:' .. existing, 'status', 'expires', 'entrant')
  if h[1] then return {existing, 0, h[1], h[2], h[3] or ''} end
end
redis.call('HSET', newhk, 'user', user, 'concert', concert, 'status', 'PREQUEUED', 'issued', now,
           'expires', now + ttl, 'entrant', entrant, 'member', member)
redis.call('PEXPIRE', newhk, ttl)
redis.call('SET', ukey, token, 'PX', ttl)
redis.call('ZADD', pre, 0, member)
redis.call('SET', gate, '1')
return {token, 1, 'PREQUEUED', now + ttl, entrant}
"""

_STATUS = """
local h = redis.call('HMGET', KEYS[1], 'user', 'concert', 'status', 'expires', 'entrant')
if h[3] ~= 'PREQUEUED' then return false end
return h
"""

_FIND = """
local token = redis.call('GET', KEYS[1])
if not token then return false end
local h = redis.call('HMGET', ARGV[1] .. ':t:' .. token, 'user', 'concert', 'status', 'expires', 'entrant')
if h[3] ~= 'PREQUEUED' then return false end
table.insert(h, 1, token)
return h
"""

_LEAVE = """
local hk, pre, ukey = KEYS[1], KEYS[2], KEYS[3]
local token = ARGV[1]
local h = redis.call('HMGET', hk, 'status', 'member')
if h[1] ~= 'PREQUEUED' then return 0 end
redis.call('ZREM', pre, h[2])
redis.call('DEL', hk)
if redis.call('GET', ukey) == token then redis.call('DEL', ukey) end
return 1
"""

_RELEASE = """
local pre, waiting, drawn = KEYS[1], KEYS[2], KEYS[3]
local tag, now, n, base, wttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local members = redis.call('ZRANGE', pre, 0, n - 1)
local pos = redis.call('LLEN', drawn)
for _, m in ipairs(members) do
  local token = string.sub(m, 66)
  local hk = tag .. ':t:' .. token
  local h = redis.call('HMGET', hk, 'status', 'entrant', 'user')
  if h[1] == 'PREQUEUED' then
    pos = pos + 1
    redis.call('ZADD', waiting, base + pos, token)
    -- a WAITING token as the waiting room keeps it: p = "<last poll>:<due>" (released = polled
    -- now, may poll at once), no TTL (the waiting room's sweep drops it WAITING_TTL after p)
    redis.call('HSET', hk, 'status', 'WAITING', 'p', now .. ':' .. now)
    redis.call('HDEL', hk, 'member')
    redis.call('PERSIST', hk)
    redis.call('SET', tag .. ':u:' .. h[3], token)
    redis.call('RPUSH', drawn, h[2])
  end
end
if #members > 0 then redis.call('ZREM', pre, unpack(members)) end
return {#members, redis.call('ZCARD', pre), pos}
"""


@dataclass(frozen=True)
class PrequeuedToken:
    """A pre-queued token as the API shows it."""

    token: str
    user_id: int
    concert_id: int
    status: str
    expires_at_ms: int
    entrant: str
    created: bool = False


def _tag(concert_id: int) -> str:
    return f"wr:{{c:{concert_id}}}"


def keys(concert_id: int) -> dict[str, str]:
    """The pre-queue's key names of one concert (one owner: this module)."""
    tag = _tag(concert_id)
    return {
        "pre": f"{tag}:pre",
        "gate": f"{tag}:gate",
        "drawn": f"{tag}:drawn",
        "waiting": f"{tag}:waiting",
    }


class PreQueue:
    """The pre-queues of every fair-start concert, over one Redis client."""

    def __init__(self, client: redis.Redis, *, waiting_ttl: int) -> None:
        self.r = client
        self.waiting_ttl_ms = waiting_ttl * 1000
        self._join = client.register_script(_JOIN)
        self._status = client.register_script(_STATUS)
        self._leave = client.register_script(_LEAVE)
        self._find = client.register_script(_FIND)
        self._release = client.register_script(_RELEASE)

    def join(self, *, user_id: int, concert_id: int, seed: bytes, opens_at_ms: int, now_ms: int) -> PrequeuedToken:
        """Join a concert's pre-queue; a user with a live token of the concert gets that token back.

        The token lives until the opening plus WAITING_TTL without polling: a fan who joined an hour
        early keeps the place in the draw.
        """
        tag = _tag(concert_id)
        token = new_token_for(concert_id)
        entrant = fairness.entrant_of(user_id)
        member = f"{fairness.draw_key(seed, entrant).hex()}:{token}"
        ttl = max(opens_at_ms - now_ms, 0) + self.waiting_ttl_ms
        k = keys(concert_id)
        found = self._join(
            keys=[k["pre"], f"{tag}:u:{user_id}", f"{tag}:t:{token}", k["gate"]],
            args=[tag, token, now_ms, user_id, concert_id, member, entrant, ttl],
        )
        got, created, status, expires, got_entrant = (_text(v) for v in found)
        return PrequeuedToken(
            got, user_id, concert_id, status, int(float(expires)), got_entrant or entrant, created == "1"
        )

    def status(self, *, token: str, concert_id: int) -> PrequeuedToken | None:
        """The token if it is PREQUEUED, else None."""
        found = self._status(keys=[f"{_tag(concert_id)}:t:{token}"])
        if not found:
            return None
        user, concert, status, expires, entrant = (_text(v) for v in found)
        return PrequeuedToken(token, int(user), int(concert), status, int(float(expires)), entrant)

    def find(self, *, user_id: int, concert_id: int) -> PrequeuedToken | None:
        """The user's token for the concert if it is still PREQUEUED (not yet released), else None."""
        tag = _tag(concert_id)
        found = self._find(keys=[f"{tag}:u:{user_id}"], args=[tag])
        if not found:
            return None
        token, user, concert, status, expires, entrant = (_text(v) for v in found)
        return PrequeuedToken(token, int(user), int(concert), status, int(float(expires)), entrant)

    def leave(self, *, token: str, concert_id: int, user_id: int) -> bool:
        """Leave the pre-queue (the entrant is no longer in the draw); True if the token was PREQUEUED."""
        tag = _tag(concert_id)
        k = keys(concert_id)
        return bool(int(self._leave(keys=[f"{tag}:t:{token}", k["pre"], f"{tag}:u:{user_id}"], args=[token])))

    def close_gate(self, *, concert_id: int) -> None:
        """Hold admission for a concert whose draw has not been released (idempotent)."""
        self.r.set(keys(concert_id)["gate"], "1")

    def release_slice(self, *, concert_id: int, now_ms: int, size: int = RELEASE_SLICE) -> tuple[int, int, int]:
        """Release the next `size` pre-queued tokens in drawn order: (taken, left in the pre-queue, released so far)."""
        k = keys(concert_id)
        taken, left, position = self._release(
            keys=[k["pre"], k["waiting"], k["drawn"]],
            args=[_tag(concert_id), now_ms, size, RELEASED_BASE, self.waiting_ttl_ms],
        )
        return int(taken), int(left), int(position)

    def drawn_entrants(self, *, concert_id: int, start: int, count: int) -> list[str]:
        """A slice of the released entrants, in drawn order."""
        values = self.r.lrange(keys(concert_id)["drawn"], start, start + count - 1)
        return [_text(v) for v in values]  # type: ignore[union-attr]

    def finish(self, *, concert_id: int) -> None:
        """After the draw is stored: open the gate and drop the released list."""
        k = keys(concert_id)
        self.r.delete(k["gate"], k["drawn"])

    def open_gate(self, *, concert_id: int) -> None:
        """Let admission start (the pre-queue is released; the list may still be copied)."""
        self.r.delete(keys(concert_id)["gate"])

    def waiting_in_prequeue(self, *, concert_id: int) -> int:
        """How many fans are pre-queued."""
        return int(self.r.zcard(keys(concert_id)["pre"]))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
