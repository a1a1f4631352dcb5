"""Request and response schemas of the waiting room (web/queue.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from web.schemas import Body, Out, RequestId, UtcDateTime


class TokenIn(Body):
    """Join a concert's queue as the signed-in user (`userId`, if sent, must be that user)."""

    concertId: RequestId
    userId: RequestId | None = None


class TokenOut(Out):
    """A queue token's state; rank is 1-based among WAITING tokens, 0 when ACTIVE, null when PREQUEUED.

    Far back in the line (beyond the active limit + 1,000) or once sold out, a web process may
    answer a poll from what Redis last told it (models/poll_memo.py): the rank then counts every
    fan who left since as still ahead, so it is never better than the true place, and pollAfterMs
    is paced as if every one had been ahead (never later than an exact read would say).

    `entrant` (fair-start concerts only) is sha256 of the user id: the fan's line in the published draw."""

    token: str
    userId: int
    concertId: int
    status: Literal["PREQUEUED", "WAITING", "ACTIVE"]
    rank: int | None
    estimatedWaitSeconds: int
    expiresAt: UtcDateTime
    soldOut: bool
    pollAfterMs: int = Field(description="poll again no sooner; 0 when ACTIVE; an early poll is 429")
    notice: str | None = None
    entrant: str | None = None
