"""Request and response schemas of creating concerts (web/admin.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StrictStr,
)

from web.schemas import Body, Out, Price, SeatCount, UtcDateTime


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
