"""Request and response schemas of concerts, schedules and seat maps (web/concerts.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.db import MAX_ID
from web.schemas import Out, UtcDateTime


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
    """A schedule's seats (one page of them when the query has a `limit`)."""

    scheduleId: int
    seats: list[SeatOut]
    nextFromNumber: int | None = Field(None, description="the next page's fromNumber; null on the last page")


class SeatQuery(BaseModel):
    """Seat map filter and page: one status or all; seats numbered from fromNumber, at most limit."""

    model_config = ConfigDict(extra="forbid")

    status: SeatStatus | None = None
    fromNumber: int = Field(1, ge=1, le=MAX_ID)
    limit: int | None = Field(None, ge=1, le=10_000)


class FairnessOut(Out):
    """A fair-start concert's published draw: recompute `entrants`' order from `seed` (see `algorithm`)."""

    concertId: int
    saleOpensAt: UtcDateTime | None
    seedCommitment: str | None
    seed: str | None
    drawnAt: UtcDateTime | None
    entrants: list[str]
    algorithm: str
