"""The one place where domain and HTTP errors become RFC 9457 problem+json responses.

The body comes from `models.errors.problem` / `problem_of` (the one code table, shared with the
job store); this module only adds the request path (`instance`) and the headers. `Retry-After`
is set from the table alone: a response without a table value never carries one, even when
Flask-Limiter would add its own (SPEC §3: only 409 CONCURRENT_UPDATE, 429 and 503).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from models import errors as e

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "TOKEN_MISSING",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def problem_response(body: dict[str, Any], *, retry_after: int | None = None, **extra: Any) -> Response:
    """A problem object as an application/problem+json response (`instance` = the request path)."""
    body = {**body, "instance": request.path, **{k: v for k, v in extra.items() if v is not None}}
    response = jsonify(_ordered(body))
    response.status_code = int(body["status"])
    response.mimetype = "application/problem+json"
    seconds = e.retry_after_of(str(body["code"]), retry_after)
    if seconds is not None:
        response.headers["Retry-After"] = str(seconds)
    response.problem_retry_after = seconds  # type: ignore[attr-defined]  # (not werkzeug's retry_after)
    return response


def _ordered(body: dict[str, Any]) -> dict[str, Any]:
    """type, title, status, detail, code, instance first; the rest (errors, jobId) after."""
    head = ("type", "title", "status", "detail", "code", "instance")
    return {**{k: body[k] for k in head if k in body}, **{k: v for k, v in body.items() if k not in head}}


# RFC 6750: a 401 of the identity names the scheme the client should use
CHALLENGE = {"AUTH_REQUIRED": "Bearer", "AUTH_INVALID": 'Bearer error="invalid_token"'}


def domain_response(error: e.DomainError) -> Response:
    """The problem+json response of a domain error, with Retry-After where the code table says
    and the bearer challenge on an identity's 401."""
    response = problem_response(e.problem_of(error), retry_after=error.retry_after)
    if error.code in CHALLENGE:
        response.headers["WWW-Authenticate"] = CHALLENGE[error.code]
    return response


def _limiter_retry_after(error: HTTPException) -> int:
    """Seconds until a Flask-Limiter window resets (at least 1)."""
    from web.limits import limiter

    current = limiter.current_limit
    if current is not None:
        return max(1, int(current.reset_at - time.time()))
    limit = getattr(error, "limit", None)
    return max(1, int(limit.limit.get_expiry())) if limit is not None else 1


def http_response(error: HTTPException) -> Response:
    """A werkzeug/Flask HTTP error (404 route, 405, 413, Flask-Limiter's 429, ...) as a problem."""
    status = error.code or 500
    code = HTTP_CODES.get(status)
    if code is None:  # a status the table does not name: keep werkzeug's own words
        body = {**e.problem("HTTP_ERROR", error.description or error.name, title=error.name), "status": status}
        return problem_response(body)
    retry_after = _limiter_retry_after(error) if status == 429 else None
    response = problem_response(e.problem(code, error.description or error.name), retry_after=retry_after)
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def _malformed_body(error: Exception) -> bool:
    """gunicorn raises its parse errors (ChunkMissingTerminator, InvalidChunkSize, NoMoreData) while the
    app reads a chunked body: the client's fault, a 400, never a 500."""
    try:
        from gunicorn.http.errors import NoMoreData, ParseException
    except ImportError:  # pragma: no cover - gunicorn is a runtime dependency
        return False
    return isinstance(error, (ParseException, NoMoreData))


def unexpected_response(error: Exception) -> Response:
    """A lost backing service is 503 UNAVAILABLE; anything else is a logged 500 without a traceback."""
    from web.health import unavailable_error

    if _malformed_body(error):
        return domain_response(e.ValidationError("the request body is malformed (a broken chunked encoding)"))
    mapped = unavailable_error(error)
    if mapped is not None:
        log.warning("backing service unavailable on %s %s: %s", request.method, request.path, type(error).__name__)
        return domain_response(mapped)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem_response(e.problem("INTERNAL_ERROR", "an unexpected error occurred; it has been logged"))


def register(app: Flask) -> None:
    """Install the handlers on an app (web/limits.py keeps Flask-Limiter's Retry-After off the answers)."""
    app.register_error_handler(e.DomainError, domain_response)
    app.register_error_handler(HTTPException, http_response)
    app.register_error_handler(Exception, unexpected_response)
