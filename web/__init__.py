"""HTTP layer: create_app() builds the Flask app; blueprints are thin adapters over models/."""

from __future__ import annotations

import logging

from flask import Flask, redirect
from werkzeug.wrappers import Response as WResponse

from config.bootstrap import bootstrap
from config.settings import Settings
from models.db import db

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: services from bootstrap, blueprints under /api/v1, problem+json errors."""
    from web import admin, concerts, docs, errors, health, metrics, points
    from web.api import spec

    services = bootstrap(settings)
    app = Flask(__name__)
    app.config["SETTINGS"] = services.settings
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.extensions["services"] = services
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    for blueprint in (health.bp, concerts.bp, points.bp, admin.bp, docs.bp):
        app.register_blueprint(blueprint, url_prefix=API_PREFIX)

    @app.get("/")
    def index() -> WResponse:
        return redirect(f"{API_PREFIX}/docs")

    @app.before_request
    def _open_db() -> None:
        db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_db(_: BaseException | None) -> None:
        if not db.is_closed():
            db.close()

    errors.register(app)
    metrics.install(app)
    spec.app = app  # spectree reads the routes from here; its own UI routes are not used
    return app
