"""The pages: `/` for fans, `/admin` for the operator (Jinja templates, plain CSS and small vanilla JS).

Everything is served from this origin: no build step, nothing from the internet. Every page
carries a strict Content-Security-Policy (scripts and styles from 'self' only, no inline
script). Assets are addressed as `/static/<file>?v=<content hash>`: a versioned URL is cached
for a year (the hash changes with the file), anything else for five minutes; pages revalidate.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from flask import Blueprint, Response, abort, render_template, request, send_from_directory
from werkzeug.security import safe_join

STATIC = Path(__file__).parent / "static"
bp = Blueprint("pages", __name__, template_folder="templates")

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
YEAR = 365 * 24 * 3600


@functools.cache
def asset_version(filename: str) -> str:
    """The first 10 hex digits of the file's SHA-256 (the cache-busting part of its URL)."""
    return hashlib.sha256((STATIC / filename).read_bytes()).hexdigest()[:10]


def asset(filename: str) -> str:
    """The versioned URL of a static file."""
    return f"/static/{filename}?v={asset_version(filename)}"


def page(template: str) -> Response:
    """A rendered page with its security and caching headers."""
    response = Response(render_template(template, asset=asset), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
def fans() -> Response:
    """The fan page: concerts, the queue, the seat map, hold, pay, confirmation."""
    return page("fans.html")


@bp.get("/admin")
def console() -> Response:
    """The operator console: live numbers per concert, the controls, the audit log."""
    return page("console.html")


@bp.get("/static/<path:filename>")
def static(filename: str) -> Response:
    """A static file; immutable for a year under its versioned URL."""
    path = safe_join(str(STATIC), filename)
    if path is None or not Path(path).is_file():
        abort(404)
    versioned = request.args.get("v") == asset_version(filename)
    response = send_from_directory(STATIC, filename, max_age=YEAR if versioned else 300)
    if versioned:
        response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
