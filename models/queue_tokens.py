"""Queue tokens: what a token is (`<concertId>.<22 url-safe chars>`) and how the API describes one.

models/waiting_room.py issues, polls and admits them in Redis; this module only names and
describes them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.errors import TokenInvalid


@dataclass(frozen=True)
class QueueToken:
    """A token's state as the API shows it."""

    token: str
    user_id: int
    concert_id: int
    status: str
    rank: int
    estimated_wait_seconds: int
    expires_at_ms: int
    sold_out: bool
    poll_after_ms: int = 0
    created: bool = False


TOKEN_BYTES = 16  # 128 random bits


def new_token_for(concert_id: int) -> str:
    """A fresh queue token: `<concertId>.<22 url-safe chars>`, 128 random bits from `secrets` (the OS CSPRNG).

    The concert id in clear only routes the token to its concert's keys; it grants nothing: the
    token is valid only while its hash exists in Redis, and that hash names its user and concert.
    """
    return f"{concert_id}.{secrets.token_urlsafe(TOKEN_BYTES)}"


# `<concertId>.<url-safe base64>`: nothing else is a token (no spaces, no Unicode look-alikes)
TOKEN_FORMAT = re.compile(r"([0-9]{1,19})\.[A-Za-z0-9_-]{16,44}")


def fingerprint(token: str) -> str:
    """A queue token's fingerprint for events and logs: SHA-256 hex, never the token itself."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def concert_of_token(token: str) -> int:
    """The concert id a token names, or TokenInvalid for a malformed token."""
    match = TOKEN_FORMAT.fullmatch(token)
    if match is None:
        raise TokenInvalid("the queue token is malformed")
    return int(match.group(1))


def token_of_reply(token: str, described: Sequence[Any], *, created: bool) -> QueueToken:
    """A QueueToken from a script's reply {user, concert, status, rank, expires, soldout, wait s, pollAfterMs}.

    The wait estimate is rank ÷ the measured admission rate: the admissions of the last minute
    over the time since the oldest of them (at least 1 s), so at the start of a sale 200
    admissions in 2 s are 100/s, not 3.3/s; with no admission yet, slots turn over once per
    ACTIVE_TTL. pollAfterMs is a quarter of that wait, between 1 s and POLL_MAX_INTERVAL.
    """
    user, concert, status, rank, expires, sold_out, wait_s, after = described  # int() takes str and bytes
    return QueueToken(
        token=token,
        user_id=int(user),
        concert_id=int(concert),
        status=_text(status),
        rank=int(rank),
        estimated_wait_seconds=int(wait_s),
        expires_at_ms=int(float(expires)),
        sold_out=_text(sold_out) == "1",
        poll_after_ms=int(after),
        created=created,
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
