"""Waiting-room routes: join the queue, poll a token, leave."""

from __future__ import annotations

import datetime as dt
import functools
import math

import orjson
from flask import Blueprint, Response, current_app, g, request
from flask_limiter.util import get_remote_address
from limits import parse_many
from spectree import Response as Resp

from config.settings import Settings
from models import concerts, draws, fairness
from models.db import utcnow
from models.errors import DomainError, Forbidden, NotFound, TokenInvalid
from models.prequeue import PreQueue, PrequeuedToken
from models.queue_controls import QueueControls
from models.queue_tokens import QueueToken, concert_of_token
from models.waiting_room import JoinLimited, Rate, WaitingRoom, Window
from web.api import described, json_body, ready_json, respond, settings
from web.auth import identity
from web.gate import queue_token_header, waiting_room
from web.limits import limiter
from web.queue_controls import queue_controls
from web.schemas import Problem
from web.schemas.queue import TokenIn, TokenOut

bp = Blueprint("queue", __name__)
POLLED = "concert.polled"  # the environ key of a poll web/hot_paths.py made (no header can name it: those are HTTP_*)
JOIN_REFUSED = "concert.join_refused"  # (user, concert, JoinLimited) of a join web/hot_paths.py counted and was refused


def prequeue() -> PreQueue:
    """The app's fair-start pre-queue."""
    return current_app.extensions["prequeue"]  # type: ignore[no-any-return]


def _entrant(user_id: int, concert_id: int) -> str | None:
    """The fan's own entrant hash on a fair-start concert's tokens (so they can find themselves in the draw)."""
    return fairness.entrant_of(user_id) if draws.fair_start_of(concert_id=concert_id) else None


def _pre_out(t: PrequeuedToken) -> TokenOut:
    start = draws.fair_start_of(concert_id=t.concert_id)
    opens_in = (start.opens_at - utcnow()).total_seconds() if start else 0
    return TokenOut(
        token=t.token,
        userId=t.user_id,
        concertId=t.concert_id,
        status="PREQUEUED",
        rank=None,
        estimatedWaitSeconds=max(0, math.ceil(opens_in)),
        expiresAt=dt.datetime.fromtimestamp(t.expires_at_ms / 1000, dt.UTC),
        soldOut=False,
        pollAfterMs=min(int(settings().poll_max_interval * 1000), max(1000, int(opens_in * 1000))),
        notice=queue_controls().current(concert_id=t.concert_id).notice,
        entrant=t.entrant,
    )


def _body(t: QueueToken, status: int = 200) -> Response:
    """A token's TokenOut JSON, written directly: the poll is the hottest route of a sale, and a
    pydantic model plus jsonify cost more than the poll's Redis round trip (bench/unit_costs.py).
    orjson and a ready header list (web.api.ready_json): `json.dumps` and werkzeug's per-header
    checks were ~400 of a poll's ~7,000 Python opcodes (bench/request_profile.py)."""
    notice = queue_controls().current(concert_id=t.concert_id).notice  # cached per process (0.5 s)
    return ready_json(token_json(t, notice, _entrant(t.user_id, t.concert_id)), status=status)


def token_json(t: QueueToken, notice: str | None, entrant: str | None) -> bytes:
    """A token's TokenOut as JSON bytes (the routes and web/hot_paths.py)."""
    expires = dt.datetime.fromtimestamp(t.expires_at_ms / 1000, dt.UTC).replace(tzinfo=None)
    body = {
        "token": t.token,
        "userId": t.user_id,
        "concertId": t.concert_id,
        "status": t.status,
        "rank": t.rank,
        "estimatedWaitSeconds": t.estimated_wait_seconds,
        "expiresAt": expires.isoformat(timespec="milliseconds") + "Z",
        "soldOut": t.sold_out,
        "pollAfterMs": t.poll_after_ms,
        "notice": notice,
        "entrant": entrant,
    }
    return orjson.dumps(body)


def _own(user_id: int) -> None:
    """A queue token works only with its own user's identity (403 otherwise)."""
    if user_id != identity():
        raise Forbidden("the queue token belongs to another user")


