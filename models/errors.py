"""One tree of domain errors; web/errors.py maps each code to an HTTP status, once."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Raised when a domain rule refuses a request; `code` is the machine-readable reason."""

    code = "DOMAIN_ERROR"
    title = "Request refused"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class ValidationError(DomainError):
    """Raised when input is malformed or out of its allowed range."""

    code = "VALIDATION_ERROR"
    title = "Invalid request"


class TokenMissing(DomainError):
    """Raised when a queue-token-gated call carries no X-Queue-Token header."""

    code = "TOKEN_MISSING"
    title = "Queue token missing"


class TokenInvalid(DomainError):
    """Raised when a queue token is unknown or expired."""

    code = "TOKEN_INVALID"
    title = "Queue token invalid"


class TokenNotActive(DomainError):
    """Raised when a queue token is still waiting (not yet admitted)."""

    code = "TOKEN_NOT_ACTIVE"
    title = "Queue token not active"


class Forbidden(DomainError):
    """Raised when the caller may not act on the resource (other user, other concert, bad admin token)."""

    code = "FORBIDDEN"
    title = "Forbidden"


class NotFound(DomainError):
    """Raised when a concert, schedule, seat, reservation, payment or job does not exist."""

    code = "NOT_FOUND"
    title = "Not found"


class SeatNotAvailable(DomainError):
    """Raised when a seat to hold is already HELD or RESERVED."""

    code = "SEAT_NOT_AVAILABLE"
    title = "Seat not available"


class ReservationNotHeld(DomainError):
    """Raised when a reservation to pay or cancel is no longer HELD."""

    code = "RESERVATION_NOT_HELD"
    title = "Reservation not held"


class ReservationExpired(DomainError):
    """Raised when a held reservation passed its expiry time."""

    code = "RESERVATION_EXPIRED"
    title = "Reservation expired"


class AlreadyPaid(DomainError):
    """Raised when a reservation already has a payment."""

    code = "ALREADY_PAID"
    title = "Already paid"


class InsufficientPoints(DomainError):
    """Raised when a wallet balance is lower than the amount to pay."""

    code = "INSUFFICIENT_POINTS"
    title = "Insufficient points"


class ConcurrentUpdate(DomainError):
    """Raised when an optimistic compare-and-set kept losing to concurrent writers."""

    code = "CONCURRENT_UPDATE"
    title = "Concurrent update, retry"

    def __init__(self, detail: str = "", retry_after: int = 1) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class IdempotencyKeyReused(DomainError):
    """Raised when an Idempotency-Key is reused with a different request body."""

    code = "IDEMPOTENCY_KEY_REUSED"
    title = "Idempotency key reused"


class LimitExceeded(DomainError):
    """Raised when a charge, balance or hold count would exceed its configured limit."""

    code = "LIMIT_EXCEEDED"
    title = "Limit exceeded"


class RateLimited(DomainError):
    """Raised when a caller exceeds a request rate limit."""

    code = "RATE_LIMITED"
    title = "Too many requests"

    def __init__(self, detail: str = "", retry_after: int = 1) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """Raised when a backing service (database, Redis, broker) cannot be reached."""

    code = "UNAVAILABLE"
    title = "Service unavailable"

    def __init__(self, detail: str = "", retry_after: int = 2) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class SaleNotOpen(DomainError):
    """Raised when a fan joins a fair-start concert's queue before its pre-queue window opens."""

    code = "SALE_NOT_OPEN"
    title = "Sale not open yet"
