"""Payments: pay for a held reservation with points, in one transaction with its outbox event."""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass

import peewee as pw

from models import outbox, points
from models.concerts import HELD as SEAT_HELD
from models.concerts import RESERVED, Seat, concert_id_of_schedule
from models.db import BaseModel, UtcDateTimeField, db, iso, utcnow
from models.errors import (
    AlreadyPaid,
    ConcurrentUpdate,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    ReservationExpired,
    ReservationNotHeld,
)
from models.reservations import CONFIRMED, HELD, Reservation

PAY_ATTEMPTS = 5
PAID, REFUNDED = "PAID", "REFUNDED"


class Payment(BaseModel):
    """A completed payment; UNIQUE(reservation_id) makes a second charge of one reservation impossible."""

    id = pw.BigAutoField()
    reservation = pw.ForeignKeyField(Reservation, column_name="reservation_id", unique=True, backref="payments")
    reservation_id: int
    user_id = pw.BigIntegerField(index=True)
    amount = pw.BigIntegerField()
    idempotency_key = pw.CharField(max_length=128, null=True)
    job_id = pw.CharField(max_length=64, null=True, unique=True)
    created_at = UtcDateTimeField(default=utcnow)
    status = pw.CharField(max_length=16, default=PAID)  # refunds: models/refunds.py (migration 007)
    refunded_at = UtcDateTimeField(null=True)
    refund_job_id = pw.CharField(max_length=64, null=True, unique=True)

    class Meta:
        table_name = "payments"
        indexes = ((("user_id", "idempotency_key"), True),)


@dataclass(frozen=True)
class PaymentView:
    """A payment as the API shows it."""

    payment_id: int
    reservation_id: int
    user_id: int
    amount: int
    balance: int
    paid_at: dt.datetime
    status: str = PAID
    refunded_at: dt.datetime | None = None


def payment_json(v: PaymentView) -> dict[str, object]:
    """The public JSON form of a payment (job result and GET body)."""
    return {
        "paymentId": v.payment_id,
        "reservationId": v.reservation_id,
        "userId": v.user_id,
        "amount": v.amount,
        "balance": v.balance,
        "paidAt": iso(v.paid_at),
        "status": v.status,
        "refundedAt": iso(v.refunded_at),
    }


def view_of(p: Payment) -> PaymentView:
    """A payment row as the API shows it (with the user's balance now)."""
    balance = points.get_balance(user_id=p.user_id).balance
    return PaymentView(p.id, p.reservation_id, p.user_id, p.amount, balance, p.created_at, p.status, p.refunded_at)


def get_payment(*, payment_id: int, user_id: int) -> PaymentView:
    """The user's own payment; another user's is NotFound."""
    p = Payment.get_or_none((Payment.id == payment_id) & (Payment.user_id == user_id))
    if p is None:
        raise NotFound(f"payment {payment_id} does not exist")
    return view_of(p)


@dataclass(frozen=True)
class KeyedPayment:
    """The payment an Idempotency-Key made, as it was first answered, and the job that made it."""

    job_id: str | None
    view: PaymentView


def payment_for_key(*, user_id: int, idempotency_key: str, reservation_id: int) -> KeyedPayment | None:
    """The payment this user's Idempotency-Key made (the row keeps the key), None if it made none.

    The view is the first answer: status PAID and the balance right after the debit (its USE ledger
    entry). Raises IdempotencyKeyReused when the key paid another reservation.
    """
    p = Payment.get_or_none((Payment.user_id == user_id) & (Payment.idempotency_key == idempotency_key))
    if p is None:
        return None
    if p.reservation_id != reservation_id:
        raise IdempotencyKeyReused("this Idempotency-Key was used for another payment")
    balance = (
        points.LedgerEntry.select(points.LedgerEntry.balance_after)
        .where(
            (points.LedgerEntry.user_id == user_id)
            & (points.LedgerEntry.type == points.USE)
            & (points.LedgerEntry.reference == f"reservation:{p.reservation_id}")
        )
        .scalar()
    )
    if balance is None:  # a payment written without its ledger entry (never by pay()): the balance now
        balance = points.get_balance(user_id=user_id).balance
    return KeyedPayment(p.job_id, PaymentView(p.id, p.reservation_id, user_id, p.amount, balance, p.created_at))


