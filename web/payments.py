"""Payment routes: pay (a job on the seat's partition, with Idempotency-Key), read."""

from __future__ import annotations

import hashlib
import json as jsonlib
import re

from flask import Blueprint, Response, request
from spectree import Response as Resp

from models import concerts, payments, reservations
from models.errors import Forbidden, IdempotencyKeyReused, ValidationError
from web.api import parse_id, respond, services, settings, spec
from web.gate import require_active
from web.jobs import answer, enqueue, job_store, new_job_id
from web.limits import job_key, limiter
from web.schemas import JobAccepted, PaymentIn, PaymentOut, Problem
from workers.jobs import Job

bp = Blueprint("payments", __name__)
PAYMENT = "PAYMENT"
IDEMPOTENCY_TTL = 86_400


def _location(result: dict[str, object]) -> str:
    return f"/api/v1/payments/{result['paymentId']}"


# what /openapi.json declares for the header: 1-128 printable ASCII characters, no space at either end
IDEMPOTENCY_KEY = re.compile(r"[!-~](?:[ -~]{0,126}[!-~])?")


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationError(
            "Idempotency-Key must be 1-128 printable ASCII characters",
            errors=[{"field": "Idempotency-Key", "message": "invalid key"}],
        )
    return key


def _claim(user_id: int, key: str, body: PaymentIn, job: Job) -> Job:
    """Bind (user, key) to this job for 24 h; if taken, return the first job (422 if the body differs)."""
    digest = hashlib.sha256(jsonlib.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()
    rkey = f"idem:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"
    r = services().redis
    if r.set(rkey, jsonlib.dumps({"jobId": job.job_id, "body": digest}), nx=True, ex=IDEMPOTENCY_TTL):
        return job
    first = jsonlib.loads(r.get(rkey) or "{}")  # type: ignore[arg-type]
    job_store().discard(job.job_id)
    if first.get("body") != digest:
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request body")
    earlier = job_store().get(first.get("jobId", ""))
    if earlier is None:
        raise IdempotencyKeyReused("this Idempotency-Key was used for a request whose job has expired")
    return earlier


@bp.post("/payments")
@limiter.shared_limit(lambda: settings().rate_jobs_user, scope="jobs", key_func=job_key)
@spec.validate(
    json=PaymentIn,
    resp=Resp(
        HTTP_201=PaymentOut,
        HTTP_202=JobAccepted,
        HTTP_400=Problem,
        HTTP_401=Problem,
        HTTP_403=Problem,
        HTTP_404=Problem,
        HTTP_409=Problem,
        HTTP_422=Problem,
        HTTP_429=Problem,
    ),
    tags=["payments"],
    security={"queueToken": []},
)
def create(json: PaymentIn) -> Response:
    """Queue a payment on the seat's partition; the same Idempotency-Key returns the first job."""
    token = require_active(claimed_user_id=json.userId)
    # another user's reservation is 404, exactly like one that does not exist (existence is not revealed)
    held = reservations.get_reservation(reservation_id=json.reservationId, user_id=token.user_id)
    if concerts.concert_id_of_schedule(schedule_id=held.schedule_id) != token.concert_id:
        raise Forbidden("the queue token is for another concert")
    seat_id = held.seat_id
    key = _idempotency_key()
    job = job_store().create(job_type=PAYMENT, user_id=token.user_id, job_id=new_job_id())
    if key is not None:
        claimed = _claim(token.user_id, key, json, job)
        if claimed.job_id != job.job_id:
            return answer(claimed, location=_location)
    enqueue(
        job,
        actor_name="pay",
        route_seat=seat_id,
        user_id=token.user_id,
        reservation_id=json.reservationId,
        idempotency_key=key,
    )
    return answer(job, location=_location, fresh=True)


@bp.get("/payments/<payment_id>")
@spec.validate(
    resp=Resp(HTTP_200=PaymentOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem, HTTP_404=Problem),
    tags=["payments"],
    security={"queueToken": []},
)
def get(payment_id: str) -> Response:
    """The caller's payment."""
    token = require_active()
    view = payments.get_payment(payment_id=parse_id(payment_id, "paymentId"), user_id=token.user_id)
    return respond(PaymentOut.model_validate(payments.payment_json(view)))
