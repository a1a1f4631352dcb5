"""Read-through cache of schedule lists (with available counts) and seat maps, in Redis.

  cache:{c:N}:sched        STRING JSON [[scheduleId, startsAt ISO, totalSeats], ...]  TTL CACHE_SCHEDULE_TTL ± jitter
  cache:{s:ID}:avail       STRING available-seat count                                TTL CACHE_SCHEDULE_TTL ± jitter
  cache:{s:ID}:seats       HASH   seatId -> "STATUS|number|price"                     TTL CACHE_SEATS_TTL ± jitter
  cache:{s:ID}:ver         STRING bumped by every seat transition of the schedule (rebuilds compare it)
  <key>:lock               STRING single-flight rebuild lock of <key> (PX 2 s), in <key>'s slot

A schedule's keys share the hash tag `{s:<scheduleId>}` (one Redis Cluster slot: each script
touches one schedule's keys only); the key names are built by `sched_key` and `schedule_keys`.

Write-through: after a seat transition commits, `seat_changed` updates the seat's field and
the count in place (one Lua script, no delete-then-refill). A rebuild reads the schedule's
version before querying the database and writes only if no transition happened meanwhile,
so a slow rebuild can never overwrite a newer state with an older one. That check assumes the
rebuild's query sees every transition committed before the version was read, which a lagging
replica does not: rebuilds therefore read the primary (`on_primary()`), and only the Redis-down
fallback reads (nothing is stored from them) may go to the replica. When a seat map is
not cached the count cannot tell whether a transition was already counted (redelivered
messages repeat write-throughs), so it is dropped and recounted from the index on the next
read. Redis errors fall back to the database.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from prometheus_client import Counter

from models import concerts
from models.concerts import ScheduleView, SeatView
from models.db import on_primary
from models.redis_support import REDIS_ERRORS, run_script

log = logging.getLogger("models.cache")
T = TypeVar("T")

CACHE_EVENTS = Counter(
    "cache_events_total",
    "Catalogue cache hits, misses, rebuilds, fallbacks, and local hits (a seat map from the process's own copy)",
    ["cache", "event"],
)

# One schedule's seat transitions, ARGV = (seat id, "STATUS|number|price", status) per seat: a group
# commit's seats in one call (one per schedule), where a call per seat made two commands per hold.
_SEAT_CHANGED = """
local ver, seats, avail = KEYS[1], KEYS[2], KEYS[3]
redis.call('INCR', ver)
redis.call('PEXPIRE', ver, 86400000)
if redis.call('EXISTS', seats) == 0 then
  redis.call('DEL', avail)
  return 2
end
local delta, lost = 0, false
for i = 1, #ARGV, 3 do
  local field, value, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', seats, field)
  redis.call('HSET', seats, field, value)
  if not old then
    lost = true
  else
    local was = string.match(old, '^[^|]*')
    if was ~= status then
      if status == 'AVAILABLE' then delta = delta + 1 elseif was == 'AVAILABLE' then delta = delta - 1 end
    end
  end
end
if lost then
  redis.call('DEL', avail)
  return 2
end
if delta ~= 0 and redis.call('EXISTS', avail) == 1 then redis.call('INCRBY', avail, delta) end
if delta == 0 then return 0 end
return 1
"""
SEATS_PER_CALL = 500  # a script runs alone on its Redis: a few hundred seats (~0.3 ms) at a time

_FILL_HASH = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_FILL_VALUE = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""


_SCHEDULE_IDS: dict[int, list[int]] = {}


def sched_key(concert_id: int) -> str:
    """The cached schedule list of a concert."""
    return f"cache:{{c:{concert_id}}}:sched"


def schedule_keys(schedule_id: int) -> tuple[str, str, str]:
    """(version, seat map, available count) of a schedule: one hash tag, one Cluster slot."""
    tag = f"cache:{{s:{schedule_id}}}"
    return f"{tag}:ver", f"{tag}:seats", f"{tag}:avail"


def _gets(client: redis.Redis, keys: list[str]) -> list[Any]:
    """GET each key in one pipelined round trip (an MGET would span slots on a Redis Cluster)."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(pipe.execute())


