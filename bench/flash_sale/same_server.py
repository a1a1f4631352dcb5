"""The service with the bare Flask app mounted beside it in the same WSGI callable, for the flash sale only.

`/floor/bare` is bench/bare_app.py's route, served by the service's own gunicorn workers, threads
and GIL: a fan's GET of it waits in the same worker as that fan's queue requests, on the same
kept-alive connection. Every other path is the service, untouched (werkzeug's
DispatcherMiddleware: one prefix lookup a request).

    gunicorn -c config/gunicorn.py "bench.flash_sale.same_server:create_app()"   (bench/flash_sale/Procfile)
"""

from __future__ import annotations

from typing import Any

FLOOR_PREFIX = "/floor"


def create_app() -> Any:
    """web.create_app() with bench.bare_app mounted at /floor."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from bench.bare_app import app as bare
    from web import create_app as service

    return DispatcherMiddleware(service(), {FLOOR_PREFIX: bare})
