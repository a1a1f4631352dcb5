"""A bare Flask app with one small JSON route: the baseline the cached seat map is compared with.

gunicorn -c config/gunicorn.py bench.bare_app:app
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.get("/bare")
def bare() -> Response:
    """A small constant JSON body (no database, no Redis)."""
    return jsonify(status="ok", seats=50)
