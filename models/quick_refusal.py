"""Quick refusal (SPEC §3): the committed "taken" state of hot seats, kept in Redis for the edge.

  cache:{s:ID}:taken:SEAT  STRING the refusal's detail ("seat 7 is held")  PX <= TTL_MS, counted from a committed read
                           or "pending:JOB" (PENDING_TTL_MS): the first queued hold of a seat nobody marked

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

Pending: a hold that found no mark claims the seat before it sends its job: one script writes
"pending:JOB" where there is still no mark (`claim`), or returns the mark another request wrote
meanwhile (at the start of a sale hundreds of requests for a seat pass the check together; only
the first sends a job). It is claimed after the queue token passed, so a caller without one can
make nobody wait. A later hold of that seat does not queue a doomed job behind that one: it waits
for the job's end (its done list) and answers 409 if the job held the seat or found it taken
(`refusal_after`); on any other end it claims the seat in turn. A pending mark refuses nothing by
itself, and a job's end counts only if it came at most TTL_MS before the read of the pending mark
(Redis's clock, returned with it), so a pending mark whose replacement was lost (a crash after the
commit) can never refuse a seat released since. Why: at the start of a sale every request for a
seat found no mark and queued a job: at 256 in flight ~100 of 2,000 attempts were such doomed jobs,
queued in front of the winners (docs/ARCHITECTURE.md, "Contention").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from models.errors import SeatNotAvailable
from models.redis_support import NOW_MS_LUA, run_script

TTL_MS = 900  # < 1 s: the SPEC's bound, with room for clock granularity
PENDING_PREFIX = "pending:"
PENDING_TTL_MS = 10_000  # a queued first hold is followed this long at most (its job may be lost)
MAX_FOLLOWS = 3  # pending marks followed per request at most, then its hold is queued anyway
_ENDED = ("SUCCEEDED", "FAILED")  # a job's terminal statuses (workers/jobs.py TERMINAL)

# The mark; a pending one with the server's clock, so the reader can tell a fresh end from a stale one.
_CHECK = (
    NOW_MS_LUA
    + """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 8) == 'pending:' then return {v, now_ms()} end
return v
"""
)


# Claim the seat for a queued hold, or return what is there (as _CHECK does).
_CLAIM = (
    NOW_MS_LUA
    + """
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
if string.sub(v, 1, 8) == 'pending:' then return {v, now_ms()} end
return v
"""
)


# Many marks of one schedule (one slot) from one read: KEYS the marks, ARGV[1] PX, then each detail.
_MARK_MANY = """
local px = ARGV[1]
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'PX', px) end
return #KEYS
"""
MARKS_PER_CALL = 500  # a script runs alone on its Redis: a few hundred SETs (~0.2 ms) at a time


@dataclass(frozen=True)
class Pending:
    """A seat's first queued hold, read at the edge: its job and the server's clock at the read (ms)."""

    job_id: str
    mark: str
    checked_ms: int


class EndedJob(Protocol):
    """What a followed job's record tells (workers.jobs.Job)."""

    @property
    def status(self) -> str: ...
    @property
    def result(self) -> Any: ...
    @property
    def error(self) -> Any: ...
    @property
    def finished_ms(self) -> int | None: ...


class JobWaiter(Protocol):
    """Blocks until a job ends (workers.jobs.JobStore): its record, or None if unknown."""

    def wait(self, job_id: str, timeout: float, *, fresh: bool = False) -> EndedJob | None: ...


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


def mark_many(
    client: Any, *, schedule_id: int, refusals: Sequence[tuple[int, str]], read_at_ms: int, ttl_ms: int = TTL_MS
) -> None:
    """`mark` for many seats of one schedule seen taken by one read at `read_at_ms`: one script call
    per MARKS_PER_CALL seats (the marks share the schedule's slot) instead of a SET each; `refusals`
    are (seat id, 409 detail). `client` may be a pipeline.

    Why: the mark refresh (workers/marks.py) re-marks every remembered taken seat every 0.3 s; for
    2,000 seats a SET each cost ~50 ms of the worker's CPU per refresh (packing and parsing 2,000
    commands), a sixth of a CPU per worker process for as long as the sale lasts.
    """
    left = read_at_ms + ttl_ms - now_ms()
    if left <= 0 or not refusals:
        return
    script = client.register_script(_MARK_MANY)
    for at in range(0, len(refusals), MARKS_PER_CALL):
        part = refusals[at : at + MARKS_PER_CALL]
        keys = [taken_key(schedule_id, seat_id) for seat_id, _ in part]
        run_script(script, keys=keys, args=[left, *(detail for _, detail in part)], client=client)


