"""Request ids and the access log.

Every request gets an id: the caller's `X-Request-Id` when it is a sane token (≤ 64 of
`[A-Za-z0-9._-]`), else 16 random hex digits. It is echoed in the response's `X-Request-Id`,
stamped on every log line written while handling the request (config.logs), and travels with
the jobs the request queues, so the worker's lines name it too. With `ACCESS_LOG` on, one
compact INFO line per request: `GET /api/v1/concerts 200 3.1ms`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time

from flask import Flask, Response, g, request

from config.logs import REQUEST_ID

HEADER = "X-Request-Id"
_ENVIRON_KEY = "HTTP_X_REQUEST_ID"  # the header as the WSGI environ holds it
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
access = logging.getLogger("access")


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is a sane token, else a fresh one."""
    if header and _SANE.fullmatch(header):
        return header
    return os.urandom(8).hex()  # secrets.token_hex(8), without its two Python calls


def log_access(method: str, path: str, query: str, status: int | str, ms: float) -> None:
    """The access line of one request: `GET /api/v1/concerts 200 3.1ms`."""
    access.info("%s %s%s %s %.1fms", method, path, query, status, ms)


def install(app: Flask, *, access_log: bool) -> None:
    """Give each request an id (in and out) and, with `access_log`, one log line when it ends.

    Each hook looks the request and `g` up once (`_get_current_object()`): every attribute read
    through Flask's `request`/`g` proxies costs three Python calls (~1.5 µs on the bench machine),
    and these hooks run on every request (bench/request_profile.py).
    """

    @app.before_request
    def _begin() -> None:
        ctx = g._get_current_object()  # type: ignore[attr-defined]
        ctx.request_started = time.perf_counter()
        rid = request_id_from(request._get_current_object().environ.get(_ENVIRON_KEY))  # type: ignore[attr-defined]
        ctx.request_id = rid
        ctx.request_id_token = REQUEST_ID.set(rid)

    @app.after_request
    def _end(response: Response) -> Response:
        ctx = g._get_current_object()  # type: ignore[attr-defined]
        rid = ctx.get("request_id")
        if rid:
            response.headers[HEADER] = rid
        if access_log and ctx.get("request_started") is not None:
            req = request._get_current_object()  # type: ignore[attr-defined]
            ms = (time.perf_counter() - ctx.request_started) * 1000
            query = f"?{req.query_string.decode(errors='replace')[:120]}" if req.query_string else ""
            log_access(req.method, req.path, query, response.status_code, ms)
        return response

    @app.teardown_request
    def _forget(_: BaseException | None) -> None:
        token = g._get_current_object().pop("request_id_token", None)  # type: ignore[attr-defined]
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another context (should not happen)
                REQUEST_ID.reset(token)
