"""The hot routes' WSGI path (web/hot_paths.py) answers exactly as the Flask routes do.

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
from web.hot_paths import HotPaths
from web.metrics import HTTP_REQUESTS

API = "/api/v1"


def _answer(app: Any, path: str, headers: dict[str, str], method: str = "GET") -> tuple[str, list[Any], bytes]:
    environ = EnvironBuilder(path=path, method=method, headers=headers).get_environ()
    body, status, got = run_wsgi_app(app, environ)
    return status, sorted(got.to_wsgi_list()), b"".join(body)


def _both(app: Flask, path: str, headers: dict[str, str], method: str = "GET") -> tuple[Any, Any]:
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    headers = {"X-Request-Id": "same-id", **headers}  # else each answer makes up its own
    return _answer(served, path, headers, method), _answer(served.app, path, headers, method)


def _count_flask_calls(app: Flask) -> Counter[str]:
    """Count, by path, the requests the path in front leaves to the Flask app behind it."""
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    calls = Counter[str]()
    inner = served.app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        calls[environ["PATH_INFO"]] += 1
        return inner(environ, start_response)

    served.app = counting
    return calls


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
    flask_calls = _count_flask_calls(app)
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
    assert isinstance(served, HotPaths)
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

    every = {"concerts.seat_map", "queue.poll", "queue.leave", "queue.issue"}
    monkeypatch.setattr(limits, "limited_endpoints", lambda app: every)
    app = make_app(unit_settings)

    assert not isinstance(app.wsgi_app, HotPaths)


def _due(app: Flask, token: str) -> None:
    """Make a waiting token's next poll on time (its last poll long enough ago)."""
    from config import bootstrap

    r = bootstrap.current().redis
    key = next(k for k in r.scan_iter(match=f"wr:*:t:{token}"))
    now_ms = int(r.time()[0]) * 1000
    r.hset(key, "p", f"{now_ms - 60_000}:{now_ms - 1}")


def _json(answer: tuple[str, list[Any], bytes]) -> Any:
    import json

    return json.loads(answer[2]) if answer[2] else None


def test_a_poll_is_answered_as_the_route_does_and_counted_once(app: Flask, seat_map: dict[str, Any]) -> None:
    """A waiting fan's on-time poll: the same status, headers and body as the route's; an early
    poll (the second at once) is the route's 429 with Retry-After on both ways."""
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    fan = seat_map["waiting"]
    headers = {"X-Request-Id": "same-id", **fan}
    _due(app, fan["X-Queue-Token"])
    fast = _answer(served, f"{API}/queue/token", headers)
    early_fast = _answer(served, f"{API}/queue/token", headers)
    _due(app, fan["X-Queue-Token"])
    flask_answer = _answer(served.app, f"{API}/queue/token", headers)
    early_flask = _answer(served.app, f"{API}/queue/token", headers)

    assert fast[0] == flask_answer[0] == "200 OK"
    assert [name for name, _ in fast[1]] == [name for name, _ in flask_answer[1]]
    assert dict(fast[1])["Content-Length"] == str(len(fast[2]))
    mine, theirs = _json(fast), _json(flask_answer)
    expiry = (mine.pop("expiresAt"), theirs.pop("expiresAt"))  # now + WAITING_TTL: ms apart
    assert mine == theirs and mine["status"] == "WAITING" and list(mine) == list(theirs)
    assert len(expiry[0]) == len(expiry[1]) and expiry[0][:16] == expiry[1][:16]
    assert early_fast[0] == early_flask[0] and early_fast[0].startswith("429")
    assert [n for n, _ in early_fast[1]] == [n for n, _ in early_flask[1]] and "Retry-After" in dict(early_fast[1])
    assert _json(early_fast)["code"] == _json(early_flask)["code"] == "RATE_LIMITED"