def pay(
    *,
    reservation_id: int,
    user_id: int,
    job_id: str,
    idempotency_key: str | None = None,
    token_fingerprint: str | None = None,
) -> PaymentView:
    """Pay a HELD, unexpired reservation of the user with points.

    One transaction: wallet debit (compare-and-set) + USE ledger row, payment row (UNIQUE per
    reservation), reservation CONFIRMED, seat RESERVED, PaymentCompleted outbox row. Idempotent
    by job id and by (user, Idempotency-Key); a second payment of a paid reservation is
    AlreadyPaid and charges nothing.
    """
    done = _earlier(job_id=job_id, user_id=user_id, idempotency_key=idempotency_key, reservation_id=reservation_id)
    if done is not None:
        return done
    for attempt in range(PAY_ATTEMPTS):
        try:
            return _pay_once(
                reservation_id=reservation_id,
                user_id=user_id,
                job_id=job_id,
                idempotency_key=idempotency_key,
                token_fingerprint=token_fingerprint,
            )
        except ConcurrentUpdate:
            if attempt == PAY_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.002, 0.01) * (attempt + 1))
        except pw.IntegrityError:
            done = _earlier(
                job_id=job_id, user_id=user_id, idempotency_key=idempotency_key, reservation_id=reservation_id
            )
            if done is not None:
                return done
            raise AlreadyPaid(f"reservation {reservation_id} is already paid") from None
    raise ConcurrentUpdate("the payment kept conflicting; retry", retry_after=1)  # pragma: no cover


def _earlier(*, job_id: str, user_id: int, idempotency_key: str | None, reservation_id: int) -> PaymentView | None:
    """The payment this job or this Idempotency-Key already made, if any."""
    p = Payment.get_or_none(Payment.job_id == job_id)
    if p is None and idempotency_key:
        p = Payment.get_or_none((Payment.user_id == user_id) & (Payment.idempotency_key == idempotency_key))
        if p is not None and p.reservation_id != reservation_id:
            raise IdempotencyKeyReused("this Idempotency-Key was used for another payment")
    return view_of(p) if p is not None else None


def _pay_once(
    *, reservation_id: int, user_id: int, job_id: str, idempotency_key: str | None, token_fingerprint: str | None
) -> PaymentView:
    now = utcnow()
    with db.atomic():
        r = _payable(reservation_id=reservation_id, user_id=user_id, now=now)
        balance = points.debit(user_id=user_id, amount=r.price, reference=f"reservation:{reservation_id}")
        payment = Payment.create(
            reservation=reservation_id,
            user_id=user_id,
            amount=r.price,
            idempotency_key=idempotency_key,
            job_id=job_id,
            created_at=now,
        )
        confirmed = (
            Reservation.update(status=CONFIRMED, hold_slot=None, version=Reservation.version + 1, updated_at=now)
            .where(
                (Reservation.id == reservation_id) & (Reservation.status == HELD) & (Reservation.version == r.version)
            )
            .execute()
        )
        seat = Seat.get_by_id(r.seat_id)
        sold = (
            Seat.update(status=RESERVED, version=Seat.version + 1)
            .where((Seat.id == r.seat_id) & (Seat.status == SEAT_HELD) & (Seat.version == seat.version))
            .execute()
        )
        if confirmed != 1 or sold != 1:
            raise ConcurrentUpdate(f"reservation {reservation_id} changed concurrently", retry_after=1)
        _payment_completed(payment, r, now, token_fingerprint)
    return PaymentView(payment.id, reservation_id, user_id, r.price, balance, now)


def _payable(*, reservation_id: int, user_id: int, now: dt.datetime) -> Reservation:
    """The user's HELD, unexpired reservation, or the domain error that says why it cannot be paid."""
    r = Reservation.get_or_none(Reservation.id == reservation_id)
    if r is None:
        raise NotFound(f"reservation {reservation_id} does not exist")
    if r.user_id != user_id:
        raise Forbidden("the reservation belongs to another user")
    if r.status == CONFIRMED:
        raise AlreadyPaid(f"reservation {reservation_id} is already paid")
    if r.status != HELD:
        raise ReservationNotHeld(f"reservation {reservation_id} is {r.status.lower()}")
    if r.expires_at <= now:
        raise ReservationExpired(f"the hold on reservation {reservation_id} expired at {iso(r.expires_at)}")
    return r


def _payment_completed(payment: Payment, r: Reservation, now: dt.datetime, token_fingerprint: str | None) -> None:
    """The PaymentCompleted outbox row, in the payment's transaction (the relay publishes it after commit).

    `tokenFingerprint` names the queue token that paid (a hash, never the token): the consumer ends
    that token only."""
    concert_id = concert_id_of_schedule(schedule_id=r.schedule_id)  # remembered per process: schedules never move
    outbox.add_event(
        aggregate_type="payment",
        aggregate_id=payment.id,
        event_type=outbox.PAYMENT_COMPLETED,
        topic=outbox.PAYMENT_TOPIC,
        key=str(r.id),
        payload={
            "paymentId": payment.id,
            "reservationId": r.id,
            "userId": r.user_id,
            "concertId": concert_id,
            "scheduleId": r.schedule_id,
            "seatId": r.seat_id,
            "amount": r.price,
            "paidAt": iso(now),
            **({"tokenFingerprint": token_fingerprint} if token_fingerprint else {}),
        },
    )
