"""Catalogue routes: concerts, schedules with available counts, seat maps."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, request
from pydantic import ValidationError as PydanticValidationError
from spectree import Response as Resp

from models import concerts, draws
from models.cache import CatalogueCache
from models.errors import ValidationError
from models.seat_pages import Page, SeatMapView, SeatPages
from models.waiting_room import WaitingRoom
from web.api import described, parse_id, ready_json, respond, spec
from web.auth import identity, public
from web.gate import _same_concert, active_token_with, queue_token_header, waiting_room
from web.schemas import Problem
from web.schemas.catalogue import (
    ConcertList,
    ConcertOut,
    FairnessOut,
    ScheduleList,
    ScheduleOut,
    SeatMap,
    SeatQuery,
)

bp = Blueprint("concerts", __name__)


def seat_pages() -> SeatPages:
    """The app's rendered seat-map pages."""
    return current_app.extensions["seat_pages"]  # type: ignore[no-any-return]


def catalogue() -> CatalogueCache:
    """The app's catalogue cache."""
    return current_app.extensions["catalogue_cache"]  # type: ignore[no-any-return]


@bp.get("/concerts")
@public
@spec.validate(resp=Resp(HTTP_200=ConcertList), tags=["catalogue"])
def list_concerts() -> Response:
    """All concerts."""
    rows = concerts.list_concerts()
    return respond(
        ConcertList(concerts=[ConcertOut(concertId=c.concert_id, title=c.title, venue=c.venue) for c in rows])
    )


@bp.get("/concerts/<concert_id>/fairness")
@public
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
@public
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
@described(
    query=SeatQuery,
    resp=Resp(HTTP_200=SeatMap, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem, HTTP_404=Problem),
    tags=["catalogue"],
    security={"queueToken": []},
)
def seat_map(schedule_id: str) -> Response:
    """The seats of a schedule by number, optionally one status, from `fromNumber`, at most `limit`;
    `ETag`, and 304 on a matching `If-None-Match`."""
    req = request._get_current_object()  # type: ignore[attr-defined]  # one lookup, not one per attribute
    environ = req.environ
    view = _seat_map_view(parse_id(schedule_id, "scheduleId"), req.args if environ.get("QUERY_STRING") else None)
    ctx = g._get_current_object()  # type: ignore[attr-defined]
    token = queue_token_header()
    page = seat_map_page(seat_pages(), waiting_room(), view, token, identity(ctx))
    if page.etag in environ.get("HTTP_IF_NONE_MATCH", ""):
        return Response(status=304, headers={"ETag": page.etag})
    return ready_json(page.body, seat_map_headers(page))


def seat_map_page(pages: SeatPages, room: WaitingRoom, view: SeatMapView, token: str, user_id: int) -> Page:
    """The page of `view` for `user_id` holding the queue token `token`: 401/403 unless it is the
    user's ACTIVE token of the schedule's concert; one Redis round trip at most (token and page
    together), none when this process read both less than 0.5 s ago. The route and the WSGI
    path (web/hot_paths.py) both answer with it."""
    stamp, page = pages.recent(view)  # this process's copy, < 0.5 s old
    calls = [] if page is not None else [pages.read_call(view)]
    info, replies = active_token_with(room, token, user_id, calls, recent=True)
    _same_concert(info, concerts.concert_id_of_schedule(schedule_id=view.schedule_id))
    if page is None:
        page = pages.page(view, replies[0])
        pages.remember(view, page, stamp)
    return page


def seat_map_headers(page: Page) -> tuple[tuple[str, str], ...]:
    """A seat map's headers besides its type and length."""
    return (("ETag", page.etag), ("Cache-Control", "no-cache"))


_PLAIN_VIEWS: dict[int, SeatMapView] = {}


def plain_view(schedule_id: int) -> SeatMapView:
    """The query-less view of a schedule's map: one object per schedule (the recent-page lookup then
    compares by identity)."""
    view = _PLAIN_VIEWS.get(schedule_id)
    if view is None:
        if len(_PLAIN_VIEWS) >= 4096:
            _PLAIN_VIEWS.clear()
        view = _PLAIN_VIEWS[schedule_id] = SeatMapView(schedule_id)
    return view


def _seat_map_view(schedule_id: int, args: Any) -> SeatMapView:
    """The query of a seat map, checked by SeatQuery's rules (unknown parameters are a 400)."""
    if not args:  # the common read: SeatQuery's defaults, without pydantic's ~10 µs
        return plain_view(schedule_id)
    try:
        query = SeatQuery.model_validate(args.to_dict())
    except PydanticValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in e["loc"]) or "query", "message": e["msg"]} for e in exc.errors()]
        raise ValidationError("the query does not match the schema", errors=fields) from None
    return SeatMapView(schedule_id, query.status, query.fromNumber, query.limit)
