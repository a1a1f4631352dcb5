"""Flask-Limiter setup: per-user, per-token and per-IP limits kept in Redis (memory when embedded)."""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from config.settings import EMBEDDED, Settings
from models.db import MAX_ID

limiter = Limiter(get_remote_address, headers_enabled=True, strategy="fixed-window")


def init(app: Flask, settings: Settings) -> None:
    """Bind the limiter to an app with the configured storage."""
    app.config["RATELIMIT_ENABLED"] = settings.rate_limit_enabled
    app.config["RATELIMIT_STORAGE_URI"] = "memory://" if settings.redis_url == EMBEDDED else settings.redis_url
    app.config["RATELIMIT_KEY_PREFIX"] = "rl"
    app.config["RATELIMIT_SWALLOW_ERRORS"] = True  # Redis down must not turn into 500s here
    if settings.redis_url != EMBEDDED:  # a frozen Redis must not hang the limited routes
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    limiter.init_app(app)  # its headers include Retry-After on every answer: web.errors keeps only ours


def user_key() -> str:
    """Rate-limit key of the user named in a JSON body (the caller's IP when the body names no valid user)."""
    body = request.get_json(silent=True)
    user = body.get("userId") if isinstance(body, dict) else None
    if isinstance(user, int) and not isinstance(user, bool) and 1 <= user <= MAX_ID:
        return f"user:{user}"
    return f"ip:{get_remote_address()}"


def token_key() -> str:
    """Rate-limit key of the queue token header."""
    return f"token:{request.headers.get('X-Queue-Token', '')[:64]}"


def job_key() -> str:
    """Rate-limit key of job creation: the queue token (one user)."""
    return f"jobs:{request.headers.get('X-Queue-Token', '')[:64]}"
