"""The hottest answers of a sale, given before Flask: the routes' own work without the framework's.

A fan refreshing the seat map, a waiting fan's poll and a fan leaving the queue are what a sale
serves most, and each route's own work (the bearer from the process's verified copy, the queue
token, one Redis round trip or a 0.5 s copy, the body) is a fraction of what Flask spends around
it on every request: a request and an app context pushed and popped, the URL map bound and
matched, ten hooks run through Flask's runners, signals sent, the response object built and its
headers copied out. In-process (`bench/request_profile.py`) the one-fan seat map was 4,681 Python
opcodes and a poll 5,076 against a bare Flask route's 3,470; under gunicorn the map served
0.64-0.91 of the bare route's requests/s (issue 15's target 0.8).

`HotPaths` wraps the app's WSGI callable. With a bearer and no query string it answers
- `GET /api/v1/schedules/<id>/seats` (a plain decimal id): 200 or 304, by `seat_map_page`;
- `GET /api/v1/queue/token` of a concert without a fair start: 200, by `WaitingRoom.poll_as` (far
  back: this process's poll memo, no Redis; models/poll_memo.py);
- `DELETE /api/v1/queue/token`: 204, by `WaitingRoom.leave_as`;
- `POST /api/v1/queue/tokens` with a plain body (every fan's first request): 201 or 200, by
  `WaitingRoom.issue_limited` (the body read is put back for Flask, which takes every other body);
through the functions the routes call (`web.auth.Verifier.user_id`, `web.gate.queue_token_from`),
with the routes' headers, the same request id in and out (`web.requestlog`), the same count and
latency in the metrics (`web.metrics`) and, with ACCESS_LOG, the same access line. Anything else,
and every refusal or failure on the way (no or a bad bearer, a bad or unknown token, a waiting
token on the map, another user's or concert's token, an early poll, Redis down), goes to the
Flask app, which answers it exactly as before: this module gives only those successes, so the
problem+json answers keep their one place (web/errors.py).

A refusal's checks run twice (the second time through Flask), except the poll's: a poll of
another user's token has already kept that token's place (as the route does) when the owner is
compared, and polling again could turn its 403 into an early poll's 429; an early poll must cost
no more Redis work than the poll itself (SPEC §3). So what the poll script answered here (the
token, or the early poll's or unknown token's refusal) travels with the request
(`web.queue.POLLED`) and the route answers from it instead of polling again. A refused leave
changes nothing in Redis and is asked again. A join refused by a rate limit was counted by the
issue script: that refusal travels with the request too (`web.queue.JOIN_REFUSED`). A failing
Redis is asked twice.

The routes must stay without a Flask-Limiter limit (its hooks run only under Flask): `install`
leaves out every route that carries one.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask

from config.logs import REQUEST_ID
from models import concerts, draws
from models.db import MAX_ID, db
from models.errors import DomainError
from models.queue_tokens import concert_of_token
from models.tally import TALLY
from models.waiting_room import JoinLimited
from web.api import JSON
from web.auth import bearer_token
from web.concerts import plain_view, seat_map_headers, seat_map_page
from web.gate import queue_token_from
from web.metrics import HTTP_LATENCY, HTTP_REQUESTS
from web.queue import JOIN_REFUSED, POLLED, join_queue, join_rates, rate_headers, token_json
from web.requestlog import HEADER as REQUEST_ID_HEADER
from web.requestlog import log_access, request_id_from

# the seat map's path with a plain decimal id (what parse_id reads without its pattern); others go to Flask
_SEATS = re.compile(r"/api/v1/schedules/([1-9][0-9]{0,17})/seats")
_TOKEN = "/api/v1/queue/token"
_TOKENS = "/api/v1/queue/tokens"
SEAT_MAP = ("concerts.seat_map", ("GET", "/api/v1/schedules/<schedule_id>/seats"))  # endpoint, metrics labels
JOIN = ("queue.issue", ("POST", _TOKENS))
POLL = ("queue.poll", ("GET", _TOKEN))
LEAVE = ("queue.leave", ("DELETE", _TOKEN))

_JOIN_BODY_MAX = 256  # bytes: a plain join body is ~40; a longer one is Flask's to read and judge
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Answer = tuple[str, list[tuple[str, str]], bytes]  # status line, headers (the request id added after), body


class HotPaths:
    """A WSGI callable: the hot routes' successes answered here, everything else by `app`."""

    def __init__(self, flask_app: Flask, app: WSGIApp, *, access_log: bool, endpoints: set[str]) -> None:
        self.app = app
        self.verifier = flask_app.extensions["auth_verifier"]
        self.pages = flask_app.extensions["seat_pages"]
        self.room = flask_app.extensions["waiting_room"]
        self.controls = flask_app.extensions["queue_controls"]
        self.settings = flask_app.config["SETTINGS"]
        self.access_log = access_log
        self.endpoints = endpoints  # the routes served here (install leaves out limited ones)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("QUERY_STRING") or "HTTP_AUTHORIZATION" not in environ:
            return self.app(environ, start_response)
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        answer: Callable[[dict[str, Any], int], Answer | None]
        if path == _TOKENS and method == "POST" and JOIN[0] in self.endpoints:
            answer, labels = self._join, JOIN[1]
        elif path == _TOKEN and method == "GET" and POLL[0] in self.endpoints:
            answer, labels = self._poll, POLL[1]
        elif path == _TOKEN and method == "DELETE" and LEAVE[0] in self.endpoints:
            answer, labels = self._leave, LEAVE[1]
        elif method == "GET" and SEAT_MAP[0] in self.endpoints and (match := _SEATS.fullmatch(path)):
            schedule_id = int(match.group(1))
            answer, labels = (lambda env, user: self._seat_map(env, user, schedule_id)), SEAT_MAP[1]
        else:
            return self.app(environ, start_response)
        return self._serve(environ, start_response, answer, labels)

    def _serve(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        answer: Callable[[dict[str, Any], int], Answer | None],
        labels: tuple[str, str],
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        rid = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        reset = REQUEST_ID.set(rid)  # log lines written meanwhile carry it, as under Flask
        try:
            try:
                bearer = bearer_token(environ)
                found = None if bearer is None else answer(environ, self.verifier.user_id(bearer))
            except Exception:  # a refusal or a failure: the app answers it, as it always has
                found = None
            finally:
                if not db.is_closed():  # as the app's teardown: a cache rebuild may have opened it
                    db.close()
            if found is None:
                return self.app(environ, start_response)
            status, headers, body = found
            headers.append((REQUEST_ID_HEADER, rid))
            elapsed = time.perf_counter() - started
            TALLY.count_and_observe(HTTP_REQUESTS, HTTP_LATENCY, labels, status[:3], elapsed)
            if self.access_log:
                log_access(labels[0], environ["PATH_INFO"], "", status[:3], elapsed * 1000)
            start_response(status, headers)
            return [body] if body else []
        finally:
            with contextlib.suppress(ValueError):  # set in another context (should not happen)
                REQUEST_ID.reset(reset)

    def _seat_map(self, environ: dict[str, Any], user_id: int, schedule_id: int) -> Answer:
        """The cached map's 200, or 304 on a matching If-None-Match (web.concerts.seat_map)."""
        page = seat_map_page(self.pages, self.room, plain_view(schedule_id), queue_token_from(environ), user_id)
        if page.etag in environ.get("HTTP_IF_NONE_MATCH", ""):
            return "304 NOT MODIFIED", [("ETag", page.etag)], b""
        headers = [("Content-Type", JSON), ("Content-Length", str(len(page.body))), *seat_map_headers(page)]
        return "200 OK", headers, page.body

    def _poll(self, environ: dict[str, Any], user_id: int) -> Answer | None:
        """A poll's 200 (web.queue.poll) for a concert without a fair start (its pre-queue: Flask)."""
        token = queue_token_from(environ)
        concert_id = concert_of_token(token)
        if draws.fair_start_of(concert_id=concert_id) is not None:
            return None
        controls = self.controls.current(concert_id=concert_id)  # before the poll: nothing left to fail
        notice, limit = controls.notice, controls.limit(self.settings.active_limit)
        try:  # far back: answered by this process's memo (models/poll_memo.py), no Redis
            status = self.room.poll_as(token=token, user_id=user_id, limit=limit)
        except DomainError as refused:  # an early poll (429) or an unknown token (401): the route's, not polled again
            environ[POLLED] = (token, refused)
            return None
        if status.user_id != user_id:  # 403 from the route, with this poll (its place kept, as the route does)
            environ[POLLED] = (token, status)
            return None
        body = token_json(status, notice, None)  # an entrant hash only on a fair-start concert's tokens
        return "200 OK", [("Content-Type", JSON), ("Content-Length", str(len(body)))], body

    def _join(self, environ: dict[str, Any], user_id: int) -> Answer | None:
        """A join's 201 or 200 (web.queue.issue) with a plain body, for a concert without a fair start.

        The body is read here and put back for Flask: anything but `{"concertId": N}` or
        `{"concertId": N, "userId": <this user or null>}` as application/json (a 400, a 403) goes
        to the route, as do an unknown concert (404), a fair start's pre-queue and, with what the
        issue script answered (it counted the join: never counted twice), a rate limit's 429."""
        joining = _join_body(environ)
        if joining is None or joining[1] not in (None, user_id):
            return None
        concert_id = joining[0]
        if not concerts.concert_exists(concert_id=concert_id) or draws.fair_start_of(concert_id=concert_id):
            return None
        rates = join_rates(user_id, environ.get("REMOTE_ADDR") or "127.0.0.1", self.settings)
        try:
            token, window = join_queue(
                self.room, self.controls, self.settings, user_id=user_id, concert_id=concert_id, rates=rates
            )
        except JoinLimited as refused:
            environ[JOIN_REFUSED] = (user_id, concert_id, refused)
            return None
        notice = self.controls.current(concert_id=concert_id).notice  # the route's _body: cached per process
        body = token_json(token, notice, None)  # an entrant hash only on a fair-start concert's tokens
        headers = [("Content-Type", JSON), ("Content-Length", str(len(body)))]
        if window is not None:
            headers += rate_headers(window)
        return ("201 CREATED" if token.created else "200 OK"), headers, body

    def _leave(self, environ: dict[str, Any], user_id: int) -> Answer | None:
        """A leave's 204 (web.queue.leave); another user's token or an unknown one: Flask (nothing changed)."""
        if not self.room.leave_as(token=queue_token_from(environ), user_id=user_id):
            return None
        return "204 NO CONTENT", [("Content-Type", "text/html; charset=utf-8")], b""  # the route's: werkzeug's default


def _join_body(environ: dict[str, Any]) -> tuple[int, int | None] | None:
    """(concertId, userId or None) of a join's plain JSON body, else None; the body read is put
    back in `wsgi.input` for Flask either way."""
    if environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None  # chunked, or no length: Flask reads it
    if not 0 < length <= _JOIN_BODY_MAX:
        return None
    raw = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= {"concertId", "userId"}:
        return None
    concert_id, user_id = data.get("concertId"), data.get("userId")
    if type(concert_id) is not int or not _plain_id(concert_id):
        return None
    if user_id is not None and (type(user_id) is not int or not _plain_id(user_id)):
        return None
    return concert_id, user_id


def _plain_id(value: int) -> bool:
    """An id the schema takes as it is (the int checked first: not a bool, not 7.0): 1 to MAX_ID."""
    return 1 <= value <= MAX_ID


def install(app: Flask, *, access_log: bool) -> None:
    """Answer the hot routes before the app's WSGI callable (after every blueprint is registered
    and the limiter set up); a route that carries a Flask-Limiter limit stays Flask's."""
    from web.limits import limited_endpoints

    endpoints = {SEAT_MAP[0], POLL[0], LEAVE[0], JOIN[0]} - limited_endpoints(app)
    if endpoints:
        app.wsgi_app = HotPaths(app, app.wsgi_app, access_log=access_log, endpoints=endpoints)  # type: ignore[method-assign]
