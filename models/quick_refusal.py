"""Quick refusal (SPEC §3): the committed "taken" state of hot seats, kept in Redis for the edge.

  cache:{s:ID}:taken:SEAT  STRING the refusal's detail ("seat 7 is held")  PX <= TTL_MS, counted from a committed read

In a flash sale almost every hold is for a seat already HELD or RESERVED. The partition worker
that learns a seat is taken (a hold it committed, a hold it refused, a payment) marks it here;
`POST /reservations` reads the mark in the same pipelined round trip as its queue-token check
and answers 409 SEAT_NOT_AVAILABLE with no job. A transition back to AVAILABLE (expiry, cancel,
refund) deletes the mark after its commit.

Why a mark can never refuse a seat that has been AVAILABLE for more than 1 s, whatever
happens (a crash between a commit and its write-through, a worker paused between its read and
its write, a write-through that lands after a newer one): each mark expires TTL_MS after a
moment *before* the database read that saw the seat taken (`read_at_ms`, the writer's clock).
The seat can only turn AVAILABLE after that read, so the mark is gone less than TTL_MS later.
A mark written too late to matter (its deadline passed) is not written at all.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from models.errors import SeatNotAvailable

TTL_MS = 900  # < 1 s: the SPEC's bound, with room for clock granularity

_CHECK = "return redis.call('GET', KEYS[1])"


def taken_key(schedule_id: int, seat_id: int) -> str:
    """The mark of one seat, in its schedule's cache slot (`{s:ID}`, as models/cache.py)."""
    return f"cache:{{s:{schedule_id}}}:taken:{seat_id}"


def now_ms() -> int:
    """The writer's clock for `read_at_ms` (wall clock: marks are compared across processes by Redis PX only)."""
    return int(time.time() * 1000)


def mark(
    client: Any, *, schedule_id: int, seat_id: int, refusal: str | None, read_at_ms: int, ttl_ms: int = TTL_MS
) -> None:
    """After a committed read at `read_at_ms`: mark the seat taken (`refusal` its 409 detail), or clear the mark.

    `client` may be a pipeline (the batch adds its marks to the round trip it makes anyway).
    """
    key = taken_key(schedule_id, seat_id)
    if refusal is None:
        client.delete(key)
        return
    left = read_at_ms + ttl_ms - now_ms()
    if left > 0:
        client.set(key, refusal, px=left)


def check_call(client: redis.Redis, *, schedule_id: int, seat_id: int) -> tuple[Any, list[str], list[Any]]:
    """A (script, keys, args) call for `scripts_in_one_round_trip`: the seat's mark or None."""
    return client.register_script(_CHECK), [taken_key(schedule_id, seat_id)], []


def refusal_of(reply: Any) -> SeatNotAvailable | None:
    """The 409 to answer for a mark read by `check_call`, or None (no mark: queue the hold)."""
    if reply is None:
        return None
    return SeatNotAvailable(reply.decode() if isinstance(reply, bytes) else str(reply))
