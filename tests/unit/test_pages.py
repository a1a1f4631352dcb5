"""The pages' HTTP contract: strict CSP, no inline script, versioned assets cached for a year.

What the pages do is tested in a real browser: tests/e2e/test_pages.py.
"""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient


@pytest.mark.parametrize("path", ["/", "/admin"])
def test_pages_are_html_with_a_strict_csp_and_no_inline_script(client: FlaskClient, path: str) -> None:
    page = client.get(path)

    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["Cache-Control"] == "no-cache"
    html = page.get_data(as_text=True)
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert " style=" not in html and "<style" not in html
    assert "http://" not in html and "https://" not in html


def test_assets_under_their_versioned_url_are_cached_for_a_year(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {r.split("?")[0] for r in refs} == {"/static/pages.css", "/static/common.js", "/static/fans.js"}

    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    unversioned = client.get("/static/fans.js")
    assert "max-age=300" in unversioned.headers["Cache-Control"]
    assert "immutable" not in client.get("/static/fans.js?v=stale").headers["Cache-Control"]


@pytest.mark.parametrize("path", ["/static/../pages.py", "/static/nope.js", "/static/"])
def test_only_files_of_the_static_folder_are_served(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 404