@pytest.mark.parametrize(
    "case", ["no bearer", "bad bearer", "no token", "malformed token", "unknown token", "query", "post"]
)
def test_a_refused_poll_is_the_route_s(app: Flask, seat_map: dict[str, Any], case: str) -> None:
    """Refusals of a poll (nothing polled) are Flask's answers, byte for byte."""
    fan = seat_map["waiting"]
    path, headers, method = {
        "no bearer": (f"{API}/queue/token", {"X-Queue-Token": fan["X-Queue-Token"]}, "GET"),
        "bad bearer": (f"{API}/queue/token", {**fan, "Authorization": "Bearer x.y.z"}, "GET"),
        "no token": (f"{API}/queue/token", {"Authorization": fan["Authorization"]}, "GET"),
        "malformed token": (f"{API}/queue/token", {**fan, "X-Queue-Token": "nope"}, "GET"),
        "unknown token": (f"{API}/queue/token", {**fan, "X-Queue-Token": fan["X-Queue-Token"][:-4] + "0000"}, "GET"),
        "query": (f"{API}/queue/token?x=1", {**fan, "X-Queue-Token": "nope"}, "GET"),
        "post": (f"{API}/queue/token", fan, "POST"),
    }[case]
    fast, flask_answer = _both(app, path, headers, method)
    assert fast == flask_answer and not fast[0].startswith("2")


def test_another_user_s_poll_is_refused_once_not_polled_twice(app: Flask, seat_map: dict[str, Any]) -> None:
    """Hidden way to fail: the path polls (keeping the token's place, as the route does), finds
    another user's token and leaves the request to Flask, which polls again and, the token now
    polled a moment ago, answers an early poll's 429 instead of the route's 403."""
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    fan = seat_map["waiting"]
    stranger = {"X-Request-Id": "same-id", **user_headers(9), "X-Queue-Token": fan["X-Queue-Token"]}
    _due(app, fan["X-Queue-Token"])
    fast = _answer(served, f"{API}/queue/token", stranger)
    _due(app, fan["X-Queue-Token"])
    flask_answer = _answer(served.app, f"{API}/queue/token", stranger)

    assert fast == flask_answer and fast[0].startswith("403")


def test_a_leave_is_answered_as_the_route_does(app: Flask, seat_map: dict[str, Any]) -> None:
    """A fan's leave: 204 with the route's headers; then the token is gone (401 both ways), and
    another user's leave is the route's 403 with the token kept."""
    from config import bootstrap

    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    room = app.extensions["waiting_room"]
    concert = seat_map["concert"]
    one = {
        "X-Request-Id": "same-id",
        **user_headers(21),
        "X-Queue-Token": room.issue(user_id=21, concert_id=concert, limit=0).token,
    }
    two = {
        "X-Request-Id": "same-id",
        **user_headers(22),
        "X-Queue-Token": room.issue(user_id=22, concert_id=concert, limit=0).token,
    }
    three_token = room.issue(user_id=23, concert_id=concert, limit=0).token
    stranger = {"X-Request-Id": "same-id", **user_headers(9), "X-Queue-Token": three_token}

    refused = (
        _answer(served, f"{API}/queue/token", stranger, "DELETE"),
        _answer(served.app, f"{API}/queue/token", stranger, "DELETE"),
    )
    left = (
        _answer(served, f"{API}/queue/token", one, "DELETE"),
        _answer(served.app, f"{API}/queue/token", two, "DELETE"),
    )
    again = _both(app, f"{API}/queue/token", one, "DELETE")

    assert refused[0] == refused[1] and refused[0][0].startswith("403")
    assert room.owner(token=three_token) == 23
    assert left[0] == left[1] and left[0][0] == "204 NO CONTENT" and left[0][2] == b""
    assert again[0] == again[1] and again[0][0].startswith("401")
    assert bootstrap.current().redis is not None


