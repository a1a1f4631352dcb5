"""Request and response schemas of reservations (web/reservations.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema

from models.db import MAX_ID
from web.schemas import Body, Out, RequestId, SeatCount

GROUP_MAX = 100  # the schema's bound; the route refuses more than MAX_HOLDS_PER_USER


class ReservationIn(Body):
    """Hold seats of a schedule (the user is the token's user): exactly one of `seatId` (one seat),
    `seatIds` (these seats, all or nothing) or `quantity` (the best available; `together` asks for
    consecutive numbers)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["seatId"]}, {"required": ["seatIds"]}, {"required": ["quantity"]}]},
    )

    scheduleId: RequestId
    seatId: RequestId | SkipJsonSchema[None] = None
    seatIds: (
        Annotated[list[RequestId], Field(min_length=1, max_length=GROUP_MAX, json_schema_extra={"uniqueItems": True})]
        | SkipJsonSchema[None]
    ) = None
    quantity: SeatCount | SkipJsonSchema[None] = None
    together: StrictBool = False
    userId: RequestId | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ReservationIn:
        ways = ("seatId", "seatIds", "quantity")
        if any(f in self.model_fields_set and getattr(self, f) is None for f in ways):
            raise ValueError("seatId, seatIds and quantity are never null: leave out the ones not used")
        chosen = [f for f in ways if getattr(self, f) is not None]
        if len(chosen) != 1:
            raise ValueError("send exactly one of seatId, seatIds or quantity")
        if self.seatIds is not None and len(set(self.seatIds)) != len(self.seatIds):
            raise ValueError("seatIds must be distinct")
        return self


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


class ReservationGroupOut(Out):
    """The reservations of a group hold (`seatIds` or `quantity`), in the order asked (best available: by number)."""

    reservations: list[ReservationOut]


class ReservationCreated(RootModel[ReservationOut | ReservationGroupOut]):
    """A hold's outcome: the reservation (`seatId`) or the group's reservations (`seatIds`, `quantity`)."""


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
