"""The cached seat map's 200 and 304, answered before Flask: the route's work without the framework's.

A fan refreshing the seat map is the hottest read of a sale, and the route's own work (the bearer
from the process's verified copy, the queue token and the page from the 0.5 s copies or one Redis
round trip, the ETag) is a fraction of what Flask spends around it on every request: a request
and an app context pushed and popped, the URL map bound and matched, six hooks run through
Flask's runners, signals sent, the response object built and its headers copied out. In-process
(`bench/request_profile.py`) the one-fan map was 4,681 Python opcodes against a bare Flask
route's 3,470, and under gunicorn served 0.64-0.91 of its requests/s (issue 15's target 0.8).

`SeatMapPath` wraps the app's WSGI callable. A `GET /api/v1/schedules/<id>/seats` with no query
string, a plain decimal id, a bearer and a queue token is answered here by the same functions
the route calls (`web.auth.Verifier.user_id`, `web.gate.queue_token_from`,
`web.concerts.seat_map_page`) with the same headers, the same request id in and out
(`web.requestlog`), the same count and latency in the metrics (`web.metrics`) and, with
ACCESS_LOG, the same access line. Anything else, and every refusal or failure on the way (no
bearer, a bad token, a waiting token, another concert's token, Redis down, an unknown schedule),
goes to the Flask app unchanged, which answers it exactly as before: this path only ever answers
200 or 304, so the problem+json answers keep their one place (web/errors.py). What a refusal
costs: its checks run twice (the second time through Flask), with at most one more Redis round
trip; a failing Redis is asked twice.

The route must stay without a rate limit and public routes without identity are not served here;
`install` refuses to wrap an app whose seat map carries a Flask-Limiter limit.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from config.logs import REQUEST_ID
from models.db import db
from models.tally import TALLY
from web.api import JSON
from web.auth import bearer_token
from web.concerts import plain_view, seat_map_headers, seat_map_page
from web.gate import queue_token_from
from web.metrics import HTTP_LATENCY, HTTP_REQUESTS
from web.requestlog import HEADER as REQUEST_ID_HEADER
from web.requestlog import log_access, request_id_from

ENDPOINT = "concerts.seat_map"
# the path this serves: a plain decimal id (what parse_id reads without its pattern); others go to Flask
_PATH = re.compile(r"/api/v1/schedules/([1-9][0-9]{0,17})/seats")
_LABELS = ("GET", "/api/v1/schedules/<schedule_id>/seats")  # the metrics' labels: method, route template

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SeatMapPath:
    """A WSGI callable: the query-less seat map's 200 and 304 answered here, everything else by `app`."""

    def __init__(self, flask_app: Flask, app: WSGIApp, *, access_log: bool) -> None:
        self.app = app
        self.verifier = flask_app.extensions["auth_verifier"]
        self.pages = flask_app.extensions["seat_pages"]
        self.room = flask_app.extensions["waiting_room"]
        self.access_log = access_log

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return self.app(environ, start_response)
        match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or "HTTP_AUTHORIZATION" not in environ:
            return self.app(environ, start_response)
        started = time.perf_counter()
        rid = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        reset = REQUEST_ID.set(rid)  # log lines written meanwhile carry it, as under Flask
        try:
            try:
                bearer = bearer_token(environ)
                if bearer is None:
                    return self.app(environ, start_response)
                user_id = self.verifier.user_id(bearer)
                token = queue_token_from(environ)
                page = seat_map_page(self.pages, self.room, plain_view(int(match.group(1))), token, user_id)
            except Exception:  # a refusal or a failure: the app answers it, as it always has
                return self.app(environ, start_response)
            finally:
                if not db.is_closed():  # as the app's teardown: a rebuild may have opened it
                    db.close()
            if page.etag in environ.get("HTTP_IF_NONE_MATCH", ""):
                status, body = "304 NOT MODIFIED", b""
                headers = [("ETag", page.etag), (REQUEST_ID_HEADER, rid)]
            else:
                status, body = "200 OK", page.body
                headers = [
                    ("Content-Type", JSON),
                    ("Content-Length", str(len(body))),
                    *seat_map_headers(page),
                    (REQUEST_ID_HEADER, rid),
                ]
            elapsed = time.perf_counter() - started
            TALLY.count_and_observe(HTTP_REQUESTS, HTTP_LATENCY, _LABELS, status[:3], elapsed)
            if self.access_log:
                log_access("GET", environ["PATH_INFO"], "", status[:3], elapsed * 1000)
            start_response(status, headers)
            return [body] if body else []
        finally:
            with contextlib.suppress(ValueError):  # set in another context (should not happen)
                REQUEST_ID.reset(reset)


def install(app: Flask, *, access_log: bool) -> None:
    """Answer the query-less seat map before the app's WSGI callable (after every blueprint is
    registered and the limiter set up)."""
    from web.limits import limited_endpoints

    if ENDPOINT in limited_endpoints(app):  # a limit is Flask-Limiter's hooks: only Flask may answer
        return
    app.wsgi_app = SeatMapPath(app, app.wsgi_app, access_log=access_log)  # type: ignore[method-assign]