def test_an_early_or_unknown_poll_costs_one_poll(
    app: Flask, seat_map: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §3: an early poll's 429 costs no more Redis work than the poll itself. Hidden way to
    fail: the path polls, gets the refusal and leaves the request to Flask, which polls again."""
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    room = app.extensions["waiting_room"]
    calls: list[str] = []
    status = room.status

    def counted(**kw: Any) -> Any:
        calls.append(kw["token"])
        return status(**kw)

    monkeypatch.setattr(room, "status", counted)
    fan = seat_map["waiting"]
    _due(app, fan["X-Queue-Token"])
    on_time = _answer(served, f"{API}/queue/token", fan)
    early = _answer(served, f"{API}/queue/token", fan)
    unknown = _answer(served, f"{API}/queue/token", {**fan, "X-Queue-Token": fan["X-Queue-Token"][:-4] + "0000"})

    assert (on_time[0][:3], early[0][:3], unknown[0][:3]) == ("200", "429", "401")
    assert len(calls) == 3  # one poll each


def _join(app: Any, headers: dict[str, str], body: Any = None, *, data: bytes | None = None, **kw: Any) -> Any:
    """A join's (status, sorted headers, body) through `app` (the path in front, or Flask behind it)."""
    builder = EnvironBuilder(
        path=f"{API}/queue/tokens",
        method="POST",
        headers={"X-Request-Id": "same-id", **headers},
        json=body,
        data=data,
        **kw,
    )
    body_iter, status, got = run_wsgi_app(app, builder.get_environ())
    return status, sorted(got.to_wsgi_list()), b"".join(body_iter)


def test_a_join_is_answered_as_the_route_does(app: Flask, seat_map: dict[str, Any]) -> None:
    """A fan's first join (201) and a repeated one (200, the same token and place): the route's
    status, headers (X-RateLimit-* included) and body, through the path and through Flask."""
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    concert = seat_map["concert"]
    first = (
        _join(served, user_headers(31), {"concertId": concert}),
        _join(served.app, user_headers(32), {"concertId": concert}),
    )
    again = (
        _join(served, user_headers(32), {"concertId": concert, "userId": 32}),
        _join(served.app, user_headers(31), {"concertId": concert, "userId": None}),
    )

    for fast, flask_answer in (first, again):
        assert fast[0] == flask_answer[0]
        assert [n for n, _ in fast[1]] == [n for n, _ in flask_answer[1]]
        assert dict(fast[1])["Content-Length"] == str(len(fast[2]))
        mine, theirs = _json(fast), _json(flask_answer)
        assert list(mine) == list(theirs) and mine["concertId"] == theirs["concertId"] == concert
    assert first[0][0] == "201 CREATED" and again[0][0] == "200 OK"
    assert _json(again[0])["token"] == _json(first[1])["token"]  # user 32's token, joined through Flask
    assert _json(again[1])["token"] == _json(first[0])["token"]  # user 31's, joined through the path
    assert "X-RateLimit-Remaining" in dict(first[0][1])


@pytest.mark.parametrize(
    "case",
    [
        "no bearer",
        "bad bearer",
        "another user's id",
        "unknown concert",
        "concert as a string",
        "concert 7.0",
        "concert true",
        "concert 0",
        "unknown field",
        "array",
        "malformed json",
        "empty body",
        "form body",
        "query",
    ],
)
def test_every_other_join_answer_is_the_flask_route_s(app: Flask, seat_map: dict[str, Any], case: str) -> None:
    """Refusals and every body the path does not take are Flask's answers, byte for byte: the body
    the path read is Flask's to read again (a lost body would be another 400 or a 201)."""
    concert = seat_map["concert"]
    fan = user_headers(41)
    headers, kw = {
        "no bearer": ({}, {"body": {"concertId": concert}}),
        "bad bearer": ({"Authorization": "Bearer x.y.z"}, {"body": {"concertId": concert}}),
        "another user's id": (fan, {"body": {"concertId": concert, "userId": 42}}),
        "unknown concert": (fan, {"body": {"concertId": 999_999}}),
        "concert as a string": (fan, {"body": {"concertId": str(concert)}}),
        "concert 7.0": (fan, {"data": b'{"concertId": %d.0}' % concert, "content_type": "application/json"}),
        "concert true": (fan, {"body": {"concertId": True}}),
        "concert 0": (fan, {"body": {"concertId": 0}}),
        "unknown field": (fan, {"body": {"concertId": concert, "seat": 1}}),
        "array": (fan, {"body": [concert]}),
        "malformed json": (fan, {"data": b'{"concertId": ', "content_type": "application/json"}),
        "empty body": (fan, {"data": b"", "content_type": "application/json"}),
        "form body": (fan, {"data": b"concertId=1", "content_type": "application/x-www-form-urlencoded"}),
        "query": (fan, {"body": {"concertId": concert}, "query_string": "x=1"}),
    }[case]
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    fast = _join(served, headers, **kw)
    flask_answer = _join(served.app, headers, **kw)
    if case == "concert 7.0":  # a whole number is the id (web.schemas.whole_number): the route's 201, then 200
        assert (fast[0], flask_answer[0]) == ("201 CREATED", "200 OK") and _json(fast) == _json(flask_answer)
        return
    if case == "query":  # not a refusal: the route's own answer, as the first and then the repeated join
        assert (fast[0], flask_answer[0]) == ("201 CREATED", "200 OK")
        return
    assert not fast[0].startswith("2")
    if case == "unknown concert":  # the route counts a join of an unknown concert too: once each, never twice
        left = [int(dict(a[1])["X-RateLimit-Remaining"]) for a in (fast, flask_answer)]
        assert left[0] - left[1] == 1
        fast, flask_answer = (_without(a, "X-RateLimit-Remaining") for a in (fast, flask_answer))
    assert fast == flask_answer


def _without(answer: Any, header: str) -> Any:
    status, headers, body = answer
    return status, [h for h in headers if h[0] != header], body


def test_a_rate_limited_join_is_counted_once(unit_settings: Any) -> None:
    """The issue script counts a join before it refuses it (429): the route must not run it again
    for the same request. Hidden way to fail: each refused join through the path counts twice, and a
    fan over the limit stays locked out for longer than the window says."""
    from config import bootstrap
    from tests.support.helpers import make_app

    app = make_app(unit_settings.with_(rate_issue_user="2/minute"))
    bootstrap.current().redis.flushall()
    concert = seed_demo()
    served = app.wsgi_app
    assert isinstance(served, HotPaths)
    answers = [_join(served, user_headers(51), {"concertId": concert})[0] for _ in range(4)]
    counted = bootstrap.current().redis.get(f"rl:{{c:{concert}}}:u:51")

    assert answers == ["201 CREATED", "200 OK", "429 TOO MANY REQUESTS", "429 TOO MANY REQUESTS"]
    assert counted is not None and int(counted) == 4


def test_the_path_serves_the_join_without_flask(app: Flask, seat_map: dict[str, Any]) -> None:
    """The point of the path for every fan's first request: a plain join never reaches Flask,
    and is still counted by route and status in the metrics."""
    flask_calls = _count_flask_calls(app)
    TALLY.flush()
    labels = ("POST", "/api/v1/queue/tokens")
    before = HTTP_REQUESTS.labels(*labels, "201")._value.get()
    joined = app.test_client().post(
        f"{API}/queue/tokens", json={"concertId": seat_map["concert"]}, headers=user_headers(61)
    )
    TALLY.flush()

    assert joined.status_code == 201 and joined.json["userId"] == 61
    assert flask_calls == Counter()
    assert HTTP_REQUESTS.labels(*labels, "201")._value.get() - before == 1


def test_a_far_back_poll_is_answered_by_the_memo_as_the_route_would_and_never_reaches_redis(
    unit_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll memo behind the path (models/poll_memo.py): with one admission pass reaching one fan
    (ACTIVE_LIMIT 1, no abandoned-waiter budget), the last of six fans is beyond it; its on-time
    poll is answered without a Redis call, with what the poll script would say, and counted."""
    import time

    from models import poll_memo
    from tests.support.helpers import make_app

    monkeypatch.setattr(poll_memo, "POP_BUDGET", 0)
    from config import bootstrap

    app = make_app(unit_settings.with_(active_limit=1))
    bootstrap.current().redis.flushall()  # the embedded Redis outlives an app (the `app` fixture's way)
    concert = seed_demo()
    client, room = app.test_client(), app.extensions["waiting_room"]
    fans = [
        client.post(f"{API}/queue/tokens", json={"concertId": concert}, headers=user_headers(u)).json
        for u in range(1, 7)
    ]
    assert [f["status"] for f in fans] == ["ACTIVE"] + ["WAITING"] * 5 and fans[-1]["rank"] == 5
    assert room.memo is not None and room.memo.reach(1) == 2
    later = time.monotonic() + fans[-1]["pollAfterMs"] / 1000
    monkeypatch.setattr(poll_memo, "monotonic", lambda: later)  # the fan's pollAfterMs has passed
    room.snapshot(concert, 2)  # its script loaded before counting
    calls: list[Any] = []
    real = room.r.evalsha
    monkeypatch.setattr(room.r, "evalsha", lambda *a, **kw: calls.append(a[0]) or real(*a, **kw))
    served = app.wsgi_app
    assert isinstance(served, HotPaths)

    polled = _answer(served, f"{API}/queue/token", {**user_headers(6), "X-Queue-Token": fans[-1]["token"]})
    again = _answer(served, f"{API}/queue/token", {**user_headers(5), "X-Queue-Token": fans[-2]["token"]})

    assert polled[0] == again[0] == "200 OK" and room.memo.answered == 2
    assert len(calls) == 1  # the concert's snapshot, once for both (no poll script)
    truth = room.status(token=fans[-1]["token"], touch=False)
    body = _json(polled)
    assert (body["status"], body["rank"], body["soldOut"]) == ("WAITING", truth.rank, False)
    assert (body["pollAfterMs"], body["estimatedWaitSeconds"]) == (truth.poll_after_ms, truth.estimated_wait_seconds)
