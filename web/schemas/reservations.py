"""Request and response schemas of reservations (web/reservations.py)."""

from __future__ import annotations

from typing import Literal

from web.schemas import Body, Out, RequestId


class ReservationIn(Body):
    """Hold a seat of a schedule (the user is the token's user)."""

    scheduleId: RequestId
    seatId: RequestId
    userId: RequestId | None = None


class ReservationOut(Out):
    """A reservation."""

    reservationId: int
    userId: int
    scheduleId: int
    seatId: int
    seatNumber: int
    price: int
    status: Literal["HELD", "CONFIRMED", "EXPIRED", "CANCELLED"]
    expiresAt: str
    createdAt: str
