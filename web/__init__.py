"""HTTP layer: create_app() builds the Flask app; blueprints are thin adapters over models/."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider

from config.bootstrap import Services, bootstrap
from config.logs import access_log_enabled
from config.settings import Settings
from models.db import db
from models.errors import ValidationError

API_PREFIX = "/api/v1"


class App(Flask):
    """Flask, except that `ensure_sync` remembers its answer per function.

    Flask asks `inspect.iscoroutinefunction` of every hook and view on every request (13 times
    a request here, ~17 µs of the ~60 µs /healthz added to a bare route: bench/request_profile.py).
    A function's kind never changes, so the answer is kept; an `async def` is still wrapped.

    Flask's own hook runners run the hooks: a copy of them that looked the request up once saved
    ~100 Python opcodes a request (2.7 % of /healthz, bench/request_profile.py), too little for
    wrk to tell apart on this machine (bench/results/rps_hooks.json), so Flask's internals are
    no longer copied here.
    """

    _SYNC_CACHE_MAX = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Any, Any] = {}

    def ensure_sync(self, func: Any) -> Any:
        """`func` itself for a plain function (remembered), Flask's wrapper for a coroutine function."""
        try:
            return self._sync[func]
        except KeyError:
            pass
        except TypeError:  # not hashable: ask every time
            return super().ensure_sync(func)
        wrapped = super().ensure_sync(func)
        if len(self._sync) < self._SYNC_CACHE_MAX:
            self._sync[func] = wrapped
        return wrapped


class SafeJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, except that a body nested deeply enough to exhaust the parser's
    recursion is rejected like any malformed body (a ValueError), not a 500."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON body is nested too deeply") from None


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: services from bootstrap, blueprints under /api/v1, problem+json errors."""
    from web import auth, errors, hot_paths, limits, metrics, queue_controls, requestlog
    from web.api import spec

    services = bootstrap(settings)
    app = App(__name__, static_folder=None)  # web/static is served by web/pages.py
    app.config["SETTINGS"] = services.settings
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.json = SafeJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    requestlog.install(app, access_log=access_log_enabled())  # first: every later hook's lines carry the id
    _attach_services(app, services)
    errors.register(app)
    auth.install(app, services.settings)  # before the limiter: no credentials, no count
    limits.init(app, services.settings)
    _register_blueprints(app)
    _install_request_hooks(app)
    metrics.install(app)
    queue_controls.install(app)
    spec.app = app  # spectree reads the routes from here; its own UI routes are not used
    hot_paths.install(app, access_log=access_log_enabled())  # last: every route and limit is known
    return app


def _attach_services(app: Flask, services: Services) -> None:
    """The process services and the Redis-backed domain objects the routes use, on app.extensions."""
    from models.prequeue import PreQueue
    from models.queue_controls import QueueControls
    from models.seat_pages import SeatPages

    s = services.settings
    app.extensions["services"] = services
    app.extensions["waiting_room"] = services.waiting_room()
    app.extensions["queue_controls"] = QueueControls(services.redis)
    app.extensions["prequeue"] = PreQueue(services.redis, waiting_ttl=s.waiting_ttl)
    app.extensions["catalogue_cache"] = cache = services.catalogue_cache()
    app.extensions["seat_pages"] = SeatPages(services.redis, cache, ttl_s=s.cache_seats_ttl)
    _warm(cache)


def _register_blueprints(app: Flask) -> None:
    """One blueprint per resource under /api/v1; the pages at the root."""
    from web import (
        admin,
        concerts,
        dev,
        docs,
        health,
        jobs,
        pages,
        payments,
        points,
        queue,
        queue_controls,
        reservations,
    )

    api = (health, queue, concerts, reservations, payments, jobs, points, admin, queue_controls, docs, dev)
    for module in api:
        app.register_blueprint(module.bp, url_prefix=API_PREFIX)
    app.register_blueprint(pages.bp)


def _install_request_hooks(app: Flask) -> None:
    """JSON bodies only; the database connection closed after every request."""

    @app.before_request
    def _json_bodies_only() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one lookup, not one per attribute
        if req.method in ("POST", "PUT", "PATCH") and req.content_length and not req.is_json:
            raise ValidationError("send the request body as application/json")

    @app.teardown_request
    def _close_db(_: BaseException | None) -> None:  # connections open lazily, on first query
        if not db.is_closed():
            db.close()


def _warm(cache: object) -> None:
    """Load the schedules of concerts starting within 7 days before serving (skipped if Redis/DB are down)."""
    from models.cache import CatalogueCache
    from models.concerts import concerts_starting_within

    assert isinstance(cache, CatalogueCache)
    log = logging.getLogger("web")
    try:
        with db.connection_context():
            loaded = cache.warm(concert_ids=concerts_starting_within(days=7))
        log.info("cache warm-up: %s concert(s) loaded", loaded)
    except Exception as exc:  # no schema yet, or a dependency down: serve anyway, reads fall back
        log.warning("cache warm-up skipped: %s", exc)
