"""The seat map's WSGI path (web/seat_map_path.py) answers exactly as the Flask route does.

Every request is sent twice, once through the app as served (the path in front) and once to the
Flask app behind it, with the same environ: the status, every header and the body must be the
same, for the answers the path gives itself (200, the 0.5 s copy, 304) and for every one it leaves
to Flask (refusals, queries, other methods and paths).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from models.concerts import NewSchedule, Schedule, create_concert
from models.seed import seed_demo
from models.tally import TALLY
from tests.support.helpers import queue_headers, user_headers
from web.metrics import HTTP_REQUESTS
from web.seat_map_path import SeatMapPath

API = "/api/v1"


def _answer(app: Any, path: str, headers: dict[str, str], method: str = "GET") -> tuple[str, list[Any], bytes]:
    environ = EnvironBuilder(path=path, method=method, headers=headers).get_environ()
    body, status, got = run_wsgi_app(app, environ)
    return status, sorted(got.to_wsgi_list()), b"".join(body)


def _both(app: Flask, path: str, headers: dict[str, str], method: str = "GET") -> tuple[Any, Any]:
    served = app.wsgi_app
    assert isinstance(served, SeatMapPath)
    headers = {"X-Request-Id": "same-id", **headers}  # else each answer makes up its own
    return _answer(served, path, headers, method), _answer(served.app, path, headers, method)


@pytest.fixture
def seat_map(app: Flask) -> dict[str, Any]:
    concert = seed_demo()
    other, _ = create_concert(
        title="Other",
        venue="Hall",
        schedules=[NewSchedule(dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=9), 5, 100)],
    )
    schedule = Schedule.select().where(Schedule.concert == concert).first().id
    client = app.test_client()
    room = app.extensions["waiting_room"]
    return {
        "url": f"{API}/schedules/{schedule}/seats",
        "fan": queue_headers(client, 1, concert),
        "other_concert": queue_headers(client, 2, other),
        "waiting": {**user_headers(3), "X-Queue-Token": room.issue(user_id=3, concert_id=concert, limit=0).token},
        "concert": concert,
        "schedule": schedule,
    }


def test_the_path_answers_the_cached_map_and_its_304_as_flask_does(app: Flask, seat_map: dict[str, Any]) -> None:
    """Hidden ways to fail: a header missing, added, doubled or spelled otherwise (ETag,
    Cache-Control, X-Request-Id, the 304's), another status text, a length that is not the body's."""
    url, fan = seat_map["url"], seat_map["fan"]
    first_fast, first_flask = _both(app, url, fan)  # the first read: token and page from Redis
    copy_fast, copy_flask = _both(app, url, fan)  # the process's 0.5 s copies
    etag = dict(first_fast[1])["ETag"]
    not_modified = _both(app, url, {**fan, "If-None-Match": etag})
    modified = _both(app, url, {**fan, "If-None-Match": '"other"'})

    assert first_fast == first_flask and copy_fast == copy_flask
    assert first_fast[0] == "200 OK" and b'"seats"' in first_fast[2]
    assert not_modified[0] == not_modified[1] and not_modified[0][0].startswith("304")
    assert modified[0] == modified[1] and modified[0][0] == "200 OK"


@pytest.mark.parametrize(
    "case",
    [
        "no bearer",
        "empty bearer",
        "bad bearer",
        "not a bearer",
        "no token",
        "malformed token",
        "unknown token",
        "waiting token",
        "another user's token",
        "another concert's token",
        "unknown schedule",
        "query",
        "unknown query",
        "empty query",
        "head",
        "post",
        "trailing slash",
        "leading zero",
        "id with a fraction",
    ],
)
def test_every_other_answer_is_the_flask_route_s(app: Flask, seat_map: dict[str, Any], case: str) -> None:
    """Refusals and everything the path does not serve are Flask's answers, byte for byte (the
    problem+json codes stay in web/errors.py)."""
    url, fan = seat_map["url"], seat_map["fan"]
    bearer_only = {"Authorization": fan["Authorization"]}
    token_only = {"X-Queue-Token": fan["X-Queue-Token"]}
    path, headers, method = {
        "no bearer": (url, token_only, "GET"),
        "empty bearer": (url, {**fan, "Authorization": " "}, "GET"),
        "bad bearer": (url, {**fan, "Authorization": "Bearer abc.def.ghi"}, "GET"),
        "not a bearer": (url, {**fan, "Authorization": "Basic dXNlcjpwdw=="}, "GET"),
        "no token": (url, bearer_only, "GET"),
        "malformed token": (url, {**fan, "X-Queue-Token": "nope"}, "GET"),
        "unknown token": (url, {**fan, "X-Queue-Token": fan["X-Queue-Token"][:-4] + "0000"}, "GET"),
        "waiting token": (url, seat_map["waiting"], "GET"),
        "another user's token": (url, {**user_headers(9), "X-Queue-Token": fan["X-Queue-Token"]}, "GET"),
        "another concert's token": (url, seat_map["other_concert"], "GET"),
        "unknown schedule": (f"{API}/schedules/999999/seats", fan, "GET"),
        "query": (f"{url}?limit=2", fan, "GET"),
        "unknown query": (f"{url}?colour=red", fan, "GET"),
        "empty query": (f"{url}?", fan, "GET"),
        "head": (url, fan, "HEAD"),
        "post": (url, fan, "POST"),
        "trailing slash": (f"{url}/", fan, "GET"),
        "leading zero": (url.replace("/schedules/", "/schedules/0"), fan, "GET"),
        "id with a fraction": (url.replace("/seats", ".0/seats"), fan, "GET"),
    }[case]
    for _ in range(2):  # the second time with the process's copies of the token and page made
        fast, flask_answer = _both(app, path, headers, method)
        assert fast == flask_answer


def test_the_path_serves_the_map_without_flask_and_counts_it_as_flask_does(
    app: Flask, seat_map: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The point of the path: no Flask request for the cached map, while the request's count by
    route and status (and its latency) and its request id still reach the metrics and logs."""
    url, fan = seat_map["url"], seat_map["fan"]
    served = app.wsgi_app
    assert isinstance(served, SeatMapPath)
    flask_calls = Counter[str]()
    inner = served.app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        flask_calls[environ["PATH_INFO"]] += 1
        return inner(environ, start_response)

    served.app = counting
    TALLY.flush()
    labels = ("GET", "/api/v1/schedules/<schedule_id>/seats")
    before = {s: HTTP_REQUESTS.labels(*labels, s)._value.get() for s in ("200", "304", "401")}
    client = app.test_client()
    ok = client.get(url, headers=fan)
    again = client.get(url, headers={**fan, "If-None-Match": ok.headers["ETag"], "X-Request-Id": "trace-9"})
    refused = client.get(url, headers={"X-Queue-Token": fan["X-Queue-Token"], "Authorization": ""})
    TALLY.flush()
    after = {s: HTTP_REQUESTS.labels(*labels, s)._value.get() for s in ("200", "304", "401")}

    assert (ok.status_code, again.status_code, refused.status_code) == (200, 304, 401)
    assert again.headers["X-Request-Id"] == "trace-9" and len(ok.headers["X-Request-Id"]) == 16
    assert flask_calls == Counter({url: 1})  # only the refusal went to Flask
    assert {s: after[s] - before[s] for s in after} == {"200": 1, "304": 1, "401": 1}


def test_the_access_line_is_the_same(app: Flask, seat_map: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """With ACCESS_LOG on, the path writes Flask's access line for the requests it answers."""
    from web import requestlog

    served = app.wsgi_app
    assert isinstance(served, SeatMapPath)
    url, fan = seat_map["url"], seat_map["fan"]
    served.access_log = True
    with caplog.at_level(logging.INFO, logger=requestlog.access.name):
        app.test_client().get(url, headers=fan)
    lines = [r.getMessage() for r in caplog.records if r.name == requestlog.access.name]

    assert len(lines) == 1 and lines[0].startswith(f"GET {url} 200 ") and lines[0].endswith("ms")


def test_a_limited_seat_map_is_left_to_flask(unit_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask-Limiter's hooks run only under Flask: a seat map that carried a limit is never
    answered by the path (install leaves the app's WSGI callable as it is)."""
    from tests.support.helpers import make_app
    from web import limits

    monkeypatch.setattr(limits, "limited_endpoints", lambda app: {"concerts.seat_map"})
    app = make_app(unit_settings)

    assert not isinstance(app.wsgi_app, SeatMapPath)
