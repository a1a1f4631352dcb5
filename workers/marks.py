"""Keep the quick-refusal marks of the seats a partition was asked for fresh while the seats stay taken.

Why: a mark (models/quick_refusal.py) expires 900 ms after the read that saw its seat taken, and
only a job that reaches the partition writes it again. In a flash sale every mark of a burst is
written within a few milliseconds, so they all lapse together, and each time hundreds of attempts
in flight on those seats slip through the edge at once and queue as jobs (bench/contention_map.py
at 1,024 in flight: waves of jobs every 0.9 s, each queued behind the last). So the partition's
consumer remembers every seat a hold request named — from its first request, noted when the
consumer fetches the batch, before it runs — until no request for it reached the partition for
`FORGET_AFTER_S`, and every `REFRESH_S` reads their status in one query and writes the marks of
the taken ones again in one round trip, each from that read's time. A seat read free stays
remembered (unmarked): the first refresh after its winner commits marks it, and the commit's own
write-through marks it before that.

Why from the first request, not the second: once the edge refuses a taken seat, later requests
for it never reach the partition, so the worker cannot learn from them that the seat is wanted.
(Remembered only when asked twice, a seat sold to its first asker — every seat, in a sale — kept
its commit's mark for 900 ms and no more; then the attempts of the next 100-400 ms queued as
doomed jobs, bench/contention_trace.py at 32 clients, 2026-12-02 15:20 UTC: 170 of 270 jobs.)
The refresh costs one indexed read and one pipelined write per `REFRESH_S` for all of a
process's remembered seats (at most `LIMIT` per keeper, the least recently asked dropped first):
fixed SQL text and one script call per schedule (`quick_refusal.mark_many`), not an ORM query and a
SET per seat, which cost 89 ms of CPU per refresh of 2,000 seats (2026-12-03 07:47 UTC, load 9):
~30 % of a CPU per worker process while a sale's seats stayed remembered.

Why one keeper per worker process, on its own thread (`background=True`, what `python -m
workers run` uses), and not in each partition's consumer between batches: under load a batch
took 0.3-1.4 s (bench/contention_map.py at 256 in flight, 2026-12-02 12:28 UTC), so a busy
partition refreshed its marks less often than they lapse, the lapsed seats let more holds
through as jobs, which made its batches longer still: at 256 in flight 698 holds on taken seats
reached the workers and a hot partition's queue waited up to 4 s. The thread refreshes every
hot seat of every partition of the process in one query and one round trip, whatever the
consumers are doing (also 16 times fewer refresh queries than one per partition).

Why this keeps SPEC §3's bound: a refreshed mark is like any other, it expires `TTL_MS` after a
moment before a database read that saw the seat taken, so a seat can never be refused more than
that after it became AVAILABLE — also when a refresh that read the seat taken lands after a
release (expiry, cancel, refund) committed and deleted the mark: the late mark still expires
`TTL_MS` after its read, which came before the release.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import peewee as pw
from dramatiq.broker import MessageProxy

from models import concerts, quick_refusal
from models.db import db
from models.redis_support import ANY_REDIS_ERROR, DirectPipeline
from models.reservations import rejection_for
from workers.dispatch import actor_of
from workers.reservations import hold_seat

log = logging.getLogger("workers.marks")

REFRESH_S = 0.3  # < TTL_MS with room for a batch in hand and the idle wake-up wait
FORGET_AFTER_S = 10.0  # a seat no request reached the partition for in this long is forgotten
LIMIT = 5000  # seats remembered per partition at most (the oldest requests are forgotten first)


class MarkKeeper:
    """Requested seats and the refresh of their marks (see the module docstring): one partition's, refreshed
    by its consumer between batches (`tick`), or, with `background`, every partition's of a process,
    refreshed by a thread of the keeper's own that runs while there are remembered seats."""

    def __init__(
        self,
        client: Any,
        *,
        refresh_s: float = REFRESH_S,
        forget_after_s: float = FORGET_AFTER_S,
        limit: int = LIMIT,
        background: bool = False,
    ) -> None:
        self.r = client
        self.refresh_s = refresh_s
        self.forget_after_s = forget_after_s
        self.limit = limit
        self.background = background  # refresh on own thread (one keeper for every partition of a process)
        self.seats: dict[int, tuple[int, float]] = {}  # requested seat -> (schedule, last requested, monotonic)
        self._next = 0.0
        self._lock = threading.Lock()  # seen() runs on every consumer thread, refresh() on the keeper's
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.refreshed = 0  # marks written by refreshes (for tests and metrics)

    def seen(self, messages: Sequence[MessageProxy]) -> None:
        """Note the seats these messages' holds asked for (and start the background refresh if due)."""
        now = time.monotonic()
        with self._lock:
            for message in messages:
                if actor_of(message) is not hold_seat:
                    continue
                seat_id = int(message.kwargs["seat_id"])
                self.seats.pop(seat_id, None)  # re-inserted last: the dict stays in request order
                self.seats[seat_id] = (int(message.kwargs["schedule_id"]), now)
            while len(self.seats) > self.limit:
                del self.seats[next(iter(self.seats))]
            if self.background and self.seats and self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="mark-keeper", daemon=True)
                self._thread.start()

    def tick(self) -> float:
        """Refresh if it is time; the seconds until the next refresh is due (large when there is nothing
        to keep, or when the keeper's own thread refreshes: a consumer then never waits for it)."""
        now = time.monotonic()
        if self.background or not self.seats:
            return 3600.0
        if now < self._next:
            return self._next - now
        self._next = now + self.refresh_s
        self.refresh()
        return self.refresh_s

    def stop(self) -> None:
        """End the background refresh (the worker is shutting down): its marks lapse within TTL_MS."""
        self._stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        """The background refresh: every refresh_s while there are remembered seats, then the thread ends."""
        while not self._stopping.is_set():
            started = time.monotonic()
            with contextlib.suppress(Exception):  # logged by refresh; a refresh must never kill the keeper
                self.refresh()
            with self._lock:
                if not self.seats:
                    break
            self._stopping.wait(max(0.0, self.refresh_s - (time.monotonic() - started)))
        with self._lock:
            self._thread = None

    def refresh(self) -> None:
        """Read the remembered seats, mark the taken ones from this read, forget the rest."""
        now = time.monotonic()
        with self._lock:
            for seat_id in [s for s, (_, at) in self.seats.items() if now - at > self.forget_after_s]:
                del self.seats[seat_id]
            wanted = dict(self.seats)
        if not wanted:
            return
        read_at = quick_refusal.now_ms()
        try:
            with db.connection_context():
                states = concerts.seat_states(seat_ids=wanted)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            log.warning("mark refresh read failed (%s); the marks lapse until the next one", exc)
            return
        taken: dict[int, list[tuple[int, str]]] = {}  # per schedule: (seat, detail) of the seats read taken
        for seat_id, (schedule_id, number, status) in states.items():
            rejection = rejection_for(status=str(status), number=int(number))
            expected = wanted.get(int(seat_id))
            if expected is None or expected[0] != int(schedule_id):
                with self._lock:  # not this schedule's seat: nothing to keep
                    if self.seats.get(int(seat_id)) == expected:
                        self.seats.pop(int(seat_id), None)
                continue
            if rejection is None:
                continue  # free (not yet held, or released): no mark, but still hot until forgotten
            taken.setdefault(int(schedule_id), []).append((int(seat_id), rejection.detail))
        if not taken:
            return
        pipe = DirectPipeline(self.r)
        for schedule_id, refusals in taken.items():
            quick_refusal.mark_many(pipe, schedule_id=schedule_id, refusals=refusals, read_at_ms=read_at)
        with contextlib.suppress(*ANY_REDIS_ERROR):  # a lost refresh only lets the next holds through
            pipe.execute()
            self.refreshed += sum(len(r) for r in taken.values())
