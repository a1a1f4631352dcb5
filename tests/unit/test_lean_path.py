"""The lean request path (issue 15 item 2) keeps what every answer must carry.

healthz and the cached seat map are built from ready bytes with a finished header list
(web.api.ready_json), the hooks look the request up once and read headers from the WSGI environ,
a query-less seat map skips the query parser, and a request's count and latency are tallied in
one call. None of that may change what a client or a scrape sees.
"""

from __future__ import annotations

import re
from collections import Counter

from flask import Flask
from flask.testing import FlaskClient

from models.concerts import Schedule
from models.seed import seed_demo
from tests.support.helpers import problem_of, queue_headers

API = "/api/v1"


def _names(response: object) -> Counter[str]:
    return Counter(name.lower() for name, _ in response.headers)  # type: ignore[attr-defined]


def test_healthz_carries_its_length_type_and_request_id_once_each(client: FlaskClient) -> None:
    """Hidden ways to fail: a Content-Length written twice (the ready list and set_data), a
    length that is not the body's, a HEAD that sends the body or another length."""
    got = client.get(f"{API}/healthz")
    head = client.head(f"{API}/healthz")

    assert (got.status_code, got.get_json(), got.mimetype) == (200, {"status": "ok"}, "application/json")
    assert int(got.headers["Content-Length"]) == len(got.get_data())
    names = _names(got)
    assert (names["content-length"], names["content-type"], names["x-request-id"]) == (1, 1, 1)
    assert (head.status_code, head.get_data(), head.headers["Content-Length"]) == (
        200,
        b"",
        got.headers["Content-Length"],
    )


def test_each_request_gets_its_own_made_up_id(client: FlaskClient) -> None:
    """Hidden way to fail: an id read once and reused for every request (the hook now reads the
    environ, not the headers object)."""
    ids = [client.get(f"{API}/healthz").headers["X-Request-Id"] for _ in range(20)]
    mine = client.get(f"{API}/healthz", headers={"X-Request-Id": "trace-7"}).headers["X-Request-Id"]

    assert len(set(ids)) == 20 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert mine == "trace-7"


def test_a_seat_map_answer_has_one_etag_and_its_exact_length(app: Flask, client: FlaskClient) -> None:
    """Hidden ways to fail: the ETag or Cache-Control sent twice, a length that is not the body's,
    the 304 with a body, an ETag that does not match the body served from the process's copy."""
    concert = seed_demo()
    schedule = Schedule.select().where(Schedule.concert == concert).first().id
    headers = queue_headers(client, 1, concert)
    url = f"{API}/schedules/{schedule}/seats"

    first, copy = client.get(url, headers=headers), client.get(url, headers=headers)  # the second: the local copy
    again = client.get(url, headers={**headers, "If-None-Match": first.headers["ETag"]})

    for answer in (first, copy):
        names = _names(answer)
        assert (answer.status_code, answer.mimetype) == (200, "application/json")
        assert (names["etag"], names["cache-control"], names["content-length"], names["content-type"]) == (1, 1, 1, 1)
        assert int(answer.headers["Content-Length"]) == len(answer.get_data())
        assert answer.headers["Cache-Control"] == "no-cache"
    assert copy.get_data() == first.get_data() and copy.headers["ETag"] == first.headers["ETag"]
    assert len(first.get_json()["seats"]) > 0
    assert (again.status_code, again.get_data(), again.headers["ETag"]) == (304, b"", first.headers["ETag"])


def test_a_seat_map_query_is_still_checked_and_an_empty_one_is_the_plain_map(client: FlaskClient) -> None:
    """Hidden way to fail: the query-less shortcut taken for a query it should have refused or
    applied (it looks at the raw QUERY_STRING, not the parsed arguments)."""
    concert = seed_demo()
    schedule = Schedule.select().where(Schedule.concert == concert).first().id
    headers = queue_headers(client, 1, concert)
    url = f"{API}/schedules/{schedule}/seats"

    plain = client.get(url, headers=headers)
    empty = client.get(f"{url}?", headers=headers)
    unknown = client.get(f"{url}?colour=red", headers=headers)
    limited = client.get(f"{url}?limit=2", headers=headers)

    assert (empty.status_code, empty.headers["ETag"]) == (200, plain.headers["ETag"])
    assert (unknown.status_code, problem_of(unknown)["code"]) == (400, "VALIDATION_ERROR")
    assert len(limited.get_json()["seats"]) == 2 and limited.headers["ETag"] != plain.headers["ETag"]


