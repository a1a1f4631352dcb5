"""Admin routes (Authorization: Bearer $ADMIN_TOKEN): create a concert with schedules and seats."""

from __future__ import annotations

import datetime as dt
import hmac

from flask import Blueprint, Response, request
from spectree import Response as Resp

from models import concerts
from models.errors import Forbidden
from web.api import respond, settings, spec
from web.schemas import CreatedConcertOut, CreatedScheduleOut, NewConcertIn, Problem

bp = Blueprint("admin", __name__)


def require_admin() -> None:
    """Constant-time check of the bearer token; admin is off when ADMIN_TOKEN is unset."""
    expected = settings().admin_token
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("a valid admin bearer token is required")


@bp.post("/admin/concerts")
@spec.validate(
    json=NewConcertIn,
    resp=Resp(HTTP_201=CreatedConcertOut, HTTP_400=Problem, HTTP_403=Problem),
    tags=["admin"],
    security={"adminToken": []},
)
def create_concert(json: NewConcertIn) -> Response:
    """Create a concert with its schedules; seats are numbered 1..seatCount."""
    require_admin()
    concert_id, created = concerts.create_concert(
        title=json.title,
        venue=json.venue,
        schedules=[
            concerts.NewSchedule(s.startsAt.astimezone(dt.UTC).replace(tzinfo=None), s.seatCount, s.price)
            for s in json.schedules
        ],
    )
    out = CreatedConcertOut(
        concertId=concert_id,
        schedules=[
            CreatedScheduleOut(scheduleId=s.schedule_id, startsAt=s.starts_at, totalSeats=s.total_seats)
            for s in created
        ],
    )
    return respond(out, 201, {"Location": f"/api/v1/concerts/{concert_id}/schedules"})
