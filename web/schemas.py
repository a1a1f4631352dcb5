"""Request and response schemas (pydantic); spectree turns them into the OpenAPI document."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
)

from models.db import iso

MAX_INT64 = 2**63 - 1


def _iso(value: dt.datetime) -> str:
    return iso(value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value) or ""


UtcDateTime = Annotated[dt.datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


def _whole_number(value: Any) -> Any:
    """JSON Schema's `integer` admits 1.0: a float with no fractional part is that integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integer fields of request bodies: JSON integers and whole floats (1.0); no strings, no booleans.
# The bounds come before the validator so that they stay `minimum`/`maximum` in the JSON Schema.
RequestId = Annotated[StrictInt, Field(ge=1, le=MAX_INT64), BeforeValidator(_whole_number)]
Amount = Annotated[StrictInt, Field(ge=1, le=MAX_INT64), BeforeValidator(_whole_number)]
SeatCount = Annotated[StrictInt, Field(ge=1, le=1000), BeforeValidator(_whole_number)]
Price = Annotated[StrictInt, Field(ge=0, le=1_000_000_000), BeforeValidator(_whole_number)]


class Body(BaseModel):
    """Base of request bodies: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(extra="forbid")


# --- problem+json -------------------------------------------------------------------------
class FieldError(Out):
    """One invalid field of a request."""

    field: str
    message: str


class Problem(Out):
    """RFC 9457 problem details with a machine-readable code."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[FieldError] | None = None
    jobId: str | None = None


# --- catalogue -----------------------------------------------------------------------------
class ConcertOut(Out):
    """A concert."""

    concertId: int
    title: str
    venue: str


class ConcertList(Out):
    """All concerts."""

    concerts: list[ConcertOut]


class ScheduleOut(Out):
    """A schedule with seat counts."""

    scheduleId: int
    startsAt: UtcDateTime
    totalSeats: int
    availableSeats: int


class ScheduleList(Out):
    """A concert's schedules."""

    concertId: int
    schedules: list[ScheduleOut]


SeatStatus = Literal["AVAILABLE", "HELD", "RESERVED"]


class SeatOut(Out):
    """One seat."""

    seatId: int
    number: int
    price: int
    status: SeatStatus


class SeatMap(Out):
    """A schedule's seats."""

    scheduleId: int
    seats: list[SeatOut]


class SeatQuery(BaseModel):
    """Seat map filter."""

    status: SeatStatus | None = None


# --- points --------------------------------------------------------------------------------
class ChargeIn(Body):
    """A points charge: a positive whole number (limits in MAX_CHARGE / MAX_BALANCE)."""

    amount: Amount


class BalanceOut(Out):
    """A user's balance."""

    userId: int
    balance: int


class LedgerEntryOut(Out):
    """One ledger entry; USE amounts are negative."""

    type: Literal["CHARGE", "USE", "REFUND"]
    amount: int
    balanceAfter: int
    createdAt: UtcDateTime
    reference: str | None


class HistoryOut(Out):
    """A user's ledger, newest first."""

    userId: int
    entries: list[LedgerEntryOut]


# --- admin ---------------------------------------------------------------------------------
def _aware_utc_text(value: Any) -> Any:
    """startsAt must be ISO 8601 text (pydantic would read numbers as Unix times) that fits in UTC."""
    if not isinstance(value, str):
        raise ValueError("startsAt must be an ISO 8601 date-time string with an offset")
    return value


def _representable_in_utc(value: dt.datetime) -> dt.datetime:
    try:
        value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("startsAt is out of range") from None
    return value


# At least one character that Python's str.strip() keeps. The class lists the characters
# themselves instead of `\s`: `\s` means different sets in ECMA regexes (what OpenAPI clients and
# schemathesis use: no U+0085, but U+FEFF), pydantic's Rust regexes (U+0085) and Python. Every
# str.isspace() character, plus U+FEFF (ECMA counts it as space), is "blank" for all three.
_BLANK = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = f"[^{_BLANK}]"


class NewScheduleIn(Body):
    """One schedule of a new concert."""

    startsAt: Annotated[AwareDatetime, BeforeValidator(_aware_utc_text), AfterValidator(_representable_in_utc)]
    seatCount: SeatCount
    price: Price


class NewConcertIn(Body):
    """A concert to create with its schedules; `saleOpensAt` gives it a fair start (a drawn pre-queue)."""

    title: Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=NOT_BLANK)]
    venue: Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=NOT_BLANK)]
    schedules: Annotated[list[NewScheduleIn], Field(min_length=1, max_length=100)]
    saleOpensAt: (
        Annotated[AwareDatetime, BeforeValidator(_aware_utc_text), AfterValidator(_representable_in_utc)] | None
    ) = None


class CreatedScheduleOut(Out):
    """A created schedule."""

    scheduleId: int
    startsAt: UtcDateTime
    totalSeats: int


class CreatedConcertOut(Out):
    """A created concert; a fair-start concert shows its opening and the seed's commitment."""

    concertId: int
    schedules: list[CreatedScheduleOut]
    saleOpensAt: UtcDateTime | None = None
    seedCommitment: str | None = None


class FairnessOut(Out):
    """A fair-start concert's published draw: recompute `entrants`' order from `seed` (see `algorithm`)."""

    concertId: int
    saleOpensAt: UtcDateTime | None
    seedCommitment: str | None
    seed: str | None
    drawnAt: UtcDateTime | None
    entrants: list[str]
    algorithm: str


# --- operations ----------------------------------------------------------------------------
class HealthOut(Out):
    """Liveness."""

    status: Literal["ok"]


class ReadyOut(Out):
    """Readiness of each dependency: 'ok' or the error."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


# --- waiting room --------------------------------------------------------------------------
class TokenIn(Body):
    """Join a concert's queue."""

    userId: RequestId
    concertId: RequestId


class TokenOut(Out):
    """A queue token's state; rank is 1-based among WAITING tokens, 0 when ACTIVE, null when PREQUEUED.

    `entrant` (fair-start concerts only) is sha256 of the user id: the fan's line in the published draw."""

    token: str
    userId: int
    concertId: int
    status: Literal["PREQUEUED", "WAITING", "ACTIVE"]
    rank: int | None
    estimatedWaitSeconds: int
    expiresAt: UtcDateTime
    soldOut: bool
    pollAfterMs: int = Field(description="poll again no sooner; 0 when ACTIVE; an early poll is 429")
    notice: str | None = None
    entrant: str | None = None


# --- reservations and jobs -----------------------------------------------------------------
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


class JobAccepted(Out):
    """A job was queued; poll statusUrl."""

    jobId: str
    status: Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"]
    statusUrl: str


class JobOut(Out):
    """A job record; `error` is a problem object when FAILED."""

    jobId: str
    type: str
    status: Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    createdAt: UtcDateTime
    finishedAt: UtcDateTime | None


# --- payments ------------------------------------------------------------------------------
class PaymentIn(Body):
    """Pay a held reservation with points."""

    reservationId: RequestId
    userId: RequestId | None = None


class PaymentOut(Out):
    """A payment."""

    paymentId: int
    reservationId: int
    userId: int
    amount: int
    balance: int
    paidAt: str
