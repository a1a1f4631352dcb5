"""Admin routes (Authorization: Bearer $ADMIN_TOKEN): create a concert with schedules and seats.

No or a wrong bearer token is 401 (TOKEN_MISSING / TOKEN_INVALID) with `WWW-Authenticate: Bearer`
(RFC 6750); with ADMIN_TOKEN unset the admin routes are closed to everyone (403 FORBIDDEN).
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, request
from spectree import Response as Resp

from models import concerts, draws
from models.errors import AdminDisabled, AdminTokenInvalid, AdminTokenMissing
from web.api import respond, settings, spec
from web.schemas import Problem
from web.schemas.admin import CreatedConcertOut, CreatedScheduleOut, NewConcertIn

bp = Blueprint("admin", __name__)
F = TypeVar("F", bound=Callable[..., Any])


def require_admin() -> None:
    """Constant-time check of the bearer token; admin is off when ADMIN_TOKEN is unset."""
    expected = settings().admin_token
    if not expected:
        raise AdminDisabled("the admin routes are disabled (ADMIN_TOKEN is not set)")
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AdminTokenMissing("send the admin token as Authorization: Bearer <token>")
    # bytes, because compare_digest refuses non-ASCII str; its time does not depend on where they differ
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise AdminTokenInvalid("the admin token is not valid")


def admin_only(view: F) -> F:
    """Check the admin token before anything else (an unauthenticated caller learns nothing from validation)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_admin()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@bp.after_request
def _challenge(response: Response) -> Response:
    """RFC 6750: a 401 names the scheme the client must use."""
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
    return response


@bp.post("/admin/concerts")
@admin_only
@spec.validate(
    json=NewConcertIn,
    resp=Resp(HTTP_201=CreatedConcertOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem),
    tags=["admin"],
    security={"adminToken": []},
)
def create_concert(json: NewConcertIn) -> Response:
    """Create a concert with its schedules; seats are numbered 1..seatCount."""
    concert_id, created = concerts.create_concert(
        title=json.title,
        venue=json.venue,
        schedules=[
            concerts.NewSchedule(s.startsAt.astimezone(dt.UTC).replace(tzinfo=None), s.seatCount, s.price)
            for s in json.schedules
        ],
        sale_opens_at=json.saleOpensAt.astimezone(dt.UTC).replace(tzinfo=None) if json.saleOpensAt else None,
    )
    record = draws.published(concert_id=concert_id)
    out = CreatedConcertOut(
        concertId=concert_id,
        schedules=[
            CreatedScheduleOut(scheduleId=s.schedule_id, startsAt=s.starts_at, totalSeats=s.total_seats)
            for s in created
        ],
        saleOpensAt=record.sale_opens_at,
        seedCommitment=record.seed_commitment,
    )
    return respond(out, 201, {"Location": f"/api/v1/concerts/{concert_id}/schedules"})