@bp.post("/queue/tokens")
@described(
    json=TokenIn,
    resp=Resp(
        HTTP_200=TokenOut, HTTP_201=TokenOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem,
        HTTP_404=Problem, HTTP_409=Problem, HTTP_429=Problem,
    ),
    tags=["queue"],
)  # fmt: skip
def issue() -> Response:
    """Join a concert's queue as the signed-in user; asking again returns the same token and place.

    RATE_LIMIT_ISSUE_USER and RATE_LIMIT_ISSUE_IP are counted inside the issue script (no
    Flask-Limiter here: its four round trips were half a join's cost); every answer carries the
    tightest window as X-RateLimit-Limit / -Remaining / -Reset, a refusal 429 with Retry-After."""
    json = json_body(TokenIn)  # not spectree's wrapper: the join is every fan's first request
    user_id = identity()
    if json.userId is not None and json.userId != user_id:
        raise Forbidden("userId does not match the signed-in user")
    room, rates = waiting_room(), join_rates(user_id, get_remote_address())
    try:
        if not concerts.concert_exists(concert_id=json.concertId):
            g.join_window = room.check_rates(concert_id=json.concertId, rates=rates)
            raise NotFound(f"concert {json.concertId} does not exist")
        if draws.fair_start_of(concert_id=json.concertId) is not None:  # the pre-queue: counted on its own
            g.join_window, rates = room.check_rates(concert_id=json.concertId, rates=rates), ()
        pre = draws.join_prequeue(
            prequeue(), user_id=user_id, concert_id=json.concertId, window_s=settings().prequeue_window
        )
        if pre is not None:
            return respond(_pre_out(pre), 201 if pre.created else 200)
        refused = request.environ.pop(JOIN_REFUSED, None)  # counted already by web/hot_paths.py: never twice
        if refused is not None and refused[:2] == (user_id, json.concertId):
            raise refused[2]
        token, window = join_queue(
            room, queue_controls(), settings(), user_id=user_id, concert_id=json.concertId, rates=rates
        )
    except JoinLimited as refused:
        g.join_window = refused.window
        raise
    g.join_window = window or g.get("join_window")
    return _body(token, 201 if token.created else 200)


def join_queue(
    room: WaitingRoom, controls: QueueControls, s: Settings, *, user_id: int, concert_id: int, rates: tuple[Rate, ...]
) -> tuple[QueueToken, Window | None]:
    """Join a known concert's ordinary queue (no fair start): its operators' join limit and the
    rate windows, checked in the issue script (JoinLimited over a window); the route and
    web/hot_paths.py."""
    limit = controls.current(concert_id=concert_id).join_limit(s.active_limit)
    return room.issue_limited(user_id=user_id, concert_id=concert_id, limit=limit, rates=rates)


def join_rates(user_id: int, address: str, s: Settings | None = None) -> tuple[Rate, ...]:
    """The join's limits for this request: per user, then per client address (none when rate
    limiting is off); the route and web/hot_paths.py."""
    s = s or settings()
    if not s.rate_limit_enabled:
        return ()
    return (*_rates(f"u:{user_id}", s.rate_issue_user), *_rates(f"ip:{address}", s.rate_issue_ip))


def _rates(name: str, text: str) -> tuple[Rate, ...]:
    return tuple(Rate(name, requests, window_ms) for requests, window_ms in _parsed(text))


@functools.lru_cache(maxsize=32)
def _parsed(text: str) -> tuple[tuple[int, int], ...]:
    """The rate text "30/minute; 200/hour" as ((30, 60000), (200, 3600000)) (Settings validated it with `limits`)."""
    return tuple((item.amount, item.get_expiry() * 1000) for item in parse_many(text))


@bp.after_request
def _rate_headers(response: Response) -> Response:
    """X-RateLimit-* of a join (the window the issue script counted it in)."""
    window: Window | None = g.pop("join_window", None)
    if window is not None:
        response.headers.extend(rate_headers(window))
    return response


def rate_headers(window: Window) -> list[tuple[str, str]]:
    """X-RateLimit-Limit / -Remaining / -Reset of a join's window (the route and web/hot_paths.py)."""
    return [
        ("X-RateLimit-Limit", str(window.limit)),
        ("X-RateLimit-Remaining", str(max(0, window.remaining))),
        ("X-RateLimit-Reset", str(-(-window.reset_ms // 1000))),
    ]


@bp.get("/queue/token")
@limiter.exempt  # paced instead: the poll script itself refuses an early poll (429 with Retry-After)
@described(
    resp=Resp(HTTP_200=TokenOut, HTTP_401=Problem, HTTP_403=Problem, HTTP_429=Problem),
    tags=["queue"],
    security={"queueToken": []},
)
def poll() -> Response:
    """A token's status, rank, wait estimate and pollAfterMs; a poll keeps a waiting place alive,
    and one more than 20 % before pollAfterMs is 429 RATE_LIMITED with Retry-After."""
    token = queue_token_header()
    pre = draws.prequeued_status(prequeue(), token=token, concert_id=concert_of_token(token))
    if pre is not None:
        _own(pre.user_id)
        return respond(_pre_out(pre))
    polled = request.environ.pop(POLLED, None)  # (token, what its poll answered) from web/hot_paths.py
    if polled is not None and polled[0] == token:  # polled already: never twice
        if isinstance(polled[1], DomainError):
            raise polled[1]
        status = polled[1]
    else:
        status = waiting_room().status(token=token)
    _own(status.user_id)
    return _body(status)


@bp.delete("/queue/token")
@described(resp=Resp(HTTP_204=None, HTTP_401=Problem, HTTP_403=Problem), tags=["queue"], security={"queueToken": []})
def leave() -> Response:
    """Leave the queue or give up the active slot (only the token's own user may).

    One round trip: the leave script checks the owner itself (when sold out, nearly every
    waiting fan leaves at once: the flash sale's burst of DELETEs)."""
    if not waiting_room().leave_as(token=queue_token_header(), user_id=identity()):
        raise TokenInvalid("the queue token is unknown or has expired")
    return Response(status=204)
