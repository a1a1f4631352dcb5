"""Group commit of a batch's holds on different free seats (models/group_holds.py).

Why: once the edge refuses holds on taken seats (models/quick_refusal.py), what reaches a
partition in a flash sale is mostly the winners, and one message at a time each paid a job-start
script, its own reads, its own transaction and commit, and a job-finish script. A group pays
one start pipeline, two reads, one commit and one finish pipeline for all of them.

Safety is the serial path's: a job not QUEUED when the group starts it (a redelivery whose
first attempt may have run) and every job of a group that conflicted go to
`workers.dispatch.handle`, which looks for an earlier attempt's reservation by job id first.
A group's messages are acknowledged with the rest of the batch, after this returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import peewee as pw
from dramatiq.broker import MessageProxy

from config.bootstrap import current
from config.logs import job_context
from models import group_holds, quick_refusal
from models.cache import CatalogueCache
from models.concerts import HELD as SEAT_HELD
from models.db import db
from models.errors import DomainError, SeatNotAvailable, problem_of
from models.redis_support import ANY_REDIS_ERROR, REDIS_ERRORS, DirectPipeline, run_script
from models.reservations import ReservationView, rejection_for, reservation_json
from workers import jobstats
from workers.jobs import FAILED, OPEN_KEY, QUEUED, SUCCEEDED, JobStore, done_key, job_key, log_outcome

log = logging.getLogger("workers.group")

Handler = Callable[[MessageProxy], None]
_TRANSIENT: tuple[type[Exception], ...] = (pw.OperationalError, pw.InterfaceError, *REDIS_ERRORS)


class HoldGroup:
    """Run a list of first-attempt holds on different seats as one transaction (else one by one)."""

    def __init__(
        self,
        jobs: JobStore,
        serial: Handler,
        *,
        stale_after_s: float,
        hold_ttl: int,
        max_holds: int,
        max_extensions: int = 2,
    ) -> None:
        self.jobs = jobs
        self.serial = serial
        self.stale_after_s = stale_after_s
        self.hold_ttl = hold_ttl
        self.max_holds = max_holds
        self.max_extensions = max_extensions
        self.committed = 0  # holds committed in groups (for tests and metrics)
        self._cache: CatalogueCache | None = None

    def __call__(self, messages: Sequence[MessageProxy]) -> None:
        now = _ms()
        fresh = [m for m in messages if now - int(m.kwargs.get("enqueued_ms", now)) <= self.stale_after_s * 1000]
        if not fresh:
            for message in messages:
                self.serial(message)  # stale ones: the serial path drops them
            return
        kept = {id(m) for m in fresh}  # by identity: `in fresh` compared messages field by field, n² times
        for message in messages:
            if id(message) not in kept:
                self.serial(message)
        mine = self._start(fresh)
        if not mine:
            return
        committed = self._commit(mine)
        if committed is None:
            for message in mine:
                self.serial(message)  # RUNNING now: the serial path looks for this attempt first
            return
        self._finish(mine, *committed)

    def _start(self, messages: list[MessageProxy]) -> list[MessageProxy]:
        """Mark every job RUNNING in one round trip; the QUEUED ones are the group's, RUNNING ones run alone."""
        pipe = DirectPipeline(self.jobs.r)  # this thread's own connection, hiredis-packed
        for m in messages:
            run_script(self.jobs._start, keys=[job_key(m.kwargs["job_id"])], args=[], client=pipe)
        previous = [_text(p) for p in pipe.execute()]
        for m, was in zip(messages, previous, strict=True):
            if was not in (QUEUED, SUCCEEDED, FAILED, "MISSING"):
                self.serial(m)
        return [m for m, was in zip(messages, previous, strict=True) if was == QUEUED]

    def _commit(self, messages: list[MessageProxy]) -> tuple[list[Any], int] | None:
        """The group's transaction; its outcomes and the clock before its reads (None: one by one)."""
        holds = [
            group_holds.HoldRequest(
                int(m.kwargs["user_id"]), int(m.kwargs["schedule_id"]), int(m.kwargs["seat_id"]), m.kwargs["job_id"]
            )
            for m in messages
        ]
        try:
            with db.connection_context():
                read_at = quick_refusal.now_ms()
                outcomes = group_holds.hold_seats(
                    holds=holds, hold_ttl=self.hold_ttl, max_holds=self.max_holds, max_extensions=self.max_extensions
                )
        except _TRANSIENT as exc:
            log.warning("group commit of %s holds failed (%s); one by one", len(holds), exc)
            return None
        if outcomes is None:
            log.info("group of %s holds conflicted; one by one", len(holds))
            return None
        return outcomes, read_at

    def _finish(self, messages: list[MessageProxy], outcomes: list[Any], read_at: int) -> None:
        """Every job's SUCCEEDED/FAILED, the open index, the counters and the write-through in one round trip.

        The write-through (catalogue cache and quick-refusal marks, workers/cache.py) uses the
        state this group committed, HELD, without reading the seat back: these are first attempts
        (a redelivery takes the serial path), and the partition is the seats' only writer. It goes
        ahead of the jobs' ends, as the serial path writes through before it finishes a job: a
        pipeline is not atomic, and a waiter woken by its job's end (the winner, or holds that
        followed its pending mark) may send the next request before the rest of the pipeline ran;
        with the mark after the ends, a hold right after a 201 could still find the pending mark
        and be queued (tests/unit/test_pipeline.py's "refused at once" test, flaky under load).
        """
        pipe = DirectPipeline(self.jobs.r)
        self._write_through(pipe, messages, outcomes, read_at)  # first: a woken waiter finds the mark
        first = len(pipe)
        counted, now = [], _ms()
        results: list[dict[str, object] | None] = []  # each job's result (None: it failed)
        for m, o in zip(messages, outcomes, strict=True):
            job_id = m.kwargs["job_id"]
            if isinstance(o, DomainError):
                args = [FAILED, "error", json.dumps(problem_of(o)), self.jobs.ttl, ""]
                results.append(None)
            else:
                self.committed += 1
                results.append(reservation_json(o))
                args = [SUCCEEDED, "result", json.dumps(results[-1]), self.jobs.ttl, ""]
            run_script(self.jobs._finish, keys=[job_key(job_id), done_key(job_id)], args=args, client=pipe)
            outcome = "failed" if isinstance(o, DomainError) else "succeeded"
            counted.append(("hold", outcome, max(0.0, (now - int(m.kwargs.get("enqueued_ms", now))) / 1000)))
        pipe.zrem(OPEN_KEY, *[m.kwargs["job_id"] for m in messages])
        jobstats.record(self.jobs.r, counted, pipe=pipe)
        with contextlib.suppress(*ANY_REDIS_ERROR):
            ended = pipe.execute()[first : first + len(messages)]
            for m, o, result, (_, _, seconds), done in zip(messages, outcomes, results, counted, ended, strict=True):
                if int(done):  # one INFO line per job, as the serial path writes (run_job)
                    with job_context(m.kwargs["job_id"], m.options.get("request_id")):
                        log_outcome("hold", seconds, result=result, error=o if isinstance(o, DomainError) else None)
            return
        for m, o in zip(messages, outcomes, strict=True):  # the pipeline failed: finish each alone
            if isinstance(o, DomainError):
                self.jobs.fail(m.kwargs["job_id"], problem_of(o))
            else:
                self.jobs.succeed(m.kwargs["job_id"], reservation_json(o))

    def _write_through(self, pipe: Any, messages: list[MessageProxy], outcomes: list[Any], read_at: int) -> None:
        """Add the cache update and the taken mark of every seat the group held or found taken: one
        cache script and one mark script per schedule (a call of each per seat made 64 of the 258
        commands of a group of 32; bench/group_costs.py, 2026-12-03)."""
        if self._cache is None:
            self._cache = current().catalogue_cache()
        held: dict[int, list[tuple[int, int, int, str]]] = {}  # schedule -> (seat, number, price, HELD)
        marks: dict[int, list[tuple[int, str]]] = {}  # schedule -> (seat, 409 detail)
        for m, o in zip(messages, outcomes, strict=True):
            schedule_id, seat_id = int(m.kwargs["schedule_id"]), int(m.kwargs["seat_id"])
            if isinstance(o, ReservationView):
                held.setdefault(schedule_id, []).append((seat_id, o.seat_number, o.price, SEAT_HELD))
                refusal = rejection_for(status=SEAT_HELD, number=o.seat_number)
                if refusal is not None:
                    marks.setdefault(schedule_id, []).append((seat_id, refusal.detail))
            elif isinstance(o, SeatNotAvailable):
                marks.setdefault(schedule_id, []).append((seat_id, o.detail))
        for schedule_id, changes in held.items():
            self._cache.seats_changed(schedule_id=schedule_id, changes=changes, client=pipe)
        for schedule_id, refusals in marks.items():
            quick_refusal.mark_many(pipe, schedule_id=schedule_id, refusals=refusals, read_at_ms=read_at)


def _ms() -> int:
    return int(time.time() * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
