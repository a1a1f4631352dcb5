"""The queue-token gate: the single place every seat, reservation and payment route passes through.

It reads `X-Queue-Token`, answers 401 TOKEN_MISSING / TOKEN_INVALID or 403 TOKEN_NOT_ACTIVE,
checks that the token is the signed-in user's (web/auth.py) and that its concert is the one
being touched (403 FORBIDDEN), and leaves the token in `flask.g` for the route.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from models import concerts, reservations
from models.errors import Forbidden, TokenMissing, TokenNotActive
from models.queue_tokens import QueueToken, concert_of_token
from models.redis_support import scripts_in_one_round_trip
from models.reservations import ReservationView
from models.waiting_room import ACTIVE, WaitingRoom, ends_here
from web.api import parse_id
from web.auth import identity

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "X-Queue-Token"
_ENVIRON_KEY = "HTTP_X_QUEUE_TOKEN"  # the header as the WSGI environ holds it


def waiting_room() -> WaitingRoom:
    """The app's waiting room."""
    return current_app.extensions["waiting_room"]  # type: ignore[no-any-return]


def require_active(concert_id: int | None = None, *, claimed_user_id: int | None = None) -> QueueToken:
    """The caller's ACTIVE token (for `concert_id` when given), or the matching 401/403 error.

    `claimed_user_id` is a userId the request body names: it must be the identity's user.
    """
    return _accept(waiting_room().status(token=_token(), touch=False), concert_id, claimed_user_id)


def require_active_with(
    calls: list[tuple[Any, Any, Any]],
    concert_id: int | None = None,
    *,
    claimed_user_id: int | None = None,
    recent: bool = False,
) -> tuple[QueueToken, list[Any]]:
    """require_active() and these read scripts in one round trip: the token and the scripts' replies.

    The replies are read only after the token passed, so nothing leaks to a caller without one.
    `recent` (read-only routes): an ACTIVE status this process read less than 0.5 s ago is
    believed without asking Redis again (WaitingRoom.recent_active); the identity, concert and
    user checks still run on every request.
    """
    ctx = g._get_current_object()  # type: ignore[attr-defined]  # one lookup, not one per attribute
    token = _token()
    info, replies = active_token_with(
        waiting_room(), token, identity(ctx), calls, concert_id, claimed_user_id=claimed_user_id, recent=recent
    )
    ctx.queue_token = info
    return info, replies


def active_token_with(
    room: WaitingRoom,
    token: str,
    user_id: int,
    calls: list[tuple[Any, Any, Any]],
    concert_id: int | None = None,
    *,
    claimed_user_id: int | None = None,
    recent: bool = False,
) -> tuple[QueueToken, list[Any]]:
    """require_active_with() for a token and a verified user id already read from the request
    (no Flask: the seat map's WSGI path, web/hot_paths.py, calls it too)."""
    if recent:
        known = room.recent_active(token)
        if known is not None:
            accepted = accept(known, user_id, concert_id, claimed_user_id)
            return accepted, scripts_in_one_round_trip(room.r, calls) if calls else []
    stamp = ends_here()
    found, *replies = scripts_in_one_round_trip(room.r, [room.status_call(token=token), *calls])
    info = room.status_from(token=token, found=found)
    if recent:
        room.remember_active(info, stamp)
    return accept(info, user_id, concert_id, claimed_user_id), replies


def queue_token_header() -> str:
    """The request's queue token, read once the same way by the gate and the rate limiter:
    401 TOKEN_MISSING when absent, 401 TOKEN_INVALID unless it has a token's exact form (so
    `<token>\\xa0` is refused, never counted under another key than the token it imitates)."""
    return queue_token_from(request.environ)


def queue_token_from(environ: dict[str, Any]) -> str:
    """queue_token_header() of a WSGI environ."""
    raw = environ.get(_ENVIRON_KEY, "").strip(" \t")
    if not raw:
        raise TokenMissing(f"send the queue token in the {HEADER} header")
    concert_of_token(raw)
    return raw


_token = queue_token_header


def _accept(info: QueueToken, concert_id: int | None, claimed_user_id: int | None) -> QueueToken:
    ctx = g._get_current_object()  # type: ignore[attr-defined]  # one lookup, not one per attribute
    ctx.queue_token = accept(info, identity(ctx), concert_id, claimed_user_id)
    return info


def accept(info: QueueToken, user_id: int, concert_id: int | None, claimed_user_id: int | None) -> QueueToken:
    """`info` when it is `user_id`'s ACTIVE token (of `concert_id` when given, and `claimed_user_id`
    names the same user when given), else the matching 403."""
    if info.user_id != user_id:
        raise Forbidden("the queue token belongs to another user")
    if info.status != ACTIVE:
        raise TokenNotActive(f"the token is still waiting (rank {info.rank}); poll GET /api/v1/queue/token")
    if concert_id is not None:
        _same_concert(info, concert_id)
    if claimed_user_id is not None and claimed_user_id != info.user_id:
        raise Forbidden("userId does not match the signed-in user")
    return info


def queue_gate(view: F) -> F:
    """Guard a route whose path has `schedule_id` behind an ACTIVE token of that schedule's concert."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        info = require_active()
        if "schedule_id" in kwargs:
            schedule_id = parse_id(kwargs["schedule_id"], "scheduleId")
            _same_concert(info, concerts.concert_id_of_schedule(schedule_id=schedule_id))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def own_reservation(token: QueueToken | None, reservation_id: int) -> ReservationView:
    """The caller's reservation: another user's is 404 exactly like a missing one (existence is
    not revealed); with a queue token, a reservation of another concert than the token's is 403."""
    view = reservations.get_reservation(reservation_id=reservation_id, user_id=identity())
    if token is not None:
        _same_concert(token, concerts.concert_id_of_schedule(schedule_id=view.schedule_id))
    return view


def _same_concert(token: QueueToken, concert_id: int) -> None:
    if token.concert_id != concert_id:
        raise Forbidden("the queue token is for another concert")
