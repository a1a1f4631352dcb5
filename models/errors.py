"""One tree of domain errors, and the one code table that turns any of them into a problem.

`CODES` gives each machine-readable code its HTTP status, its default title and whether an
answer carrying it says when to retry (`Retry-After`: only 409 CONCURRENT_UPDATE, 429 and 503,
SPEC §3). `problem_of(error)` is the one way an error becomes an RFC 9457 problem object: the
HTTP layer (web/errors.py) answers with it and the job store (workers/jobs.py) records it as a
failed job's `error`. The table lives here, at the bottom, because both web/ and workers/ read
it and neither may import the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Code:
    """What a problem code means over HTTP: its status, default title and Retry-After seconds."""

    status: int
    title: str
    retry_after: int | None = None


CODES: dict[str, Code] = {
    "VALIDATION_ERROR": Code(400, "Invalid request"),
    "AUTH_REQUIRED": Code(401, "Authentication required"),
    "AUTH_INVALID": Code(401, "Authentication invalid"),
    "TOKEN_MISSING": Code(401, "Queue token missing"),
    "TOKEN_INVALID": Code(401, "Queue token invalid"),
    "TOKEN_NOT_ACTIVE": Code(403, "Queue token not active"),
    "FORBIDDEN": Code(403, "Forbidden"),
    "NOT_FOUND": Code(404, "Not found"),
    "METHOD_NOT_ALLOWED": Code(405, "Method not allowed"),
    "SEAT_NOT_AVAILABLE": Code(409, "Seat not available"),
    "RESERVATION_NOT_HELD": Code(409, "Reservation not held"),
    "RESERVATION_EXPIRED": Code(409, "Reservation expired"),
    "ALREADY_PAID": Code(409, "Already paid"),
    "INSUFFICIENT_POINTS": Code(409, "Insufficient points"),
    "CONCURRENT_UPDATE": Code(409, "Concurrent update, retry", retry_after=1),
    "EXTENSION_LIMIT": Code(409, "Extension limit reached"),
    "REFUND_NOT_ALLOWED": Code(409, "Refund not allowed"),
    "SALE_NOT_OPEN": Code(409, "Sale not open yet"),
    "PAYLOAD_TOO_LARGE": Code(413, "Payload too large"),
    "UNSUPPORTED_MEDIA_TYPE": Code(415, "Unsupported media type"),
    "IDEMPOTENCY_KEY_REUSED": Code(422, "Idempotency key reused"),
    "LIMIT_EXCEEDED": Code(422, "Limit exceeded"),
    "RATE_LIMITED": Code(429, "Too many requests", retry_after=1),
    "INTERNAL_ERROR": Code(500, "Internal server error"),
    "UNAVAILABLE": Code(503, "Service unavailable", retry_after=2),
}
UNKNOWN = Code(400, "Request refused")  # a code this process does not know (a job stored by a newer release)


def problem(code: str, detail: str = "", *, title: str | None = None, **extra: Any) -> dict[str, Any]:
    """The problem object of a code: type, title, status, detail, code, then the non-None extras."""
    meaning = CODES.get(code, UNKNOWN)
    body: dict[str, Any] = {
        "type": f"/problems/{code.lower().replace('_', '-')}",
        "title": title or meaning.title,
        "status": meaning.status,
        "detail": detail or title or meaning.title,
        "code": code,
    }
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def problem_of(error: DomainError) -> dict[str, Any]:
    """A domain error as a problem object (an HTTP answer's body; a failed job's stored `error`)."""
    return problem(error.code, error.detail, title=error.title, errors=error.extra.get("errors") or None)


def retry_after_of(code: str, seconds: int | None = None) -> int | None:
    """The Retry-After seconds an answer with this code carries (`seconds` overrides the table), or None."""
    default = CODES.get(code, UNKNOWN).retry_after
    return None if default is None else (seconds or default)


class DomainError(Exception):
    """Raised when a domain rule refuses a request; `code` is the machine-readable reason."""

    code = "DOMAIN_ERROR"
    title = "Request refused"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code not in CODES:
            raise TypeError(f"{cls.__name__}.code {cls.code!r} is not in models.errors.CODES: add it there")
        if "title" not in cls.__dict__:
            cls.title = CODES[cls.code].title

    def __init__(self, detail: str = "", *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.retry_after = retry_after_of(self.code, retry_after)


class ValidationError(DomainError):
    """Raised when input is malformed or out of its allowed range."""

    code = "VALIDATION_ERROR"


class AuthRequired(DomainError):
    """Raised when a user-scoped call carries no `Authorization: Bearer` identity."""

    code = "AUTH_REQUIRED"


class AuthInvalid(DomainError):
    """Raised when a bearer token's signature, expiry, issuer, audience or subject is not valid."""

    code = "AUTH_INVALID"


