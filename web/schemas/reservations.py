"""Request and response schemas of reservations (web/reservations.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.db import MAX_ID
from web.schemas import Body, Out, RequestId


class ReservationIn(Body):
    """Hold a seat of a schedule (the user is the token's user)."""

    scheduleId: RequestId
    seatId: RequestId
    userId: RequestId | None = None


class ReservationOut(Out):
    """A reservation; `extensionsLeft` is how many more times a HELD one may be extended (0 otherwise)."""

    reservationId: int
    userId: int
    scheduleId: int
    seatId: int
    seatNumber: int
    price: int
    status: Literal["HELD", "CONFIRMED", "EXPIRED", "CANCELLED", "REFUNDED"]
    expiresAt: str
    createdAt: str
    extensionsLeft: int = 0


ReservationStatus = Literal["HELD", "CONFIRMED", "EXPIRED", "CANCELLED", "REFUNDED"]


class MyReservationsQuery(BaseModel):
    """Filter and page the caller's reservations (newest first); unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    status: ReservationStatus | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50
    before: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None


class ReservationList(Out):
    """The caller's reservations, newest first."""

    reservations: list[ReservationOut]
