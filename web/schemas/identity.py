"""Identity bodies: the development login."""

from __future__ import annotations

from typing import Literal

from web.schemas import Body, Out, RequestId


class DevLoginIn(Body):
    """Sign in as any user (development only: AUTH_DEV_LOGIN=true)."""

    userId: RequestId


class DevLoginOut(Out):
    """A bearer token for `Authorization: Bearer <accessToken>`."""

    accessToken: str
    tokenType: Literal["Bearer"]
    expiresIn: int