class TokenMissing(DomainError):
    """Raised when a queue-token-gated call carries no X-Queue-Token header."""

    code = "TOKEN_MISSING"


class TokenInvalid(DomainError):
    """Raised when a queue token is unknown or expired."""

    code = "TOKEN_INVALID"


class AdminTokenMissing(TokenMissing):
    """Raised when an admin call carries no `Authorization: Bearer <ADMIN_TOKEN>` header."""

    title = "Admin token missing"


class AdminTokenInvalid(TokenInvalid):
    """Raised when an admin call's bearer token is not ADMIN_TOKEN."""

    title = "Admin token invalid"


class TokenNotActive(DomainError):
    """Raised when a queue token is still waiting (not yet admitted)."""

    code = "TOKEN_NOT_ACTIVE"


class Forbidden(DomainError):
    """Raised when the caller may not act on the resource (other user, other concert)."""

    code = "FORBIDDEN"


class AdminDisabled(Forbidden):
    """Raised when an admin route is called while ADMIN_TOKEN is unset (admin is closed to everyone)."""

    title = "Admin routes disabled"


class NotFound(DomainError):
    """Raised when a concert, schedule, seat, reservation, payment or job does not exist."""

    code = "NOT_FOUND"


class SeatNotAvailable(DomainError):
    """Raised when a seat to hold is already HELD or RESERVED."""

    code = "SEAT_NOT_AVAILABLE"


class ReservationNotHeld(DomainError):
    """Raised when a reservation to pay or cancel is no longer HELD."""

    code = "RESERVATION_NOT_HELD"


class ReservationExpired(DomainError):
    """Raised when a held reservation passed its expiry time."""

    code = "RESERVATION_EXPIRED"


class AlreadyPaid(DomainError):
    """Raised when a reservation already has a payment."""

    code = "ALREADY_PAID"


class InsufficientPoints(DomainError):
    """Raised when a wallet balance is lower than the amount to pay."""

    code = "INSUFFICIENT_POINTS"


class ConcurrentUpdate(DomainError):
    """Raised when an optimistic compare-and-set kept losing to concurrent writers."""

    code = "CONCURRENT_UPDATE"


class IdempotencyKeyReused(DomainError):
    """Raised when an Idempotency-Key is reused with a different request body."""

    code = "IDEMPOTENCY_KEY_REUSED"


class LimitExceeded(DomainError):
    """Raised when a charge, balance or hold count would exceed its configured limit."""

    code = "LIMIT_EXCEEDED"


class RateLimited(DomainError):
    """Raised when a caller exceeds a request rate limit."""

    code = "RATE_LIMITED"


class Unavailable(DomainError):
    """Raised when a backing service (database, Redis, broker) cannot be reached."""

    code = "UNAVAILABLE"


class SaleNotOpen(DomainError):
    """Raised when a fan joins a fair-start concert's queue before its pre-queue window opens."""

    code = "SALE_NOT_OPEN"


class RefundNotAllowed(DomainError):
    """Raised when a payment cannot be refunded: already refunded, or too close to the show."""

    code = "REFUND_NOT_ALLOWED"


class ExtensionLimit(DomainError):
    """Raised when a hold was already extended HOLD_MAX_EXTENSIONS times."""

    code = "EXTENSION_LIMIT"