_CHANGES_HERE = [0]


def changes_here() -> int:
    """How many seat transitions this process has written through (a local copy of a seat-map
    page made before the latest one is stale: models/seat_pages.py)."""
    return _CHANGES_HERE[0]


# a waiter for another caller's rebuild first looks again after ~5 ms, then ever less often
_FIRST_PAUSE_S = 0.005
_MAX_PAUSE_S = 0.1


class _Flight:
    """One thread's Redis single flight for a key, which the process's other threads wait on."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class CatalogueCache:
    """Schedules with available counts and seat maps, cached with jitter and single-flight rebuilds."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        schedule_ttl: int = 300,
        schedule_jitter: int = 30,
        seats_ttl: int = 30,
        seats_jitter: int = 5,
        wait_s: float = 2.0,
    ) -> None:
        self.r = client
        self.schedule_ttl, self.schedule_jitter = schedule_ttl, schedule_jitter
        self.seats_ttl, self.seats_jitter = seats_ttl, seats_jitter
        self.wait_s = wait_s
        self.rebuilds = 0  # approximate under threads; cache_events_total is the exact count
        self._flights: dict[str, _Flight] = {}  # key -> the single flight a thread of this process runs
        self._flights_lock = threading.Lock()
        self._seat_changed = client.register_script(_SEAT_CHANGED)
        self._fill_hash = client.register_script(_FILL_HASH)
        self._fill_value = client.register_script(_FILL_VALUE)
        self._unlock = client.register_script(_UNLOCK)

    # --- reads ----------------------------------------------------------------------------
    def schedules(self, *, concert_id: int) -> list[ScheduleView]:
        """A concert's schedules with available counts (cache, else database)."""
        try:
            cached = self._cached_schedules(concert_id)
            if cached is not None:
                CACHE_EVENTS.labels("schedules", "hit").inc()
                return cached
            CACHE_EVENTS.labels("schedules", "miss").inc()
            return self._single_flight(
                "schedules",
                sched_key(concert_id),
                lambda: self._cached_schedules(concert_id),
                lambda: self._rebuild_schedules(concert_id),
            )
        except REDIS_ERRORS as exc:
            CACHE_EVENTS.labels("schedules", "fallback").inc()
            log.warning("cache unavailable, reading schedules from the database: %s", exc)
            return concerts.list_schedules(concert_id=concert_id)

    def seat_map(self, *, schedule_id: int, status: str | None = None) -> list[SeatView]:
        """A schedule's seats by number, optionally one status (cache, else database)."""
        seats, _ = self.seat_map_read(schedule_id=schedule_id, status=status)
        return seats

    def seat_map_read(self, *, schedule_id: int, status: str | None = None) -> tuple[list[SeatView], bool]:
        """The seat map and whether it may be stored under a version read before this call: True
        when it came from the cache or a rebuild on the primary, False for the Redis-down fallback
        (which may have read a lagging replica)."""
        try:
            seats = self._cached_seats(schedule_id)
            if seats is None:
                CACHE_EVENTS.labels("seats", "miss").inc()
                seats = self._single_flight(
                    "seats",
                    schedule_keys(schedule_id)[1],
                    lambda: self._cached_seats(schedule_id),
                    lambda: self._rebuild_seats(schedule_id),
                )
            else:
                CACHE_EVENTS.labels("seats", "hit").inc()
        except REDIS_ERRORS as exc:
            CACHE_EVENTS.labels("seats", "fallback").inc()
            log.warning("cache unavailable, reading the seat map from the database: %s", exc)
            return concerts.seat_map(schedule_id=schedule_id, status=status), False
        return [s for s in seats if status is None or s.status == status], True

    # --- write-through --------------------------------------------------------------------
    def seat_changed(
        self, *, schedule_id: int, seat_id: int, number: int, price: int, status: str, client: Any = None
    ) -> None:
        """After a seat transition committed: update the cached seat and available count in place.

        With `client` (a pipeline) the update is only added to it (the group commit's one round trip).
        """
        self.seats_changed(schedule_id=schedule_id, changes=[(seat_id, number, price, status)], client=client)

    def seats_changed(self, *, schedule_id: int, changes: list[tuple[int, int, int, str]], client: Any = None) -> None:
        """`seat_changed` for several seats of one schedule, (seat id, number, price, status) each,
        committed together: one script call per SEATS_PER_CALL seats. `client` may be a pipeline."""
        keys = list(schedule_keys(schedule_id))
        _CHANGES_HERE[0] += len(changes)
        try:
            for at in range(0, len(changes), SEATS_PER_CALL):
                args: list[Any] = []
                for seat_id, number, price, status in changes[at : at + SEATS_PER_CALL]:
                    args += [seat_id, f"{status}|{number}|{price}", status]
                run_script(self._seat_changed, keys=keys, args=args, client=client)
        except REDIS_ERRORS as exc:  # the TTL bounds how long a missed write-through can show
            log.warning("cache write-through failed for seat(s) %s: %s", ", ".join(str(c[0]) for c in changes), exc)

    def warm(self, *, concert_ids: list[int]) -> int:
        """Load the schedule lists (and counts) of these concerts; return how many were loaded."""
        for concert_id in concert_ids:
            self._rebuild_schedules(concert_id)
        return len(concert_ids)

    # --- internals ------------------------------------------------------------------------
    def _cached_schedules(self, concert_id: int) -> list[ScheduleView] | None:
        # A concert's schedules never change after it is created, so their ids are remembered per
        # process and a hit is one round trip (GET + MGET in one pipeline).
        ids = _SCHEDULE_IDS.get(concert_id)
        if ids is None:
            raw = self.r.get(sched_key(concert_id))
            counts: list[Any] = []
        else:
            raw, *counts = _gets(self.r, [sched_key(concert_id), *(schedule_keys(sid)[2] for sid in ids)])
        if raw is None:
            return None
        items = json.loads(raw)  # type: ignore[arg-type]
        if ids is None or [sid for sid, _, _ in items] != ids:
            _SCHEDULE_IDS[concert_id] = [sid for sid, _, _ in items]
            counts = _gets(self.r, [schedule_keys(sid)[2] for sid, _, _ in items])
        if any(c is None for c in counts):
            return None
        return [
            ScheduleView(sid, concert_id, dt.datetime.fromisoformat(starts), total, int(n))  # type: ignore[arg-type]
            for (sid, starts, total), n in zip(items, counts, strict=True)
        ]

    def _rebuild_schedules(self, concert_id: int) -> list[ScheduleView]:
        self.rebuilds += 1
        CACHE_EVENTS.labels("schedules", "rebuild").inc()
        with on_primary():  # the version check below holds only against the primary (module docstring)
            ids = [
                s.id
                for s in concerts.Schedule.select(concerts.Schedule.id).where(concerts.Schedule.concert == concert_id)
            ]
            raw_versions = _gets(self.r, [schedule_keys(sid)[0] for sid in ids])
            versions = {sid: _text(v or "0") for sid, v in zip(ids, raw_versions, strict=True)}
            views = concerts.list_schedules(concert_id=concert_id)
        ttl = self._ttl(self.schedule_ttl, self.schedule_jitter)
        self.r.set(
            sched_key(concert_id),
            json.dumps([[v.schedule_id, v.starts_at.isoformat(), v.total_seats] for v in views]),
            px=ttl,
        )
        pipe = self.r.pipeline(transaction=False)
        for v in views:
            run_script(
                self._fill_value,
                keys=[schedule_keys(v.schedule_id)[0], schedule_keys(v.schedule_id)[2]],
                args=[versions.get(v.schedule_id, "0"), v.available_seats, ttl],
                client=pipe,
            )
        pipe.execute()
        return views

    def _cached_seats(self, schedule_id: int) -> list[SeatView] | None:
        raw = self.r.hgetall(schedule_keys(schedule_id)[1])
        if not raw:
            return None
        seats = []
        for seat_id, value in raw.items():  # type: ignore[union-attr]
            status, number, price = _text(value).split("|")
            seats.append(SeatView(int(seat_id), int(number), int(price), status))
        seats.sort(key=lambda s: s.number)
        return seats

    def _rebuild_seats(self, schedule_id: int) -> list[SeatView]:
        self.rebuilds += 1
        CACHE_EVENTS.labels("seats", "rebuild").inc()
        version = _text(self.r.get(schedule_keys(schedule_id)[0]) or "0")
        with on_primary():  # a replica may not have the transitions this version counts yet
            seats = concerts.seat_map(schedule_id=schedule_id)
        args: list[str | int] = [version, self._ttl(self.seats_ttl, self.seats_jitter)]
        for s in seats:
            args += [s.seat_id, f"{s.status}|{s.number}|{s.price}"]
        if seats:
            self._fill_hash(keys=list(schedule_keys(schedule_id)[:2]), args=args)
        return seats

    def _single_flight(self, label: str, key: str, read: Callable[[], T | None], rebuild: Callable[[], T]) -> T:
        """One thread per key and process asks Redis (below); the process's other threads that want
        the same key meanwhile wait for its answer, with no Redis call of their own.

        200 threads of one process each polling Redis starved the one rebuilding of the GIL: its
        1-query rebuild took 1.9 s and 64 waiters gave up and read the database (CI, 2026-12-02).
        """
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if flight.done.wait(self.wait_s * 2):
                if flight.error is not None:
                    raise flight.error  # e.g. Redis is down: the caller falls back as the leader did
                CACHE_EVENTS.labels(label, "waited").inc()
                value = flight.value
                return list(value) if isinstance(value, list) else value  # type: ignore[return-value]
            return self._redis_single_flight(label, key, read, rebuild)  # the leader is stuck: ask Redis
        try:
            flight.value = self._redis_single_flight(label, key, read, rebuild)
            return flight.value  # type: ignore[return-value]
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._flights_lock:
                del self._flights[key]
            flight.done.set()

    def _redis_single_flight(self, label: str, key: str, read: Callable[[], T | None], rebuild: Callable[[], T]) -> T:
        """One caller per key rebuilds; the others wait briefly for its value, then read the database.

        The lock holder reads once more before rebuilding (the previous holder may have just
        filled the key), and releases only its own lock (token compare), so a lock that expired
        during a slow rebuild is never deleted from under the next holder.
        """
        lock = f"{key}:lock"
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self.wait_s
        pause = _FIRST_PAUSE_S
        while True:
            if self.r.set(lock, token, nx=True, px=2000):
                try:
                    value = read()
                    return value if value is not None else rebuild()
                finally:
                    self._unlock(keys=[lock], args=[token])
            if time.monotonic() >= deadline:
                CACHE_EVENTS.labels(label, "gave_up_waiting").inc()
                return rebuild()
            # backs off (jittered, doubling to a cap): 200 waiters polling every 10 ms made ~40,000
            # Redis calls/s and starved the lock holder's rebuild past the valve (CI, 2026-12-02)
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
            pause = min(pause * 2, _MAX_PAUSE_S)
            value = read()
            if value is not None:
                CACHE_EVENTS.labels(label, "waited").inc()
                return value

    @staticmethod
    def _ttl(base: int, jitter: int) -> int:
        return int((base + random.uniform(-jitter, jitter)) * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
