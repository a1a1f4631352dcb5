"""Waiting-room routes: join the queue, poll a token, leave."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, request
from spectree import Response as Resp

from models import concerts
from models.errors import NotFound, TokenMissing
from models.waiting_room import QueueToken
from web.api import respond, settings, spec
from web.gate import HEADER, waiting_room
from web.limits import limiter, token_key, user_key
from web.queue_controls import queue_controls
from web.schemas import Problem, TokenIn, TokenOut

bp = Blueprint("queue", __name__)


def _out(t: QueueToken) -> TokenOut:
    controls = queue_controls().current(concert_id=t.concert_id)
    return TokenOut(
        token=t.token,
        userId=t.user_id,
        concertId=t.concert_id,
        status=t.status,  # type: ignore[arg-type]
        rank=t.rank,
        estimatedWaitSeconds=t.estimated_wait_seconds,
        expiresAt=dt.datetime.fromtimestamp(t.expires_at_ms / 1000, dt.UTC),
        soldOut=t.sold_out,
        notice=controls.notice,
    )


def _header_token() -> str:
    token = request.headers.get(HEADER, "").strip()
    if not token:
        raise TokenMissing(f"send the queue token in the {HEADER} header")
    return token


@bp.post("/queue/tokens")
@limiter.limit(lambda: settings().rate_issue_user, key_func=user_key)
@limiter.limit(lambda: settings().rate_issue_ip)
@spec.validate(
    json=TokenIn,
    resp=Resp(HTTP_200=TokenOut, HTTP_201=TokenOut, HTTP_400=Problem, HTTP_404=Problem, HTTP_429=Problem),
    tags=["queue"],
)
def issue(json: TokenIn) -> Response:
    """Join a concert's queue; asking again returns the same token and place."""
    if not concerts.concert_exists(concert_id=json.concertId):
        raise NotFound(f"concert {json.concertId} does not exist")
    limit = queue_controls().current(concert_id=json.concertId).join_limit(settings().active_limit)
    token = waiting_room().issue(user_id=json.userId, concert_id=json.concertId, limit=limit)
    return respond(_out(token), 201 if token.created else 200)


@bp.get("/queue/token")
@limiter.limit(lambda: settings().rate_poll_token, key_func=token_key)
@limiter.limit(lambda: settings().rate_poll_ip)
@spec.validate(
    resp=Resp(HTTP_200=TokenOut, HTTP_401=Problem, HTTP_429=Problem), tags=["queue"], security={"queueToken": []}
)
def poll() -> Response:
    """A token's status, rank and wait estimate; polling keeps a waiting place alive."""
    return respond(_out(waiting_room().status(token=_header_token())))


@bp.delete("/queue/token")
@spec.validate(resp=Resp(HTTP_204=None, HTTP_401=Problem), tags=["queue"], security={"queueToken": []})
def leave() -> Response:
    """Leave the queue or give up the active slot."""
    if not waiting_room().leave(token=_header_token()):
        from models.errors import TokenInvalid

        raise TokenInvalid("the queue token is unknown or has expired")
    return Response(status=204)