def claim(client: Any, *, schedule_id: int, seat_id: int, job_id: str, replacing: str = "") -> Any:
    """Write the pending mark of hold `job_id` where the seat has no mark (or still `replacing`, a
    followed job's pending mark that ended); None if written (send the hold), else the mark found,
    as `check_call` returns it. One round trip, in the mark's slot."""
    script = client.register_script(_CLAIM)
    return run_script(
        script, keys=[taken_key(schedule_id, seat_id)], args=[PENDING_PREFIX + job_id, PENDING_TTL_MS, replacing]
    )


def check_call(client: redis.Redis, *, schedule_id: int, seat_id: int) -> tuple[Any, list[str], list[Any]]:
    """A (script, keys, args) call for `scripts_in_one_round_trip`: the seat's mark or None."""
    return client.register_script(_CHECK), [taken_key(schedule_id, seat_id)], []


def refusal_of(reply: Any) -> SeatNotAvailable | None:
    """The 409 to answer for a mark read by `check_call`, or None (no mark, or a pending one: queue the hold)."""
    if reply is None or isinstance(reply, list):
        return None
    return SeatNotAvailable(_text(reply))


def pending_of(reply: Any) -> Pending | None:
    """The queued first hold a mark read by `check_call` names, or None."""
    if not isinstance(reply, list) or len(reply) != 2:
        return None
    mark = _text(reply[0])
    return Pending(mark[len(PENDING_PREFIX) :], mark, int(reply[1]))


def refusal_after(
    pending: Pending, *, status: str, result: Any, error: Any, finished_ms: int | None
) -> SeatNotAvailable | None:
    """The 409 to answer once the followed job ended, or None (send a hold of one's own).

    Only a job that held the seat (SUCCEEDED) or read it taken (failed SEAT_NOT_AVAILABLE) refuses,
    and only if it ended at most TTL_MS before the check read its pending mark: an older end says
    nothing about now (its seat may have been released since, and the mark not replaced).
    """
    if finished_ms is None or finished_ms < pending.checked_ms - TTL_MS:
        return None
    if status == "SUCCEEDED" and isinstance(result, dict) and result.get("seatNumber") is not None:
        return SeatNotAvailable(f"seat {result['seatNumber']} is held")
    if status == "FAILED" and isinstance(error, dict) and error.get("code") == SeatNotAvailable.code:
        return SeatNotAvailable(str(error.get("detail") or "the seat is not available"))
    return None


def claim_or_follow(
    client: Any, jobs: JobWaiter, *, schedule_id: int, seat_id: int, job_id: str, mark: Any, wait: float
) -> SeatNotAvailable | None:
    """After the edge check found no taken mark (`mark`, as `check_call` read it): the 409 to
    answer, or None once the seat is claimed for hold `job_id` (send it).

    A pending mark names the seat's first hold, still queued: its end answers this request (up to
    `wait` s; with no time to wait, this hold is queued behind it). A seat with no mark is claimed
    (`claim`: only the first of many requests that passed the check together wins).
    """
    deadline = time.monotonic() + wait
    replacing = ""
    for _ in range(MAX_FOLLOWS):
        pending = pending_of(mark)
        if pending is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            job = jobs.wait(pending.job_id, left, fresh=True)
            if job is None or job.status not in _ENDED:
                return None  # still queued (or lost): this hold goes behind it
            refusal = refusal_after(
                pending, status=job.status, result=job.result, error=job.error, finished_ms=job.finished_ms
            )
            if refusal is not None:
                return refusal
            replacing = pending.mark  # it ended without the seat: claim it in turn
        mark = claim(client, schedule_id=schedule_id, seat_id=seat_id, job_id=job_id, replacing=replacing)
        if mark is None:
            return None
        refusal = refusal_of(mark)
        if refusal is not None:
            return refusal
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
