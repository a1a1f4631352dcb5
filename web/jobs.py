"""Job routes and the shared way a job becomes an HTTP answer (202, 201 with the resource, or its problem)."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from spectree import Response as Resp

from models.errors import NotFound, Unavailable, problem, problem_of
from models.redis_support import ANY_REDIS_ERROR, REDIS_ERRORS
from web.api import respond, services, settings, spec
from web.auth import identity
from web.errors import problem_response
from web.schemas import Problem
from web.schemas.jobs import JobAccepted, JobOut
from workers.broker import Actor, enqueue_job, send
from workers.jobs import SUCCEEDED, TERMINAL, Job, JobStore

bp = Blueprint("jobs", __name__)
MAX_WAIT = 10.0
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])")


JOB_PROBLEMS = (400, 401, 403, 404, 409, 422, 429)


def job_route_responses(problems: tuple[int, ...] = JOB_PROBLEMS, **success: Any) -> Resp:
    """The documented responses of a route that queues a job: its success bodies, 202, and problems."""
    return Resp(HTTP_202=JobAccepted, **success, **{f"HTTP_{code}": Problem for code in problems})


def job_store() -> JobStore:
    """The job store of this app."""
    return JobStore(services().redis)


def new_job_id() -> str:
    """A job id: 128 random bits from `secrets` (32 hex digits); it is the capability to read the job."""
    return secrets.token_hex(16)


def prefer_wait() -> float:
    """Seconds asked for by `Prefer: wait=N` (capped at 10; absent or malformed = 0)."""
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(float(match.group(1)), MAX_WAIT) if match else 0.0


def enqueue(job: Job, actor: Actor, *, route_seat: int, **kwargs: Any) -> None:
    """Send a recorded job's message to the seat's partition (the job record is written first)."""
    send(
        services().broker,
        actor,
        route_seat=route_seat,
        partitions=settings().partitions,
        job_id=job.job_id,
        enqueued_ms=int(time.time() * 1000),
        **kwargs,
    )


def create_and_enqueue(
    actor: Actor, *, job_type: str, user_id: int, route_seat: int, job_id: str | None = None, **kwargs: Any
) -> Job:
    """Record a new job and send its message in one Redis round trip, one script (the record goes first).

    If the message cannot be sent (Redis unavailable: the caller gets a 503), a record that did
    get written is failed at once, so it never waits in `jobs:open` for the sweeper. On one Redis
    both fail together; on a Redis Cluster the record's node may answer while the queue's does not.
    """
    store, job_id = job_store(), job_id or new_job_id()
    try:
        job = enqueue_job(
            services().broker,
            store,
            actor,
            partitions=settings().partitions,
            job_type=job_type,
            user_id=user_id,
            route_seat=route_seat,
            job_id=job_id,
            **kwargs,
        )
    except REDIS_ERRORS:
        with contextlib.suppress(*ANY_REDIS_ERROR):
            store.fail(job_id, problem_of(Unavailable("the job could not be queued; send the request again")))
        raise
    return job


def answer(
    job: Job,
    *,
    location: Callable[[dict[str, Any]], str],
    wait: float | None = None,
    success_status: int = 201,
    fresh: bool = False,
) -> Response:
    """Answer a job request: wait as asked (`Prefer: wait=N` unless `wait` is given), then job_answer.

    `fresh`: this request created the job and nobody else knows its id yet (JobStore.wait).
    """
    seconds = prefer_wait() if wait is None else wait
    latest = None
    if seconds and _WAITS.take(settings().wait_slots):
        try:
            latest = job_store().wait(job.job_id, seconds, fresh=fresh)
        finally:
            _WAITS.give()
    return job_answer(latest or job, location=location, success_status=success_status)


def wait_slot(seconds: float) -> bool:
    """Take one of this process's `Prefer: wait` slots for a wait of `seconds` (hand it back with
    `give_wait_slot`); False when `seconds` is 0 or every slot is taken."""
    return bool(seconds) and _WAITS.take(settings().wait_slots)


def give_wait_slot() -> None:
    """Hand back a slot taken by `wait_slot`."""
    _WAITS.give()


class _WaitSlots:
    """How many of this process's threads are blocked in a `Prefer: wait` (at most PREFER_WAIT_SLOTS).

    A waiting request holds a gunicorn thread until its job ends. In a flash sale the first
    admitted fans hold and pay with `Prefer: wait=5` while the worker is busy: the waits took
    every thread of both processes and the joins of arriving fans queued for seconds behind them
    (access log: joins done by the app fell from ~200/s to 9-67/s while 73 holds/s waited).
    Past the slots a request is answered at once, 202 with the job's Location: a preference the
    server may decline (RFC 7240), and the client polls `GET /jobs/{id}` as for any 202.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.busy = 0

    def take(self, slots: int) -> bool:
        with self._lock:
            if self.busy >= slots:
                return False
            self.busy += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.busy -= 1


_WAITS = _WaitSlots()


def _ts(ms: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if ms else None


def job_problem(job: Job) -> dict[str, Any] | None:
    """A failed job's stored problem (a record written before problems carried type and status
    is completed from the code table)."""
    if not job.error:
        return None
    stored = {k: v for k, v in job.error.items() if k not in ("type", "status")}
    return problem(stored.pop("code", "UNAVAILABLE"), **stored)


def job_answer(job: Job, *, location: Callable[[dict[str, Any]], str], success_status: int = 201) -> Response:
    """202 while running; once terminal, the resource (201/200 + Location) or the job's problem."""
    if job.status == SUCCEEDED:
        response = jsonify(job.result)
        response.status_code = success_status
        response.headers["Location"] = location(job.result)
        return response
    if job.status in TERMINAL:
        return problem_response(job_problem(job) or problem("UNAVAILABLE"), jobId=job.job_id)
    url = f"/api/v1/jobs/{job.job_id}"
    accepted = JobAccepted.model_validate({"jobId": job.job_id, "status": job.status, "statusUrl": url})
    return respond(accepted, 202, {"Location": url})


@bp.get("/jobs/<job_id>")
@spec.validate(resp=Resp(HTTP_200=JobOut, HTTP_401=Problem, HTTP_404=Problem), tags=["jobs"])
def get_job(job_id: str) -> Response:
    """The caller's job: status, result or problem (another user's job is 404, as if it did not exist)."""
    job = job_store().get(job_id)
    if job is None or job.user_id != identity():
        raise NotFound(f"job {job_id[:64]} does not exist or has expired")
    out = JobOut.model_validate(
        {
            "jobId": job.job_id,
            "type": job.type,
            "status": job.status,
            "result": job.result,
            "error": job_problem(job),
            "createdAt": _ts(job.created_ms),
            "finishedAt": _ts(job.finished_ms),
        }
    )
    return respond(out)
