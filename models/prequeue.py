"""The fair start's pre-queue over Redis: join before the opening; at the opening it becomes the queue's head.

A concert with a `saleOpensAt` takes joiners from `saleOpensAt - PREQUEUE_WINDOW` on as
PREQUEUED. The server knows the secret seed from the concert's creation, so each joiner's place
in the draw is fixed when they join: the pre-queue is a sorted set whose members start with
`sha256(seed || entrant)` in hex, all with score 0, so Redis keeps them in drawn order (by
member, lexicographically). Nothing is sorted or moved at the opening: the waiting room admits
from the pre-queue first and ranks its members before everyone who joined later
(models/waiting_room_lua.py), so opening is one short script, O(1) however many fans
pre-queued: it renames the entrant index (token -> entrant hash) to the draw's frozen copy and
deletes the gate. The publication is computed afterwards, off the shard's critical path, from
that frozen copy and the seed (the documented order: sha256(seed || entrant) ascending, which
is the set's order), read in short HSCAN slices while admission already runs.

Keys (all under the concert's tag `wr:{c:N}`, one Cluster slot; the token and user keys are the
waiting room's):

  wr:{c:N}:pre       ZSET   "<draw key hex>:<token>" -> 0: the pre-queue, in drawn order; the
                            waiting room pops it before wr:{c:N}:waiting
  wr:{c:N}:entrants  HASH   token -> entrant hash of every pre-queued token (a fan who leaves
                            before the opening leaves it too)
  wr:{c:N}:gate      STRING "1" until the opening: no admission and no direct admission on join
                            (the waiting room reads it)
  wr:{c:N}:drawn     HASH   the entrant index as it was at the opening (renamed, O(1)): the draw's
                            entrants; models/draws.py publishes it, then deletes it (1-day TTL)
  wr:{c:N}:opened    STRING set by the opening script (1-day TTL): a leader that runs it again
                            (after dying before the publication) opens nothing twice

A pre-queued token's hash is the waiting room's, with status PREQUEUED, the `member` it has in the
pre-queue and `p` = "<opening>:0" (as if polled at the opening and free to poll at once: the waiting
room's keep-alive and pacing start from there). It has no TTL, like every waiting token.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from models import fairness
from models.queue_tokens import new_token_for
from models.redis_support import NOW_MS_LUA
from models.waiting_room import CONCERTS_KEY

PREQUEUED = "PREQUEUED"
SCAN_SLICE = 2_000  # entrants read per HSCAN call while publishing the draw (bench/draw_bench.py)

_JOIN = (
    NOW_MS_LUA
    + """
local pre, ukey, newhk, gate, entrants, opened = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tag, token, user, concert, member, entrant, opens = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now = now_ms()
local existing = redis.call('GET', ukey)
if existing then
  local h = redis.call('HMGET', tag .. ':t:' .. existing, 'status', 'p', 'entrant')
  if h[1] then return {existing, 0, h[1], h[2] or '', h[3] or ''} end
end
-- a join that reaches Redis after the opening (a web's clock behind the scheduler's) must neither
-- join a draw already made nor close the gate again: the ordinary queue takes it
if redis.call('EXISTS', opened) == 1 then return false end
redis.call('HSET', newhk, 'user', user, 'concert', concert, 'status', 'PREQUEUED', 'issued', now,
           'entrant', entrant, 'member', member, 'p', opens .. ':0')
redis.call('SET', ukey, token)
redis.call('ZADD', pre, 0, member)
redis.call('HSET', entrants, token, entrant)
redis.call('SET', gate, '1')
return {token, 1, 'PREQUEUED', opens .. ':0', entrant}
"""
)

# The token while it waits for the draw (in the pre-queue, gate closed): {user, concert, status, p,
# entrant}, else false (after the opening the waiting room describes it, as WAITING with its rank).
_STATUS = """
local h = redis.call('HMGET', KEYS[1], 'user', 'concert', 'status', 'p', 'entrant', 'member')
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
if h[3] ~= 'PREQUEUED' or not redis.call('ZSCORE', KEYS[2], h[6]) then return false end
return {h[1], h[2], h[3], h[4], h[5]}
"""

_FIND = """
local token = redis.call('GET', KEYS[1])
if not token then return false end
local h = redis.call('HMGET', ARGV[1] .. ':t:' .. token, 'user', 'concert', 'status', 'p', 'entrant', 'member')
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
if h[3] ~= 'PREQUEUED' or not redis.call('ZSCORE', KEYS[2], h[6]) then return false end
return {token, h[1], h[2], h[3], h[4], h[5]}
"""

# The opening, O(1): freeze the entrant index as the draw's entrants (once), open the gate.
# Returns how many entrants the draw has.
_OPEN = """
local entrants, drawn, gate, opened = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl = tonumber(ARGV[1])
if redis.call('EXISTS', opened) == 0 then
  if redis.call('EXISTS', entrants) == 1 then
    redis.call('RENAME', entrants, drawn)
    redis.call('EXPIRE', drawn, ttl)
  end
  redis.call('SET', opened, '1', 'EX', ttl)
