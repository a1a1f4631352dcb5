"""The identity in tests: tokens signed with the test secret, and the rule by which a test
client signs each request as the user it acts for, as a signed-in app does.

A request that sets `Authorization` itself (a chosen token, an admin token, or "" for none) is
sent as it is. Otherwise it is signed as: the body's `userId`, else the path's `/users/<id>/`,
else the owner of its `X-Queue-Token`, else the user this client last acted for (a session),
else DEFAULT_USER. Tests of the identity rules set the header explicitly.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from flask.testing import FlaskClient

from config.settings import Settings

TEST_JWT_SECRET = "test-jwt-secret-for-the-test-suite-only-0123456789"
DEFAULT_USER = 1
MAX_USER_ID = 2**63 - 1
_USERS_PATH = re.compile(r"/users/([0-9]{1,19})(?:\.0+)?(?:/|$)")


def with_identity(settings: Settings) -> Settings:
    """`settings` with the test secret as AUTH_JWT_SECRET when it names no key (a web app needs one)."""
    if settings.auth_jwt_secret or settings.auth_jwt_public_key_file or settings.auth_jwks_url:
        return settings
    return settings.with_(auth_jwt_secret=TEST_JWT_SECRET)


def sign(user_id: int | str, *, secret: str = TEST_JWT_SECRET, ttl: int = 3600, **claims: Any) -> str:
    """An HS256 token for `user_id` (sub as a decimal string unless given as something else)."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": str(user_id) if isinstance(user_id, int) else user_id, "iat": now}
    payload["exp"] = now + ttl
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def bearer(user_id: int | str, **kwargs: Any) -> dict[str, str]:
    """The `Authorization` header of a signed-in `user_id`."""
    return {"Authorization": f"Bearer {sign(user_id, **kwargs)}"}


def _valid(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():  # JSON Schema's integer admits 4.0
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_USER_ID:
        return value
    return None


class Session:
    """Which user a client acts for, per thread (a client may be shared by a test's threads)."""

    def __init__(self, owner_of_token: Callable[[str], int | None]) -> None:
        self.owner_of_token = owner_of_token
        self._local = threading.local()

    def user_for(self, path: str, headers: Mapping[str, str], body: Any) -> int:
        """The user a request acts for (see the module docstring), remembered for the next one."""
        token = str(headers.get("X-Queue-Token") or "").strip()
        match = _USERS_PATH.search(path)
        user = (
            (_valid(body.get("userId")) if isinstance(body, dict) else None)
            or (_valid(int(match.group(1))) if match else None)
            or (self.owner_of_token(token) if token else None)
            or getattr(self._local, "user", None)
            or DEFAULT_USER
        )
        self._local.user = user
        return user

    def act_as(self, user_id: int) -> None:
        """Make `user_id` this thread's session user (after signing in as them)."""
        self._local.user = user_id

    def sign_headers(
        self, path: str, headers: Any, body: Any, token_for: Callable[[int], str] = sign
    ) -> dict[str, str]:
        """`headers` (a mapping, a list of pairs or None) with `Authorization` added unless present."""
        merged = dict(headers.items() if hasattr(headers, "items") else headers or [])
        if not any(key.lower() == "authorization" for key in merged):
            merged["Authorization"] = f"Bearer {token_for(self.user_for(path, merged, body))}"
        return merged


class IdentityClient(FlaskClient):
    """A Flask test client that sends the bearer identity of the user each request acts for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        room = self.application.extensions.get("waiting_room")

        def owner(token: str) -> int | None:
            try:
                return room.owner(token=token) if room is not None else None
            except Exception:  # Redis down (an outage test): the session's user then
                return None

        self.session = Session(owner)

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str) and self._needs_identity(kwargs.get("method", "GET"), args[0]):
            kwargs["headers"] = self.session.sign_headers(args[0], kwargs.get("headers"), kwargs.get("json"))
        return super().open(*args, **kwargs)

    def _needs_identity(self, method: str, path: str) -> bool:
        """True for a route that web/auth.py guards (public routes keep their own Authorization)."""
        from werkzeug.exceptions import HTTPException

        from web.auth import is_public

        try:
            rule, _ = self.application.url_map.bind("localhost").match(
                path.split("?")[0], method=method, return_rule=True
            )
        except HTTPException:
            return False
        return not is_public(self.application, str(rule.endpoint), rule.rule)
