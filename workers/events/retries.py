"""The consumer's bounded in-memory retry queue and its per-partition commit point.

A record whose handling fails is put aside (retried `retries` times, `interval` apart, then
dead-lettered) while the records after it on its partition go on. Three rules keep that safe:

- Order per aggregate: a later record with the same key (the reservation id) waits behind the
  failing one and is handled right after it settles, so one reservation's events never overtake
  each other; records of other keys are not held.
- Commit point: a partition is committed up to its oldest unsettled record, never past it. A
  crash loses the queue, not the events: the group redelivers from that record, and the
  event-id marker (`events:done:<eventId>`) absorbs the ones already handled.
- Bounded: a partition with MAX_PENDING unsettled records is paused (no more fetches) until the
  queue drains below it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("workers.events")

MAX_PENDING = 500  # unsettled records per partition before it is paused


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    tp: Any = field(compare=False)
    rec: Any = field(compare=False)
    attempts: int = field(compare=False)
    error: str = field(compare=False)


class Settler:
    """Handle records; a failing one is retried from memory without holding up the others."""

    def __init__(
        self,
        handler: Callable[[bytes], object],
        *,
        dead_letter: Callable[[Any, str, int], None],
        settled: Callable[[], None],
        redis_up: Callable[[], bool],
        retries: int,
        interval: float,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler, self.dead_letter, self.settled, self.redis_up = handler, dead_letter, settled, redis_up
        self.retries, self.interval, self.max_pending, self.clock = retries, interval, max_pending, clock
        self._heap: list[_Retry] = []
        self._seq = itertools.count()
        self._unsettled: dict[Any, set[int]] = {}  # partition -> offsets in retry or waiting behind one
        self._next: dict[Any, int] = {}  # partition -> one past the last offset taken
        self._committed: dict[Any, int] = {}
        self._behind: dict[tuple[Any, bytes | None], deque[Any]] = {}  # (partition, key) -> records waiting

    # --- fresh records ---------------------------------------------------------------------
    def take(self, batches: list[tuple[Any, list[Any]]]) -> list[tuple[Any, int]]:
        """Handle a poll's records in order; [] when all were taken, else where to rewind to
        (Redis, where the handler works, is down: the event is fine, so it waits for Redis)."""
        for i, (tp, records) in enumerate(batches):
            for rec in records:
                lane = (tp, rec.key)
                if lane in self._behind:  # same aggregate as a record in retry: keep their order
                    self._behind[lane].append(rec)
                    self._unsettled.setdefault(tp, set()).add(rec.offset)
                else:
                    error = self._attempt(rec)
                    if error is not None and not self.redis_up():
                        log.warning("Redis unreachable: holding %s[%s]@%s until it returns", *_where(rec))
                        return [(tp, rec.offset)] + [
                            (later_tp, later[0].offset) for later_tp, later in batches[i + 1 :]
                        ]
                    if error is None:
                        self.settled()
                    else:
                        self._put_aside(tp, rec, 1, error)
                self._next[tp] = rec.offset + 1
        return []

    # --- the retry queue -------------------------------------------------------------------
    def retry_due(self) -> None:
        """Retry every record whose time has come; dead-letter those out of attempts."""
        while self._heap and self._heap[0].due <= self.clock():
            item = heapq.heappop(self._heap)
            error = self._attempt(item.rec)
            if error is not None and not self.redis_up():  # not the event's fault: not an attempt
                self._push(item.tp, item.rec, item.attempts, item.error)
                return
            if error is not None and item.attempts + 1 <= self.retries:
                self._push(item.tp, item.rec, item.attempts + 1, error)
                continue
            if error is not None:
                self.dead_letter(item.rec, error, item.attempts + 1)
            self._done(item.tp, item.rec)
            self._release(item.tp, item.rec.key)

    def next_due_in(self) -> float | None:
        """Seconds until the next retry is due (0 if overdue), None when nothing waits."""
        return max(0.0, self._heap[0].due - self.clock()) if self._heap else None

    def pending(self, tp: Any) -> int:
        """Records of a partition not settled yet (in retry or waiting behind one)."""
        return len(self._unsettled.get(tp, ()))

    def full(self, tp: Any) -> bool:
        """True when a partition holds MAX_PENDING unsettled records: fetch no more from it."""
        return self.pending(tp) >= self.max_pending

    # --- commits ---------------------------------------------------------------------------
    def commit_points(self) -> dict[Any, int]:
        """Partitions whose safe commit offset moved: up to the oldest unsettled record."""
        out: dict[Any, int] = {}
        for tp, nxt in self._next.items():
            unsettled = self._unsettled.get(tp)
            point = min(unsettled) if unsettled else nxt
            if point > self._committed.get(tp, -1):
                out[tp] = point
        return out

    def committed(self, points: dict[Any, int]) -> None:
        """Note offsets the broker accepted."""
        self._committed.update(points)

    def forget(self, partitions: Any) -> None:
        """Drop all state of partitions this consumer no longer owns (their next owner redelivers
        from the committed offset)."""
        gone = set(partitions)
        self._heap = [r for r in self._heap if r.tp not in gone]
        heapq.heapify(self._heap)
        self._behind = {lane: q for lane, q in self._behind.items() if lane[0] not in gone}
        for tp in gone:
            self._unsettled.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    # --- internals -------------------------------------------------------------------------
    def _attempt(self, rec: Any) -> str | None:
        try:
            self.handler(rec.value)
            return None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("event %s[%s]@%s failed: %s", *_where(rec), error)
            return error

    def _put_aside(self, tp: Any, rec: Any, attempts: int, error: str) -> None:
        self._behind.setdefault((tp, rec.key), deque())
        self._unsettled.setdefault(tp, set()).add(rec.offset)
        self._push(tp, rec, attempts, error)

    def _push(self, tp: Any, rec: Any, attempts: int, error: str) -> None:
        heapq.heappush(self._heap, _Retry(self.clock() + self.interval, next(self._seq), tp, rec, attempts, error))

    def _done(self, tp: Any, rec: Any) -> None:
        self._unsettled.get(tp, set()).discard(rec.offset)
        self.settled()

    def _release(self, tp: Any, key: bytes | None) -> None:
        """The head of a key's lane settled: handle the records waiting behind it, in order, until
        one fails (it becomes the lane's new head in the retry queue)."""
        waiting = self._behind.pop((tp, key), deque())
        while waiting:
            rec = waiting.popleft()
            error = self._attempt(rec)
            if error is not None:
                attempts = 1 if self.redis_up() else 0  # Redis down is not the event's fault
                self._behind[(tp, key)] = waiting
                self._push(tp, rec, attempts, error)
                return
            self._done(tp, rec)


def _where(rec: Any) -> tuple[str, int, int]:
    return rec.topic, rec.partition, rec.offset
