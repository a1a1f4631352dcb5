"""Request and response schemas of payments (web/payments.py)."""

from __future__ import annotations

from typing import Literal

from web.schemas import Body, Out, RequestId


class PaymentIn(Body):
    """Pay a held reservation with points."""

    reservationId: RequestId
    userId: RequestId | None = None


class PaymentOut(Out):
    """A payment; `status` REFUNDED with `refundedAt` once refunded (POST /payments/{id}/refund)."""

    paymentId: int
    reservationId: int
    userId: int
    amount: int
    balance: int
    paidAt: str
    status: Literal["PAID", "REFUNDED"] = "PAID"
    refundedAt: str | None = None
