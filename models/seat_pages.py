"""Seat maps as ready JSON bytes: rendered once per schedule version and view, then served as is.

  cache:{s:ID}:pages  HASH  "<version>|<status>|<fromNumber>|<limit>" -> "<etag>\\n<JSON body>"
                            TTL CACHE_SEATS_TTL; cleared when it holds 64 views

The field names the schedule's version (`cache:{s:ID}:ver`, bumped by every seat transition's
write-through in models/cache.py), so a transition makes the next read render afresh and needs
no invalidation. The version is read before the seats, so a page holds that version's state or
a newer one, never an older. One script reads the version and the page in one call, so a route
can send it together with the queue-token check: one round trip for a cached seat map.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from models.cache import CACHE_EVENTS, CatalogueCache, changes_here, schedule_keys
from models.redis_support import REDIS_ERRORS, run_script
from models.tally import TALLY

MAX_VIEWS = 64
RECENT_S = 0.5  # a page read from Redis is served again from this process's memory for this long
RECENT_MAX = 4096  # pages kept per process (cleared when full)

_READ = """
local v = redis.call('GET', KEYS[1]) or '0'
return {v, redis.call('HGET', KEYS[2], v .. '|' .. ARGV[1])}
"""

_STORE = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class SeatMapView:
    """Which part of a seat map: one status or all, seats numbered from `from_number`, at most `limit`."""

    schedule_id: int
    status: str | None = None
    from_number: int = 1
    limit: int | None = None

    @property
    def field(self) -> str:
        return f"{self.status or ''}|{self.from_number}|{self.limit or ''}"


@dataclass(frozen=True)
class Page:
    """A rendered seat map: its ETag and JSON body."""

    etag: str
    body: bytes


def pages_key(schedule_id: int) -> str:
    """The rendered pages of a schedule (the schedule's slot)."""
    return f"cache:{{s:{schedule_id}}}:pages"


class SeatPages:
    """Rendered seat-map pages over the catalogue cache."""

    def __init__(self, client: redis.Redis, catalogue: CatalogueCache, *, ttl_s: int) -> None:
        self.r = client
        self.catalogue = catalogue
        self.ttl_ms = ttl_s * 1000
        self._read = client.register_script(_READ)
        self._store = client.register_script(_STORE)
        self._recent: dict[SeatMapView, tuple[float, int, Page]] = {}  # view -> (until, changes_here, page)

    def recent(self, view: SeatMapView) -> tuple[int, Page | None]:
        """(a stamp for remember(), the page of `view` this process read less than RECENT_S ago).

        Under load one process serves a popular seat map hundreds of times a second: its copy
        saves the Redis round trip of all but one read every RECENT_S. A copy is dropped sooner
        when this process writes a seat transition through (in-process workers, tests). What it
        costs: a transition made by another process shows up to RECENT_S later.
        """
        stamp = changes_here()
        found = self._recent.get(view)
        if found is not None and found[1] == stamp and time.monotonic() < found[0]:
            TALLY.inc(CACHE_EVENTS, ("seats", "local"))  # served from this process's copy
            return stamp, found[2]
        return stamp, None

    def remember(self, view: SeatMapView, page: Page, stamp: int) -> None:
        """Keep `page` for recent() (stamped before it was read, so a transition meanwhile voids it)."""
        if len(self._recent) >= RECENT_MAX:
            self._recent.clear()
        self._recent[view] = (time.monotonic() + RECENT_S, stamp, page)

    def read_call(self, view: SeatMapView) -> tuple[Any, list[str], list[str]]:
        """The read script's (script, keys, args), to run in one round trip with the token check."""
        return self._read, [schedule_keys(view.schedule_id)[0], pages_key(view.schedule_id)], [view.field]

    def page(self, view: SeatMapView, reply: Any = None) -> Page:
        """The page of `view`: from the read script's reply when it held one, else rendered and stored."""
        version, cached = reply if reply is not None else run_script(self._read, *self.read_call(view)[1:])
        if cached:
            CACHE_EVENTS.labels("seats", "hit").inc()
            etag, _, body = (cached.encode() if isinstance(cached, str) else bytes(cached)).partition(b"\n")
            return Page(etag.decode(), body)
        seats, storable = self.catalogue.seat_map_read(schedule_id=view.schedule_id, status=view.status)
        page = render(view, seats)
        if not storable:  # read from the database while Redis failed: maybe a lagging replica's state
            return page
        field = f"{_text(version)}|{view.field}"
        value = page.etag.encode() + b"\n" + page.body
        with contextlib.suppress(*REDIS_ERRORS):  # served anyway; the next read renders again
            run_script(self._store, keys=[pages_key(view.schedule_id)], args=[field, value, self.ttl_ms, MAX_VIEWS])
        return page


def render(view: SeatMapView, seats: list[Any]) -> Page:
    """The JSON body {"scheduleId","seats":[...],"nextFromNumber"} of a view of these seats (by number)."""
    chosen = [s for s in seats if s.number >= view.from_number]
    following = None
    if view.limit is not None and len(chosen) > view.limit:
        following = chosen[view.limit].number
        chosen = chosen[: view.limit]
    body = {
        "scheduleId": view.schedule_id,
        "seats": [{"seatId": s.seat_id, "number": s.number, "price": s.price, "status": s.status} for s in chosen],
        "nextFromNumber": following,
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    return Page(f'"{hashlib.blake2b(data, digest_size=8).hexdigest()}"', data)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
