"""Request and response schemas of concerts, schedules and seat maps (web/concerts.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
)

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
    """A schedule's seats."""

    scheduleId: int
    seats: list[SeatOut]


class SeatQuery(BaseModel):
    """Seat map filter."""

    status: SeatStatus | None = None


class FairnessOut(Out):
    """A fair-start concert's published draw: recompute `entrants`' order from `seed` (see `algorithm`)."""

    concertId: int
    saleOpensAt: UtcDateTime | None
    seedCommitment: str | None
    seed: str | None
    drawnAt: UtcDateTime | None
    entrants: list[str]
    algorithm: str