def test_a_seat_map_without_identity_or_queue_token_is_refused(client: FlaskClient) -> None:
    """The cheaper header reads (WSGI environ) still refuse a missing bearer or queue token."""
    concert = seed_demo()
    schedule = Schedule.select().where(Schedule.concert == concert).first().id
    headers = queue_headers(client, 1, concert)
    url = f"{API}/schedules/{schedule}/seats"

    no_bearer = client.get(url, headers={"X-Queue-Token": headers["X-Queue-Token"], "Authorization": ""})
    no_token = client.get(url, headers={"Authorization": headers["Authorization"]})
    padded = client.get(url, headers={**headers, "X-Queue-Token": f"  {headers['X-Queue-Token']}\t"})

    assert (no_bearer.status_code, problem_of(no_bearer)["code"]) == (401, "AUTH_REQUIRED")
    assert (no_token.status_code, problem_of(no_token)["code"]) == (401, "TOKEN_MISSING")
    assert padded.status_code == 200  # spaces and tabs around the token are trimmed, as before


def _recording_app(cls: type[Flask]) -> tuple[Flask, list[str]]:
    """An app of `cls` whose app, blueprint and after_this_request hooks write down their order."""
    from flask import Blueprint, after_this_request

    calls: list[str] = []
    app = cls(__name__)
    bp = Blueprint("bp", __name__)

    def log(name: str, stop: bool = False):  # type: ignore[no-untyped-def]
        def hook(arg=None):  # type: ignore[no-untyped-def]
            calls.append(name if arg is None or not hasattr(arg, "status_code") else f"{name}:{arg.status_code}")
            if stop and request_args().get("stop") == name:
                return "stopped"
            return arg

        return hook

    def request_args():  # type: ignore[no-untyped-def]
        from flask import request

        return request.args

    for n in ("app-1", "app-2"):
        app.before_request(log(f"before-{n}", stop=True))
        app.after_request(log(f"after-{n}"))
        app.teardown_request(lambda exc, n=n: calls.append(f"teardown-{n}:{type(exc).__name__}"))
    bp.before_request(log("before-bp", stop=True))
    bp.after_request(log("after-bp"))
    bp.teardown_request(lambda exc: calls.append(f"teardown-bp:{type(exc).__name__}"))
    bp.url_value_preprocessor(lambda endpoint, values: calls.append(f"url-{endpoint}"))

    @bp.get("/in")
    def inside():  # type: ignore[no-untyped-def]
        after_this_request(log("after-this"))
        return "in"

    @app.get("/out")
    def outside():  # type: ignore[no-untyped-def]
        return "out"

    @app.get("/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise KeyError("x")

    app.register_blueprint(bp)
    return app, calls


def test_the_app_runs_every_hook_exactly_as_flask_does() -> None:
    """web.App (its remembered ensure_sync) against Flask: the same hooks run in the same order.
    Hidden ways to fail: a remembered answer handing back the wrong hook, or any runner override
    creeping back with after hooks in registration order instead of reverse, a blueprint's hooks
    skipped or run after the app's, after_this_request forgotten, a before hook's answer not
    ending the request, a teardown not told of the exception."""
    from web import App

    seen = []
    for cls in (Flask, App):
        app, calls = _recording_app(cls)
        client = app.test_client()
        answers = [
            client.get(path).get_data(as_text=True)
            for path in ("/in", "/out", "/in?stop=before-bp", "/out?stop=before-app-2", "/boom")
        ]
        seen.append((answers, list(calls)))

    assert seen[0] == seen[1]
    assert seen[1][0][2:4] == ["stopped", "stopped"]
    assert "teardown-app-1:KeyError" in seen[1][1]


def test_a_path_id_reads_the_same_on_the_short_way() -> None:
    """parse_id's fast path (plain ASCII digits) and its pattern agree. Hidden ways to fail: a
    leading zero, 0, an id past 2^63-1, a non-ASCII digit, a sign or a space accepted or refused
    differently than before."""
    import pytest as _pytest

    from models.errors import ValidationError
    from web.api import parse_id

    accepted = {
        "7": 7,
        "007": 7,
        "7.0": 7,
        "999999999999999999": 999_999_999_999_999_999,
        "9223372036854775807": 2**63 - 1,
    }
    for text, value in accepted.items():
        assert parse_id(text, "id") == value, text
    for text in ("0", "00", "9223372036854775808", "\u0667", "+7", " 7", "7 ", "-1", "", "1e3", "99999999999999999999"):
        with _pytest.raises(ValidationError):
            parse_id(text, "id")
