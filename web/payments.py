"""Payment routes: pay (a job on the seat's partition, with Idempotency-Key), read, refund (a job too)."""

from __future__ import annotations

from flask import Blueprint, Response
from spectree import Response as Resp

from models import payments, refunds
from models.errors import Forbidden
from models.queue_tokens import fingerprint
from web.api import idempotency_key_header, parse_id, respond, settings, spec
from web.auth import identity
from web.gate import own_reservation, queue_token_header, require_active
from web.jobs import MAX_WAIT, answer, create_and_enqueue, enqueue, job_route_responses, job_store, new_job_id
from web.limits import identity_job_key, job_key, limiter
from web.schemas import Problem
from web.schemas.payments import PaymentIn, PaymentOut
from workers.jobs import Job, finished_job
from workers.payments import pay
from workers.refunds import refund_payment

bp = Blueprint("payments", __name__)
PAYMENT = "PAYMENT"


def _location(result: dict[str, object]) -> str:
    return f"/api/v1/payments/{result['paymentId']}"


@bp.post("/payments")
@limiter.shared_limit(lambda: settings().rate_jobs_user, scope="jobs", key_func=job_key)
@spec.validate(
    json=PaymentIn,
    resp=job_route_responses(HTTP_201=PaymentOut),
    tags=["payments"],
    security={"queueToken": []},
)
def create(json: PaymentIn) -> Response:
    """Queue a payment on the seat's partition; the same Idempotency-Key returns the first job."""
    key = idempotency_key_header()
    if key is not None:
        earlier = _first_answer(key, json)
        if earlier is not None:
            return answer(earlier, location=_location)
    token = require_active(claimed_user_id=json.userId)
    seat_id = own_reservation(token, json.reservationId).seat_id
    job = job_store().create(job_type=PAYMENT, user_id=token.user_id, job_id=new_job_id())
    if key is not None:
        claimed = job_store().claim_idempotency_key(user_id=token.user_id, key=key, request=json.model_dump(), job=job)
        if claimed.job_id != job.job_id:
            return answer(claimed, location=_location)
    enqueue(
        job,
        pay,
        route_seat=seat_id,
        user_id=token.user_id,
        reservation_id=json.reservationId,
        idempotency_key=key,
        token_fingerprint=fingerprint(token.token),  # the event ends this token only, never a newer one
    )
    return answer(job, location=_location, fresh=True)


def _first_answer(key: str, body: PaymentIn) -> Job | None:
    """What the first request with this key was answered, for 24 h, without needing a live token.

    Its job while the record lives (1 h after it ends); after that, the payment the key made (the
    row keeps the key), as a SUCCEEDED job again. None for a new key, or one whose first request
    paid nothing (it runs afresh through the gate). The queue token header must still be sent:
    a retry is the same request, only its token may have ended (a payment ends it).
    """
    queue_token_header()
    user = identity()
    if body.userId is not None and body.userId != user:
        raise Forbidden("userId does not match the signed-in user")
    earlier = job_store().idempotent_job(user_id=user, key=key, request=body.model_dump())
    if earlier is not None:
        return earlier
    paid = payments.payment_for_key(user_id=user, idempotency_key=key, reservation_id=body.reservationId)
    if paid is None:
        return None
    return finished_job(
        job_id=paid.job_id or new_job_id(),
        job_type=PAYMENT,
        user_id=user,
        result=payments.payment_json(paid.view),
        at=paid.view.paid_at,
    )


@bp.get("/payments/<payment_id>")
@spec.validate(
    resp=Resp(HTTP_200=PaymentOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_404=Problem),
    tags=["payments"],
)
def get(payment_id: str) -> Response:
    """The caller's payment (the identity is enough: it stays readable after the queue token ends)."""
    view = payments.get_payment(payment_id=parse_id(payment_id, "paymentId"), user_id=identity())
    return respond(PaymentOut.model_validate(payments.payment_json(view)))


@bp.post("/payments/<payment_id>/refund")
@limiter.shared_limit(lambda: settings().rate_jobs_user, scope="jobs", key_func=identity_job_key)
@spec.validate(resp=job_route_responses((400, 401, 404, 409, 429), HTTP_200=PaymentOut), tags=["payments"])
def refund(payment_id: str) -> Response:
    """Refund the caller's payment through the seat's partition: points back, the seat on sale again.

    The identity is enough (no queue token: a fan who cannot go asks long after the sale); 409
    REFUND_NOT_ALLOWED when already refunded or within REFUND_CUTOFF of the show.
    """
    pid = parse_id(payment_id, "paymentId")
    seat_id = refunds.seat_of_payment(payment_id=pid, user_id=identity())
    job = create_and_enqueue(refund_payment, job_type=PAYMENT, user_id=identity(), route_seat=seat_id, payment_id=pid)
    return answer(job, location=_location, wait=MAX_WAIT, success_status=200, fresh=True)
