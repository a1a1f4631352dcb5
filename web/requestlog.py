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
import re
import secrets
import time

from flask import Flask, Response, g, request

from config.logs import REQUEST_ID

HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
access = logging.getLogger("access")


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is a sane token, else a fresh one."""
    if header and _SANE.fullmatch(header):
        return header
    return secrets.token_hex(8)


def install(app: Flask, *, access_log: bool) -> None:
    """Give each request an id (in and out) and, with `access_log`, one log line when it ends."""

    @app.before_request
    def _begin() -> None:
        g.request_started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(HEADER))
        g.request_id_token = REQUEST_ID.set(g.request_id)

    @app.after_request
    def _end(response: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            response.headers[HEADER] = rid
        if access_log and g.get("request_started") is not None:
            ms = (time.perf_counter() - g.request_started) * 1000
            query = f"?{request.query_string.decode(errors='replace')[:120]}" if request.query_string else ""
            access.info("%s %s%s %s %.1fms", request.method, request.path, query, response.status_code, ms)
        return response

    @app.teardown_request
    def _forget(_: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another context (should not happen)
                REQUEST_ID.reset(token)
