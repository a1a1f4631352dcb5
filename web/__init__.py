"""HTTP layer: create_app() builds the Flask app; blueprints are thin adapters over models/."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider

from config.bootstrap import bootstrap
from config.settings import Settings
from models.db import db
from models.errors import ValidationError

API_PREFIX = "/api/v1"


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
    from models.cache import CatalogueCache
    from models.prequeue import PreQueue
    from models.queue_controls import QueueControls
    from models.waiting_room import WaitingRoom
    from web import (
        admin,
        concerts,
        docs,
        errors,
        health,
        jobs,
        limits,
        metrics,
        pages,
        payments,
        points,
        queue,
        queue_controls,
        reservations,
    )
    from web.api import spec

    services = bootstrap(settings)
    app = Flask(__name__, static_folder=None)  # web/static is served by web/pages.py
    app.config["SETTINGS"] = services.settings
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.extensions["services"] = services
    app.extensions["waiting_room"] = WaitingRoom.for_settings(services.redis, services.settings)
    app.extensions["queue_controls"] = QueueControls(services.redis)
    app.extensions["prequeue"] = PreQueue(services.redis, waiting_ttl=services.settings.waiting_ttl)
    errors.register(app)  # before the limiter: its after_request must see the limiter's headers
    limits.init(app, services.settings)
    s = services.settings
    app.extensions["catalogue_cache"] = cache = CatalogueCache(
        services.redis,
        schedule_ttl=s.cache_schedule_ttl,
        schedule_jitter=s.cache_schedule_jitter,
        seats_ttl=s.cache_seats_ttl,
        seats_jitter=s.cache_seats_jitter,
    )
    _warm(cache)
    app.json = SafeJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    for blueprint in (
        health.bp,
        queue.bp,
        concerts.bp,
        reservations.bp,
        payments.bp,
        jobs.bp,
        points.bp,
        admin.bp,
        queue_controls.bp,
        docs.bp,
    ):
        app.register_blueprint(blueprint, url_prefix=API_PREFIX)

    @app.before_request
    def _json_bodies_only() -> None:
        if request.method in ("POST", "PUT", "PATCH") and request.content_length and not request.is_json:
            raise ValidationError("send the request body as application/json")

    @app.teardown_request
    def _close_db(_: BaseException | None) -> None:  # connections open lazily, on first query
        if not db.is_closed():
            db.close()

    app.register_blueprint(pages.bp)
    metrics.install(app)
    queue_controls.install(app)
    spec.app = app  # spectree reads the routes from here; its own UI routes are not used
    return app


def _warm(cache: object) -> None:
    """Load the schedules of concerts starting within 7 days before serving (skipped if Redis/DB are down)."""
    from models.cache import CatalogueCache, concerts_starting_within

    assert isinstance(cache, CatalogueCache)
    log = logging.getLogger("web")
    try:
        with db.connection_context():
            loaded = cache.warm(concert_ids=concerts_starting_within(days=7))
        log.info("cache warm-up: %s concert(s) loaded", loaded)
    except Exception as exc:  # no schema yet, or a dependency down: serve anyway, reads fall back
        log.warning("cache warm-up skipped: %s", exc)
