"""A tiny HTTP client for e2e tests (stdlib only): JSON in, (status, headers, JSON) out."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from tests.support.identity import TEST_JWT_SECRET, Session, sign

# routes that take no identity (the admin ones carry ADMIN_TOKEN in a header the test sets)
PUBLIC_PREFIXES = ("/admin", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/dev/login")


class ApiClient:
    """Talk to a running service under /api/v1, signed in (tests.support.identity) as the user each
    request acts for; the service must verify with `secret` (AUTH_JWT_SECRET)."""

    def __init__(self, base: str, secret: str = TEST_JWT_SECRET) -> None:
        self.base = base.rstrip("/")
        self.secret = secret
        self.owners: dict[str, int] = {}  # queue token -> user, learnt from the answers
        self.logins: dict[int, str] = {}  # user -> access token from POST /dev/login
        self.session = Session(self.owners.get)

    def token_for(self, user_id: int) -> str:
        """The user's access token: from the dev login when the client signed in, else signed here."""
        return self.logins.get(user_id) or sign(user_id, secret=self.secret)

    def dev_login(self, user_id: int) -> str:
        """Sign in through POST /dev/login (AUTH_DEV_LOGIN=true); later calls for the user use it."""
        status, _, body = self.post("/dev/login", {"userId": user_id})
        assert status == 200, body
        self.logins[user_id] = str(body["accessToken"])
        self.session.act_as(user_id)
        return self.logins[user_id]

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 15
    ) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if not path.startswith(PUBLIC_PREFIXES):
            headers = self.session.sign_headers(path, headers, body, token_for=self.token_for)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                answer = resp.status, dict(resp.headers), _parse(raw, resp.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, dict(err.headers), _parse(raw, err.headers.get("Content-Type", ""))
        if isinstance(answer[2], dict) and "token" in answer[2] and "userId" in answer[2]:
            self.owners[str(answer[2]["token"])] = int(answer[2]["userId"])
        return answer

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.call("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.call("DELETE", path, **kw)

    def wait_ready(self, timeout: float = 40) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.get("/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.base} did not become healthy in {timeout} s")


def _parse(raw: bytes, content_type: str) -> Any:
    if "json" in content_type and raw:
        return json.loads(raw)
    return raw.decode(errors="replace")
