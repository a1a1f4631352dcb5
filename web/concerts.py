"""Catalogue routes: concerts, schedules with available counts, seat maps."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from spectree import Response as Resp

from models import concerts, draws
from models.cache import CatalogueCache
from web.api import parse_id, respond, spec
from web.gate import queue_gate
from web.schemas import Problem
from web.schemas.catalogue import (
    ConcertList,
    ConcertOut,
    FairnessOut,
    ScheduleList,
    ScheduleOut,
    SeatMap,
    SeatOut,
    SeatQuery,
)

bp = Blueprint("concerts", __name__)


def catalogue() -> CatalogueCache:
    """The app's catalogue cache."""
    return current_app.extensions["catalogue_cache"]  # type: ignore[no-any-return]


@bp.get("/concerts")
@spec.validate(resp=Resp(HTTP_200=ConcertList), tags=["catalogue"])
def list_concerts() -> Response:
    """All concerts."""
    rows = concerts.list_concerts()
    return respond(
        ConcertList(concerts=[ConcertOut(concertId=c.concert_id, title=c.title, venue=c.venue) for c in rows])
    )


@bp.get("/concerts/<concert_id>/fairness")
@spec.validate(resp=Resp(HTTP_200=FairnessOut, HTTP_400=Problem, HTTP_404=Problem), tags=["catalogue"])
def fairness(concert_id: str) -> Response:
    """A fair-start concert's draw: the seed's commitment, and after the draw the seed and the entrants in order."""
    d = draws.published(concert_id=parse_id(concert_id, "concertId"))
    out = FairnessOut(
        concertId=d.concert_id,
        saleOpensAt=d.sale_opens_at,
        seedCommitment=d.seed_commitment,
        seed=d.seed,
        drawnAt=d.drawn_at,
        entrants=d.entrants,
        algorithm=d.algorithm,
    )
    return respond(out)


@bp.get("/concerts/<concert_id>/schedules")
@spec.validate(resp=Resp(HTTP_200=ScheduleList, HTTP_400=Problem, HTTP_404=Problem), tags=["catalogue"])
def list_schedules(concert_id: str) -> Response:
    """A concert's schedules with total and available seats."""
    cid = parse_id(concert_id, "concertId")
    rows = catalogue().schedules(concert_id=cid)
    items = [
        ScheduleOut(
            scheduleId=s.schedule_id, startsAt=s.starts_at, totalSeats=s.total_seats, availableSeats=s.available_seats
        )
        for s in rows
    ]
    return respond(ScheduleList(concertId=cid, schedules=items))


@bp.get("/schedules/<schedule_id>/seats")
@queue_gate
@spec.validate(
    query=SeatQuery,
    resp=Resp(HTTP_200=SeatMap, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem, HTTP_404=Problem),
    tags=["catalogue"],
    security={"queueToken": []},
)
def seat_map(schedule_id: str, query: SeatQuery) -> Response:
    """The seats of a schedule, optionally filtered by status."""
    sid = parse_id(schedule_id, "scheduleId")
    rows = catalogue().seat_map(schedule_id=sid, status=query.status)
    seats = [SeatOut(seatId=s.seat_id, number=s.number, price=s.price, status=s.status) for s in rows]  # type: ignore[arg-type]
    return respond(SeatMap(scheduleId=sid, seats=seats))
