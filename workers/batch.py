"""Coalesce a partition's backlog: answer holds on taken seats in bulk, run the rest one by one.

Why: in a flash sale most hold requests are for seats that are already HELD or RESERVED (the
contention benchmark's skewed workload: 1,900 of 2,000). One message at a time, each of those
cost a job-start script, a pooled DB checkout, a seat read, a job-finish script and an ack,
serially on the seat's partition, and the pipeline ran at a fifth of the rate of a Redis lock
per seat (bench/contention_bench.py, 2026-11-27). The partition owner is the only writer of
its seats, so it can do better than a lock: when several messages are waiting it takes them
together, reads the status of every seat they name in one query, and fails the holds on taken
seats in one Redis round trip. Everything else (holds on free seats, cancels, expiries,
payments, redelivered or stale jobs) goes through `workers.dispatch.handle` exactly as before,
in queue order.

Correctness: a rejection is decided from a status the database committed, read after every
earlier message of the batch about that seat has run (holds of one seat are decided in queue
order, in rounds: `SeatBatch._holds_in_rounds`), so it is the answer the serial path would have
given at that instant. Any message other than a hold runs alone, in its place, and the holds
after it read their seats afresh. A rejection is written only if the job is still
QUEUED (a script checks it atomically); a RUNNING job (a redelivery whose first attempt may have
succeeded) or a terminal one goes to the serial path, which knows how to handle it. A batch is
acknowledged only after all of it ran: a crash redelivers it, and finished jobs are skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import peewee as pw
import redis
from dramatiq.broker import MessageProxy

from models import concerts, quick_refusal
from models.concerts import AVAILABLE
from models.db import db
from models.errors import SeatNotAvailable, problem_of
from models.redis_support import ANY_REDIS_ERROR, DirectPipeline
from models.reservations import rejection_for
from workers import jobstats
from workers.dispatch import actor_of, handle
from workers.jobs import OPEN_KEY, JobStore, dropped
from workers.reservations import hold_seat

log = logging.getLogger("workers.batch")

Handler = Callable[[MessageProxy], None]


class SeatBatch:
    """Process a batch of one partition's messages in order (see the module docstring).

    One instance serves every partition consumer thread of a process (`partition_worker`), and a
    consumer acknowledges its batch as soon as the call returns: so what a call collects (its
    holds on free seats, the clock of its seat reads) lives in that call, never on `self`. (Kept on
    `self`, another partition's call could commit this one's holds after this one was acked, and a
    kill -9 in between left their jobs RUNNING with no message to redeliver.)
    """

    def __init__(
        self,
        client: redis.Redis,
        handler: Handler,
        *,
        stale_after_s: float,
        job_ttl: int = 3600,
        group: Callable[[Sequence[MessageProxy]], None] | None = None,
    ) -> None:
        self.r = client
        self.handler = handler
        self.stale_after_s = stale_after_s
        self.jobs = JobStore(client, ttl=job_ttl)
        self.group = group  # group commit of holds on free seats (workers/group.py); None: one by one
        self.rejected = 0  # holds answered in bulk (for tests and metrics)
        self._counting = threading.Lock()  # `rejected` is added to by every consumer thread

    def __call__(self, messages: Sequence[MessageProxy]) -> None:
        if len(messages) == 1 and _is_hold(messages[0]) and self.group is not None:
            # A lone hold takes the group's path: its seat read in the group's own reads, the job's
            # start and its finish (with the write-through, the open index and the counters) one
            # round trip each; one by one it made 4 round trips and read its seat back once more.
            self.group(list(messages))
            return
        if len(messages) < 2 or sum(1 for m in messages if _is_hold(m)) < 2:
            for message in messages:
                self.handler(message)
            return
        holds: list[MessageProxy] = []  # a run of holds between two other messages
        for message in messages:
            if _is_hold(message):
                holds.append(message)
                continue
            self._holds_in_rounds(holds)
            holds = []
            self.handler(message)  # anything else may change any seat: the next run reads afresh
        self._holds_in_rounds(holds)

    def _holds_in_rounds(self, holds: list[MessageProxy]) -> None:
        """Run a run of holds in rounds: each round takes the first remaining hold of each seat.

        A round reads the status of its seats in one query, answers the holds on taken seats in
        one round trip and commits the holds on free seats as one group; a later hold of a seat
        that a hold of this round claims waits for the next round, which reads the seat after
        that commit (and so answers it in bulk, or runs it if the claim failed). Per seat the
        holds are decided in queue order, as one by one; a batch costs about two rounds however
        its holds repeat their seats. (Before: the run was cut at each repeated seat, so a batch
        of 15 holds over 6 seats made up to 10 commit-and-read cycles, each 10 round trips: batches
        of 280-620 ms at 256 in flight, bench/contention_trace.py, 2026-12-02 15:37 UTC.)
        """
        remaining = holds
        while remaining:
            clock = quick_refusal.now_ms()
            known = self._read({int(m.kwargs["seat_id"]) for m in remaining})
            read_at = dict.fromkeys(known, clock)
            claimed: set[int] = set()  # seats a hold of this round may take: their later holds wait
            later: list[MessageProxy] = []
            pending: list[tuple[MessageProxy, dict[str, Any]]] = []
            free: list[MessageProxy] = []  # holds on free seats, committed together (self.group)
            for message in remaining:
                seat_id = int(message.kwargs["seat_id"])
                if seat_id in claimed:
                    later.append(message)
                    continue
                problem = self._rejection(message, known.get(seat_id))
                if problem is not None:
                    pending.append((message, problem))
                    continue
                claimed.add(seat_id)
                if self.group is not None and (known.get(seat_id) or (0, 0, ""))[2] == AVAILABLE:
                    free.append(message)
                    continue
                self._flush(pending, read_at)  # the serial path decides this one, in its place
                self._commit_free(free)
                self.handler(message)
            self._flush(pending, read_at)
            self._commit_free(free)
            remaining = later

    def _commit_free(self, free: list[MessageProxy]) -> None:
        """Run (and empty) the collected holds on free seats: one group commit (one by one without a group)."""
        collected, free[:] = list(free), []
        if self.group is None:
            for message in collected:
                self.handler(message)
        elif collected:
            self.group(collected)

    def _rejection(self, message: MessageProxy, seat: tuple[int, int, str] | None) -> dict[str, Any] | None:
        """The problem to answer this hold with without running it, or None to run it."""
        if seat is None:
            return None  # unknown seat, or the read failed: the serial path decides
        schedule_id, number, status = seat
        kw = message.kwargs
        rejection = rejection_for(status=status, number=number)
        if schedule_id != int(kw["schedule_id"]) or rejection is None:
            return None
        if _ms() - int(kw.get("enqueued_ms", 0)) > self.stale_after_s * 1000:
            return problem_of(dropped(self.stale_after_s))
        return problem_of(rejection)

    def _read(self, seat_ids: set[int]) -> dict[int, tuple[int, int, str]]:
        try:
            with db.connection_context():
                return concerts.seat_states(seat_ids=seat_ids)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            log.warning("seat snapshot failed (%s); these holds take the serial path", exc)
            return {}

    def _flush(self, pending: list[tuple[MessageProxy, dict[str, Any]]], read_at: dict[int, int]) -> None:
        """Fail the pending rejections in one round trip; any job no longer QUEUED runs serially."""
        if not pending:
            return
        batch, pending[:] = list(pending), []
        try:
            pipe = DirectPipeline(self.r)
            self._mark_taken(batch, pipe, read_at)  # first: a waiter woken by its job's end finds the mark
            first = len(pipe)
            for message, problem in batch:
                self.jobs.fail_if_queued(message.kwargs["job_id"], problem, pipe=pipe)
            results: list[Any] = pipe.execute()[first : first + len(batch)]
            ended = [m.kwargs["job_id"] for (m, _), done in zip(batch, results, strict=True) if int(done)]
            if ended:
                self.r.zrem(OPEN_KEY, *ended)
        except ANY_REDIS_ERROR as exc:
            log.warning("bulk rejection failed (%s); these holds take the serial path", exc)
            results = [0] * len(batch)
        answered, now = [], _ms()
        for (message, _), done in zip(batch, results, strict=True):
            if int(done):
                answered.append(
                    ("hold", "failed", max(0.0, (now - int(message.kwargs.get("enqueued_ms", now))) / 1000))
                )
            else:
                self.handler(message)
        if answered:
            with self._counting:
                self.rejected += len(answered)
            log.info("%s hold(s) on taken seats answered in one batch", len(answered))
            with contextlib.suppress(*ANY_REDIS_ERROR):  # only the metric is lost
                jobstats.record(self.r, answered)

    def _mark_taken(self, batch: list[tuple[MessageProxy, dict[str, Any]]], pipe: Any, read_at: dict[int, int]) -> None:
        """Add the quick-refusal marks of the seats these rejections saw taken (models/quick_refusal.py)."""
        marked: set[int] = set()
        for message, problem in batch:
            seat_id = int(message.kwargs["seat_id"])
            if problem.get("code") != SeatNotAvailable.code or seat_id in marked or seat_id not in read_at:
                continue
            marked.add(seat_id)
            quick_refusal.mark(
                pipe,
                schedule_id=int(message.kwargs["schedule_id"]),
                seat_id=seat_id,
                refusal=problem.get("detail"),
                read_at_ms=read_at[seat_id],
            )


def _is_hold(message: MessageProxy) -> bool:
    return actor_of(message) is hold_seat


def _ms() -> int:
    return int(time.time() * 1000)


def partition_worker(services: Any) -> Any:
    """The PartitionWorker of `python -m workers run` and `make run`: serial handler + batching."""
    from workers.expiries import ExpiryRuns
    from workers.group import HoldGroup
    from workers.marks import MarkKeeper
    from workers.partitions import PartitionWorker

    settings = services.settings
    stale = settings.job_stale_after
    group = HoldGroup(
        JobStore(services.redis),
        handle,
        stale_after_s=stale,
        hold_ttl=settings.hold_ttl,
        max_holds=settings.max_holds_per_user,
        max_extensions=settings.hold_max_extensions,
    )
    batch = ExpiryRuns(SeatBatch(services.redis, handle, stale_after_s=stale, group=group), handle)
    marks = MarkKeeper(services.redis, background=True)  # one for all partitions of this process
    return PartitionWorker(
        services.redis,
        services.broker,
        handle,
        partitions=settings.partitions,
        batch=batch if settings.worker_batch > 1 else None,
        batch_size=settings.worker_batch,
        keeper=lambda _partition: marks,
    )
