"""Flask-Limiter setup: per-user, per-token and per-IP limits kept in Redis (memory when embedded)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_qualified_name, get_remote_address

from config.settings import EMBEDDED, Settings
from models.errors import DomainError
from web.auth import identity
from web.gate import queue_token_header

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
    _only_on_limited_routes(app)


def _only_on_limited_routes(app: Flask) -> None:
    """Run Flask-Limiter's per-request hooks only on routes that carry a @limiter.limit.

    Flask-Limiter resolves and evaluates limits before every request, then looks for headers to
    add after it and resets its request state at teardown, even on a route with no limit: ~0.3 ms
    of CPU before the check was skipped, and still ~10 µs for the other two hooks, a sixth of what
    /healthz adds to a bare route (bench/request_profile.py). Its three hooks are swapped for
    ones that skip unlimited endpoints; the set is built on the first request, once every
    blueprint is registered.
    """
    check = limiter._check_request_limit
    before = app.before_request_funcs.setdefault(None, [])
    if check not in before:  # RATE_LIMIT_ENABLED=false: Flask-Limiter registers no hooks
        return
    limited: set[str] = set()

    def is_limited() -> bool:
        if not limited:
            limited.update(limited_endpoints(app))
            limited.add("")  # built, even when no route is limited
        return request._get_current_object().endpoint in limited  # type: ignore[attr-defined]

    def check_limited_route() -> None:
        if is_limited():
            check()

    before[before.index(check)] = check_limited_route
    after = app.after_request_funcs.setdefault(None, [])
    for i, hook in enumerate(after):
        if isinstance(hook, partial) and hook.args == (limiter,):  # partial(Limiter.__inject_headers, limiter)
            after[i] = _when(is_limited, _then(hook, only_our_retry_after))
    teardown = app.teardown_request_funcs.setdefault(None, [])
    for i, hook in enumerate(teardown):
        if getattr(hook, "__self__", None) is limiter:  # limiter.__release_context
            teardown[i] = _when(is_limited, hook)


def limited_endpoints(app: Flask) -> set[str]:
    """The endpoints whose views carry a @limiter.limit (once every blueprint is registered)."""
    marked = limiter._marked_for_limiting  # qualified names of the decorated views
    return {e for e, f in app.view_functions.items() if get_qualified_name(f) in marked}


def _when(condition: Callable[[], bool], hook: Callable[..., Any]) -> Callable[..., Any]:
    """`hook`, run only when `condition()` holds; otherwise its first argument passes through."""

    def guarded(arg: Any = None) -> Any:
        return hook(arg) if condition() else arg

    return guarded


def only_our_retry_after(response: Response) -> Response:
    """Keep `Retry-After` exactly as the problem set it: drop the one Flask-Limiter adds to every
    limited answer (a 201 must not say "come back later") and undo its rewrite of ours."""
    ours = getattr(response, "problem_retry_after", None)
    if ours is None:
        response.headers.pop("Retry-After", None)
    else:
        response.headers["Retry-After"] = str(ours)
    return response


def _then(hook: Callable[[Any], Any], then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`hook`, then `then` on what it returned."""

    def both(response: Any) -> Any:
        return then(hook(response))

    return both


def _queue_token() -> str:
    try:
        return queue_token_header()
    except DomainError:  # absent or malformed: "" skips the limit; the route refuses it (401), uncounted
        return ""


def token_key() -> str:
    """Rate-limit key of the queue token header, normalised exactly as the gate reads it."""
    token = _queue_token()
    return f"token:{token}" if token else ""


def job_key() -> str:
    """Rate-limit key of job creation (holds, cancels, payments): the signed-in user's one budget."""
    return f"jobs:{identity()}" if _queue_token() else ""


def identity_job_key() -> str:
    """job_key() for a job route that needs no queue token (a refund): the same budget, keyed by the
    identity alone (the identity hook has already refused a request without one). job_key() gave
    "" there, which Flask-Limiter skips (with an ERROR line): refunds had no limit at all."""
    return f"jobs:{identity()}"
