"""A tiny HTTP client for e2e tests (stdlib only): JSON in, (status, headers, JSON) out."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class ApiClient:
    """Talk to a running service under /api/v1."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 15
    ) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, dict(resp.headers), _parse(raw, resp.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, dict(err.headers), _parse(raw, err.headers.get("Content-Type", ""))

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
