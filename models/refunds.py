"""Refunds: give a paid seat back: points to the wallet, the seat on sale again, an event in the outbox.

One transaction, every row by compare-and-set: payment PAID -> REFUNDED, reservation
CONFIRMED -> REFUNDED (its live seat key released), seat RESERVED -> AVAILABLE, a REFUND ledger
entry crediting the amount, and a `PaymentRefunded` outbox row (topic `payment-refunded`).
Idempotent by job id: a redelivered refund job answers with the refund it already made.
"""

from __future__ import annotations

import datetime as dt

from models import outbox
from models.concerts import AVAILABLE, RESERVED, Schedule, Seat
from models.db import db, iso, utcnow
from models.errors import ConcurrentUpdate, NotFound, RefundNotAllowed
from models.payments import PAID, REFUNDED, Payment, PaymentView, view_of
from models.points import credit_refund
from models.reservations import CONFIRMED, Reservation
from models.reservations import REFUNDED as RESERVATION_REFUNDED

PAYMENT_REFUNDED = "PaymentRefunded"
REFUND_TOPIC = "payment-refunded"


def seat_of_payment(*, payment_id: int, user_id: int) -> int:
    """The seat a user's payment bought (a refund job is routed to its partition); another user's is NotFound."""
    row = (
        Reservation.select(Reservation.seat)
        .join(Payment, on=(Payment.reservation == Reservation.id))
        .where((Payment.id == payment_id) & (Payment.user_id == user_id))
        .tuples()
        .first()
    )
    if row is None:
        raise NotFound(f"payment {payment_id} does not exist")
    return int(row[0])


def refund_payment(
    *, payment_id: int, user_id: int, job_id: str, cutoff_s: int, now: dt.datetime | None = None
) -> PaymentView:
    """Refund the user's payment; RefundNotAllowed when already refunded or within `cutoff_s` of the show."""
    now = now or utcnow()
    p = Payment.get_or_none((Payment.id == payment_id) & (Payment.user_id == user_id))
    if p is None:
        raise NotFound(f"payment {payment_id} does not exist")
    if p.refund_job_id == job_id:  # this job already did it (a redelivery)
        return view_of(p)
    if p.status == REFUNDED:
        raise RefundNotAllowed(f"payment {payment_id} was already refunded at {iso(p.refunded_at)}")
    r = Reservation.get_by_id(p.reservation_id)
    starts_at = Schedule.select(Schedule.starts_at).where(Schedule.id == r.schedule_id).scalar()
    closes = starts_at - dt.timedelta(seconds=cutoff_s)
    if now >= closes:
        raise RefundNotAllowed(f"refunds closed at {iso(closes)}, {cutoff_s} s before the show at {iso(starts_at)}")
    with db.atomic():
        _compare_and_set_all(p, r, job_id=job_id, now=now)
        credit_refund(user_id=user_id, amount=p.amount, reference=f"refund:payment:{payment_id}")
        outbox.add_event(
            aggregate_type="payment",
            aggregate_id=payment_id,
            event_type=PAYMENT_REFUNDED,
            topic=REFUND_TOPIC,
            key=str(r.id),
            payload={
                "paymentId": payment_id,
                "reservationId": r.id,
                "userId": user_id,
                "scheduleId": r.schedule_id,
                "seatId": r.seat_id,
                "amount": p.amount,
                "refundedAt": iso(now),
            },
        )
    return view_of(Payment.get_by_id(payment_id))


def _compare_and_set_all(p: Payment, r: Reservation, *, job_id: str, now: dt.datetime) -> None:
    """Payment, reservation and seat change state together or not at all (zero rows = a concurrent writer)."""
    paid = (
        Payment.update(status=REFUNDED, refunded_at=now, refund_job_id=job_id)
        .where((Payment.id == p.id) & (Payment.status == PAID))
        .execute()
    )
    if paid != 1:
        raise RefundNotAllowed(f"payment {p.id} was refunded concurrently")
    released = (
        Reservation.update(
            status=RESERVATION_REFUNDED, live_seat_id=None, version=Reservation.version + 1, updated_at=now
        )
        .where((Reservation.id == r.id) & (Reservation.status == CONFIRMED) & (Reservation.version == r.version))
        .execute()
    )
    seat = Seat.get_by_id(r.seat_id)
    freed = (
        Seat.update(status=AVAILABLE, version=Seat.version + 1)
        .where((Seat.id == r.seat_id) & (Seat.status == RESERVED) & (Seat.version == seat.version))
        .execute()
    )
    if released != 1 or freed != 1:
        raise ConcurrentUpdate(f"reservation {r.id} changed concurrently", retry_after=1)