end
redis.call('DEL', gate)
return redis.call('HLEN', drawn)
"""
DRAWN_TTL_S = 86_400


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
        "entrants": f"{tag}:entrants",
        "gate": f"{tag}:gate",
        "drawn": f"{tag}:drawn",
        "opened": f"{tag}:opened",
    }


class PreQueue:
    """The pre-queues of every fair-start concert, over one Redis client."""

    def __init__(self, client: redis.Redis, *, waiting_ttl: int) -> None:
        self.r = client
        self.waiting_ttl_ms = waiting_ttl * 1000
        self._join = client.register_script(_JOIN)
        self._status = client.register_script(_STATUS)
        self._find = client.register_script(_FIND)
        self._open = client.register_script(_OPEN)

    def join(self, *, user_id: int, concert_id: int, seed: bytes, opens_at_ms: int) -> PrequeuedToken | None:
        """Join a concert's pre-queue; a user with a live token of the concert gets that token back.

        The place is kept without polling until the opening; from the opening the fan has
        WAITING_TTL to poll, like any waiting fan. None when the gate has opened meanwhile (the
        ordinary queue applies).
        """
        tag = _tag(concert_id)
        token = new_token_for(concert_id)
        entrant = fairness.entrant_of(user_id)
        member = f"{fairness.draw_key(seed, entrant).hex()}:{token}"
        k = keys(concert_id)
        found = self._join(
            keys=[k["pre"], f"{tag}:u:{user_id}", f"{tag}:t:{token}", k["gate"], k["entrants"], k["opened"]],
            args=[tag, token, user_id, concert_id, member, entrant, opens_at_ms],
        )
        if not found:
            return None
        got, created, status, p, got_entrant = (_text(v) for v in found)
        self.r.sadd(CONCERTS_KEY, concert_id)  # global (own slot): next to the script, never in it
        return PrequeuedToken(got, user_id, concert_id, status, self._expiry(p), got_entrant or entrant, created == "1")

    def _expiry(self, p: str) -> int:
        last = p.partition(":")[0]
        return int(last) + self.waiting_ttl_ms if last.isdigit() else 0

    def status(self, *, token: str, concert_id: int) -> PrequeuedToken | None:
        """The token while it waits for the draw, else None (then the waiting room describes it)."""
        k = keys(concert_id)
        found = self._status(keys=[f"{_tag(concert_id)}:t:{token}", k["pre"], k["gate"]])
        if not found:
            return None
        user, concert, status, p, entrant = (_text(v) for v in found)
        return PrequeuedToken(token, int(user), int(concert), status, self._expiry(p), entrant)

    def find(self, *, user_id: int, concert_id: int) -> PrequeuedToken | None:
        """The user's token for the concert while it waits for the draw, else None."""
        tag = _tag(concert_id)
        k = keys(concert_id)
        found = self._find(keys=[f"{tag}:u:{user_id}", k["pre"], k["gate"]], args=[tag])
        if not found:
            return None
        token, user, concert, status, p, entrant = (_text(v) for v in found)
        return PrequeuedToken(token, int(user), int(concert), status, self._expiry(p), entrant)

    def close_gate(self, *, concert_id: int) -> None:
        """Hold admission for a concert that has not opened yet (idempotent)."""
        self.r.set(keys(concert_id)["gate"], "1")

    def open_gate(self, *, concert_id: int) -> int:
        """The opening: the entrants present now become the draw's (frozen once), admission starts
        with the pre-queue as the queue's head. Idempotent; returns the number of entrants drawn."""
        k = keys(concert_id)
        return int(self._open(keys=[k["entrants"], k["drawn"], k["gate"], k["opened"]], args=[DRAWN_TTL_S]))

    def drawn_order(self, *, concert_id: int, seed: bytes, size: int = SCAN_SLICE) -> list[str]:
        """The draw's entrant hashes in drawn order, from the frozen entrants (short HSCAN slices,
        so the shard is never held for long) and the seed: the order admission follows."""
        entrants: dict[str, str] = {}
        for token, entrant in self.r.hscan_iter(keys(concert_id)["drawn"], count=size):
            entrants[_text(token)] = _text(entrant)  # a key HSCAN returns twice is kept once
        ranked = sorted((fairness.draw_key(seed, e), t, e) for t, e in entrants.items())
        return [e for _, _, e in ranked]

    def finish(self, *, concert_id: int) -> None:
        """After the draw is stored: drop the frozen entrants (the opened marker expires by itself)."""
        self.r.unlink(keys(concert_id)["drawn"])

    def waiting_in_prequeue(self, *, concert_id: int) -> int:
        """How many fans wait for the draw (0 once the gate is open: they are the queue's head then)."""
        k = keys(concert_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(k["gate"])
        pipe.zcard(k["pre"])
        gated, count = pipe.execute()
        return int(count) if gated else 0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
