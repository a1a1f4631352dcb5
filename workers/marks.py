"""Keep the quick-refusal marks of a partition's hot seats fresh while the seats stay taken.

Why: a mark (models/quick_refusal.py) expires 900 ms after the read that saw its seat taken, and
only a job that reaches the partition writes it again. In a flash sale every mark of a burst is
written within a few milliseconds, so they all lapse together, and each time hundreds of attempts
in flight on those seats slip through the edge at once and queue as jobs (bench/contention_map.py
at 1,024 in flight: waves of jobs every 0.9 s, each queued behind the last). So the partition's
consumer remembers the hot seats — those that hold requests named at least twice, the second
time within `FORGET_AFTER_S` of the first (a seat sold to its first asker costs no refresh) —
until nobody asked for them for `FORGET_AFTER_S`, and every `REFRESH_S` reads their status in
one query and writes the marks of the taken ones again in one round trip, each from that read's
time.

Why this keeps SPEC §3's bound: a refreshed mark is like any other, it expires `TTL_MS` after a
moment before a database read that saw the seat taken, so a seat can never be refused more than
that after it became AVAILABLE. The keeper runs in the partition's consumer thread, between
batches, so a release of one of its seats (expiry, cancel, refund: all routed to the seat's
partition) commits and deletes the mark after any refresh that read the seat taken.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import peewee as pw
from dramatiq.broker import MessageProxy

from models import concerts, quick_refusal
from models.db import db
from models.redis_support import ANY_REDIS_ERROR
from models.reservations import rejection_for
from workers.dispatch import actor_of
from workers.reservations import hold_seat

log = logging.getLogger("workers.marks")

REFRESH_S = 0.3  # < TTL_MS with room for a batch in hand and the idle wake-up wait
FORGET_AFTER_S = 10.0  # a seat nobody asked for in this long is no longer hot
LIMIT = 5000  # seats remembered per partition at most (the oldest requests are forgotten first)


class MarkKeeper:
    """One partition's hot seats and the refresh of their marks (see the module docstring)."""

    def __init__(
        self, client: Any, *, refresh_s: float = REFRESH_S, forget_after_s: float = FORGET_AFTER_S, limit: int = LIMIT
    ) -> None:
        self.r = client
        self.refresh_s = refresh_s
        self.forget_after_s = forget_after_s
        self.limit = limit
        self.seats: dict[int, tuple[int, float]] = {}  # hot seat -> (schedule, last requested, monotonic)
        self._once: dict[int, float] = {}  # seat asked for once -> when (monotonic)
        self._next = 0.0
        self.refreshed = 0  # marks written by refreshes (for tests and metrics)

    def seen(self, messages: Sequence[MessageProxy]) -> None:
        """Note the seats these messages' holds asked for."""
        now = time.monotonic()
        for message in messages:
            if actor_of(message) is not hold_seat:
                continue
            seat_id = int(message.kwargs["seat_id"])
            first = self._once.pop(seat_id, None)
            if seat_id not in self.seats and (first is None or now - first > self.forget_after_s):
                self._once[seat_id] = now  # asked for once: not hot yet
                continue
            self.seats.pop(seat_id, None)  # re-inserted last: the dict stays in request order
            self.seats[seat_id] = (int(message.kwargs["schedule_id"]), now)
        for kept in (self.seats, self._once):
            while len(kept) > self.limit:
                del kept[next(iter(kept))]

    def tick(self) -> float:
        """Refresh if it is time; the seconds until the next refresh is due (large when there is nothing to keep)."""
        now = time.monotonic()
        if not self.seats:
            return 3600.0
        if now < self._next:
            return self._next - now
        self._next = now + self.refresh_s
        self.refresh()
        return self.refresh_s

    def refresh(self) -> None:
        """Read the remembered seats, mark the taken ones from this read, forget the rest."""
        now = time.monotonic()
        for seat_id in [s for s, (_, at) in self.seats.items() if now - at > self.forget_after_s]:
            del self.seats[seat_id]
        if not self.seats:
            return
        read_at = quick_refusal.now_ms()
        try:
            with db.connection_context():
                states = concerts.seat_states(seat_ids=self.seats)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            log.warning("mark refresh read failed (%s); the marks lapse until the next one", exc)
            return
        pipe = self.r.pipeline(transaction=False)
        marked = 0
        for seat_id, (schedule_id, number, status) in states.items():
            rejection = rejection_for(status=str(status), number=int(number))
            expected = self.seats.get(int(seat_id))
            if rejection is None or expected is None or expected[0] != int(schedule_id):
                self.seats.pop(int(seat_id), None)  # free again (or not this schedule's): nothing to keep
                continue
            quick_refusal.mark(
                pipe, schedule_id=int(schedule_id), seat_id=int(seat_id), refusal=rejection.detail, read_at_ms=read_at
            )
            marked += 1
        with contextlib.suppress(*ANY_REDIS_ERROR):  # a lost refresh only lets the next holds through
            pipe.execute()
            self.refreshed += marked
