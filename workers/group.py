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

from models import group_holds, quick_refusal
from models.db import db
from models.errors import DomainError, SeatNotAvailable, problem_of
from models.redis_support import ANY_REDIS_ERROR, REDIS_ERRORS, run_script
from models.reservations import reservation_json
from workers import jobstats
from workers.cache import mark_seat, write_through
from workers.jobs import FAILED, OPEN_KEY, QUEUED, SUCCEEDED, JobStore, done_key, job_key

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

    def __call__(self, messages: Sequence[MessageProxy]) -> None:
        now = _ms()
        fresh = [m for m in messages if now - int(m.kwargs.get("enqueued_ms", now)) <= self.stale_after_s * 1000]
        if len(fresh) < 2:
            for message in messages:
                self.serial(message)  # one alone, or stale ones (the serial path drops them)
            return
        for message in messages:
            if message not in fresh:
                self.serial(message)
        mine = self._start(fresh)
        if not mine:
            return
        outcomes = self._commit(mine)
        if outcomes is None:
            for message in mine:
                self.serial(message)  # RUNNING now: the serial path looks for this attempt first
            return
        self._finish(mine, outcomes)

    def _start(self, messages: list[MessageProxy]) -> list[MessageProxy]:
        """Mark every job RUNNING in one round trip; the QUEUED ones are the group's, RUNNING ones run alone."""
        pipe = self.jobs.r.pipeline(transaction=False)
        for m in messages:
            run_script(self.jobs._start, keys=[job_key(m.kwargs["job_id"])], args=[], client=pipe)
        previous = [_text(p) for p in pipe.execute()]
        for m, was in zip(messages, previous, strict=True):
            if was not in (QUEUED, SUCCEEDED, FAILED, "MISSING"):
                self.serial(m)
        return [m for m, was in zip(messages, previous, strict=True) if was == QUEUED]

    def _commit(self, messages: list[MessageProxy]) -> list[Any] | None:
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
                for o in outcomes or []:
                    if not isinstance(o, DomainError):
                        write_through(o)
        except _TRANSIENT as exc:
            log.warning("group commit of %s holds failed (%s); one by one", len(holds), exc)
            return None
        if outcomes is None:
            log.info("group of %s holds conflicted; one by one", len(holds))
            return None
        for hold, o in zip(holds, outcomes, strict=True):
            if isinstance(o, SeatNotAvailable):
                mark_seat(
                    self.jobs.r,
                    schedule_id=hold.schedule_id,
                    seat_id=hold.seat_id,
                    refusal=o.detail,
                    read_at_ms=read_at,
                )
        return outcomes

    def _finish(self, messages: list[MessageProxy], outcomes: list[Any]) -> None:
        """Every job's SUCCEEDED/FAILED, the open index and the counters in one round trip."""
        pipe = self.jobs.r.pipeline(transaction=False)
        counted, now = [], _ms()
        for m, o in zip(messages, outcomes, strict=True):
            job_id = m.kwargs["job_id"]
            if isinstance(o, DomainError):
                args = [FAILED, "error", json.dumps(problem_of(o)), self.jobs.ttl, ""]
            else:
                self.committed += 1
                args = [SUCCEEDED, "result", json.dumps(reservation_json(o)), self.jobs.ttl, ""]
            run_script(self.jobs._finish, keys=[job_key(job_id), done_key(job_id)], args=args, client=pipe)
            outcome = "failed" if isinstance(o, DomainError) else "succeeded"
            counted.append(("hold", outcome, max(0.0, (now - int(m.kwargs.get("enqueued_ms", now))) / 1000)))
        pipe.zrem(OPEN_KEY, *[m.kwargs["job_id"] for m in messages])
        jobstats.record(self.jobs.r, counted, pipe=pipe)
        with contextlib.suppress(*ANY_REDIS_ERROR):
            pipe.execute()
            return
        for m, o in zip(messages, outcomes, strict=True):  # the pipeline failed: finish each alone
            if isinstance(o, DomainError):
                self.jobs.fail(m.kwargs["job_id"], problem_of(o))
            else:
                self.jobs.succeed(m.kwargs["job_id"], reservation_json(o))


def _ms() -> int:
    return int(time.time() * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
