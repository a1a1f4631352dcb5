"""The one place where domain and HTTP errors become RFC 9457 problem+json responses."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from models import errors as e

log = logging.getLogger(__name__)

STATUS: dict[type[e.DomainError], int] = {
    e.ValidationError: 400,
    e.TokenMissing: 401,
    e.TokenInvalid: 401,
    e.TokenNotActive: 403,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.SeatNotAvailable: 409,
    e.ReservationNotHeld: 409,
    e.ReservationExpired: 409,
    e.AlreadyPaid: 409,
    e.InsufficientPoints: 409,
    e.ConcurrentUpdate: 409,
    e.SaleNotOpen: 409,
    e.IdempotencyKeyReused: 422,
    e.LimitExceeded: 422,
    e.RateLimited: 429,
    e.Unavailable: 503,
}

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


CODE_STATUS = {cls.code: status for cls, status in STATUS.items()}


def status_of_code(code: str) -> int:
    """The HTTP status of a domain error code (a stored job problem)."""
    return CODE_STATUS.get(code, 400)


def status_of(error: e.DomainError) -> int:
    """The HTTP status of a domain error (its nearest mapped class)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 400


def problem_dict(error: e.DomainError) -> dict[str, object]:
    """A domain error as a problem object (also stored as a failed job's `error`)."""
    status = status_of(error)
    body: dict[str, object] = {
        "type": f"/problems/{error.code.lower().replace('_', '-')}",
        "title": error.title,
        "status": status,
        "detail": error.detail,
        "code": error.code,
    }
    if error.extra.get("errors"):
        body["errors"] = error.extra["errors"]
    return body


def problem(status: int, code: str, title: str, detail: str, **extra: object) -> Response:
    """Build a problem+json response."""
    body: dict[str, object] = {
        "type": f"/problems/{code.lower().replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.path,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def domain_response(error: e.DomainError) -> Response:
    """The problem+json response of a domain error, with Retry-After where it applies."""
    body = problem_dict(error)
    response = problem(int(body["status"]), error.code, error.title, error.detail, errors=body.get("errors"))  # type: ignore[call-overload]
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _retry_after(error: HTTPException) -> int:
    """Seconds until a Flask-Limiter window resets (at least 1)."""
    import time

    from web.limits import limiter

    current = limiter.current_limit
    if current is not None:
        return max(1, int(current.reset_at - time.time()))
    limit = getattr(error, "limit", None)
    return max(1, int(limit.limit.get_expiry())) if limit is not None else 1


def register(app: Flask) -> None:
    """Install the handlers on an app."""

    @app.errorhandler(e.DomainError)
    def _domain(error: e.DomainError) -> Response:
        return domain_response(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        code = HTTP_CODES.get(status, "HTTP_ERROR")
        response = problem(status, code, error.name, error.description or error.name)
        if status == 429:
            response.headers["Retry-After"] = str(_retry_after(error))
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        from web.health import unavailable_error

        mapped = unavailable_error(error)
        if mapped is not None:
            log.warning("backing service unavailable on %s %s: %s", request.method, request.path, type(error).__name__)
            return domain_response(mapped)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(
            500, "INTERNAL_ERROR", "Internal Server Error", "an unexpected error occurred; it has been logged"
        )
