"""Operations and cross-cutting HTTP behaviour: problem+json everywhere, health, metrics, OpenAPI, docs."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.helpers import problem_of

UNDOCUMENTED = {"/openapi.json", "/docs", "/docs/assets/<path:filename>"}


class _Refs(HTMLParser):
    """Collects every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("data:")]
        self.inline_scripts += tag == "script" and not dict(attrs).get("src")


def requests_counted(client: FlaskClient, endpoint: str) -> float:
    text = client.get("/api/v1/metrics").get_data(as_text=True)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and f'endpoint="{endpoint}"' in line and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("path", ["/api/v1/nope", "/nope", "/api/v1/users/1/points/nope"])
def test_an_unknown_route_is_a_404_problem(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert problem_of(response)["code"] == "NOT_FOUND"


def test_a_wrong_method_is_a_405_problem_with_allow(client: FlaskClient) -> None:
    response = client.delete("/api/v1/users/1/points/charge")

    assert response.status_code == 405
    problem_of(response)
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert "POST" in allowed
    assert "DELETE" not in allowed


def test_malformed_json_is_a_400_problem(client: FlaskClient) -> None:
    response = client.post("/api/v1/users/1/points/charge", data='{"amount": ', content_type="application/json")

    assert response.status_code == 400
    body = problem_of(response)
    assert body["code"] == "VALIDATION_ERROR"
    assert "JSON" in body["detail"]


def test_healthz_answers_ok(client: FlaskClient) -> None:
    response = client.get("/api/v1/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_every_dependency_ok(client: FlaskClient) -> None:
    response = client.get("/api/v1/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "disabled"}}


def test_metrics_count_each_request_by_route(client: FlaskClient) -> None:
    before = requests_counted(client, "/api/v1/healthz")

    client.get("/api/v1/healthz")
    client.get("/api/v1/healthz")
    response = client.get("/api/v1/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "# TYPE http_requests_total counter" in response.get_data(as_text=True)
    assert requests_counted(client, "/api/v1/healthz") == before + 2


def test_metrics_are_served_at_the_root_too_and_name_the_sale_series(client: FlaskClient) -> None:
    from models.seed import seed_demo

    concert_id = seed_demo()
    client.post("/api/v1/queue/tokens", json={"userId": 1, "concertId": concert_id})

    root = client.get("/metrics")
    text = root.get_data(as_text=True)

    assert root.status_code == 200 and root.mimetype == "text/plain"
    for series in (
        f'waiting_room_waiting{{concert="{concert_id}"}}',
        f'waiting_room_active{{concert="{concert_id}"}} 1.0',
        f'waiting_room_admitted_per_second{{concert="{concert_id}"}}',
        f'seats{{concert="{concert_id}",state="available"}} 100.0',
        f'seats{{concert="{concert_id}",state="held"}} 0.0',
        f'seats{{concert="{concert_id}",state="sold"}} 0.0',
        "# TYPE jobs_finished_total counter",
        "# TYPE job_duration_seconds histogram",
        "partition_queue_length",
        "outbox_pending",
        "consumer_lag",
        "dead_lettered_total",
    ):
        assert series in text, series
    assert "/metrics" in client.get("/api/v1/openapi.json").get_json()["paths"]


def test_job_outcomes_and_durations_are_counted_per_type(client: FlaskClient) -> None:
    from config.bootstrap import current
    from workers import jobstats

    jobstats.record(current().redis, [("hold", "succeeded", 0.004), ("hold", "failed", 0.3), ("pay", "succeeded", 40)])

    text = client.get("/metrics").get_data(as_text=True)

    assert 'jobs_finished_total{outcome="succeeded",type="hold"} 1.0' in text
    assert 'jobs_finished_total{outcome="failed",type="hold"} 1.0' in text
    assert 'job_duration_seconds_bucket{le="0.005",type="hold"} 1.0' in text
    assert 'job_duration_seconds_bucket{le="0.5",type="hold"} 2.0' in text
    assert 'job_duration_seconds_bucket{le="+Inf",type="pay"} 1.0' in text
    assert 'job_duration_seconds_bucket{le="30",type="pay"} 0.0' in text
    assert 'job_duration_seconds_count{type="hold"} 2.0' in text


def test_a_batch_of_outcomes_is_counted_with_one_command_per_counter_it_touches(client: FlaskClient) -> None:
    """A group of 32 holds finishes in one pipeline: its counters must not cost 3 commands a job.

    Hidden ways it fails: a HINCRBY per job (96 commands for 32 holds), or summed counts that
    no longer add up (a bucket or the duration sum lost in the summing)."""
    from config.bootstrap import current
    from workers import jobstats

    pipe = current().redis.pipeline(transaction=False)
    outcomes = [("hold", "succeeded", 0.004)] * 30 + [("hold", "failed", 0.3), ("hold", "failed", 0.004)]
    jobstats.record(current().redis, outcomes, pipe=pipe)

    assert len(pipe) == 5  # succeeded, failed, two buckets, the sum
    pipe.execute()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'jobs_finished_total{outcome="succeeded",type="hold"} 30.0' in text
    assert 'jobs_finished_total{outcome="failed",type="hold"} 2.0' in text
    assert 'job_duration_seconds_bucket{le="0.005",type="hold"} 31.0' in text
    assert 'job_duration_seconds_bucket{le="0.5",type="hold"} 32.0' in text
    assert 'job_duration_seconds_count{type="hold"} 32.0' in text
    assert 'job_duration_seconds_sum{type="hold"} 0.424' in text


def test_metrics_label_by_route_template_not_by_raw_path(client: FlaskClient) -> None:
    client.get("/api/v1/users/123456789/points")

    text = client.get("/api/v1/metrics").get_data(as_text=True)

    assert 'endpoint="/api/v1/users/<user_id>/points"' in text
    assert "123456789" not in text


def test_openapi_is_3_1_and_documents_every_api_route(app: Flask, client: FlaskClient) -> None:
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule != "/metrics" and (
            not rule.rule.startswith("/api/v1/") or rule.rule.removeprefix("/api/v1") in UNDOCUMENTED
        ):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods or () if m not in ("HEAD", "OPTIONS"))
    assert set(document["paths"]) == set(routes)
    for path, methods in routes.items():
        assert methods <= set(document["paths"][path]), path


def test_docs_page_works_offline_and_its_assets_load(client: FlaskClient) -> None:
    page = client.get("/api/v1/docs")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html
    parser = _Refs()
    parser.feed(html)
    assert any(ref.endswith("swagger-ui-bundle.js") for ref in parser.refs)
    assert parser.inline_scripts == 0
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for ref in parser.refs:
        asset = client.get(urlsplit(urljoin("http://localhost/api/v1/docs", ref)).path)
        assert asset.status_code == 200, ref


def test_docs_page_with_a_trailing_slash_also_loads_its_assets(client: FlaskClient) -> None:
    # strict_slashes is off, so /api/v1/docs/ serves the page too; relative asset paths must still resolve
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200
    parser = _Refs()
    parser.feed(page.get_data(as_text=True))

    for ref in parser.refs:
        asset = client.get(urlsplit(urljoin("http://localhost/api/v1/docs/", ref)).path)
        assert asset.status_code == 200, f"{ref} from /api/v1/docs/ resolves to a {asset.status_code}"


def test_swagger_ui_5_is_served_locally_as_javascript(client: FlaskClient) -> None:
    # Swagger UI 4 could not read OpenAPI 3.1 ("does not specify a valid version field"); 5 can.
    # Whether it renders is tested in a real browser: tests/e2e/test_pages.py
    response = client.get("/api/v1/docs/assets/swagger-ui-bundle.js")

    assert response.status_code == 200
    assert response.mimetype in ("text/javascript", "application/javascript")
    assert b"SwaggerUIBundle" in response.data
    assert b"OpenAPI 3.1" in response.data or b"3.1.0" in response.data
    assert client.get("/api/v1/docs/assets/LICENSE").status_code == 200
    assert client.get("/api/v1/docs/assets/../__init__.py").status_code == 404


def test_an_unexpected_exception_is_a_500_problem_without_a_traceback(app: Flask) -> None:
    # Given a route that fails in a way no handler expects
    def boom() -> str:
        raise RuntimeError("secret-internal-detail-42")

    app.add_url_rule("/api/v1/test-boom", "test_boom", boom)

    # When it is called
    response = app.test_client().get("/api/v1/test-boom")

    # Then the caller sees a generic problem, never the exception or a stack trace
    assert response.status_code == 500
    body = problem_of(response)
    assert body["code"] == "INTERNAL_ERROR"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert "secret-internal-detail-42" not in text
    assert "RuntimeError" not in text


def test_the_grafana_dashboard_is_json_and_plots_only_series_the_service_serves(client: FlaskClient) -> None:
    import json
    from pathlib import Path

    from config.bootstrap import current
    from models.seed import seed_demo
    from workers import jobstats

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text())
    seed_demo()
    jobstats.record(current().redis, [("pay", "succeeded", 0.1)])
    client.get("/api/v1/healthz")
    served = {
        line.split("{")[0].split(" ")[0]
        for line in client.get("/metrics").get_data(as_text=True).splitlines()
        if line and not line.startswith("#")
    }

    panels = dashboard["panels"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("waiting", "admissions", "held", "sales", "latency", "outbox", "dead letters"):
        assert topic in titles, topic
    for panel in panels:
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\bby \([^)]*\)|[0-9.]+", " ", target["expr"])
            names = set(re.findall(r"\b([a-z_]+)\b(?!\s*\()", expr))
            assert names, target["expr"]
            assert names <= served, (panel["title"], names - served)


# --- what every request pays -------------------------------------------------------------------
def test_flask_asks_whether_a_hook_is_a_coroutine_once_per_function(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flask asks inspect.iscoroutinefunction of every hook and the view on every request (13
    times a request here); the app remembers the answer. Hidden way to fail: remembering the
    wrapper of one function for another (the answer must stay per function)."""
    import flask.app

    asked: list[object] = []
    real = flask.app.iscoroutinefunction
    monkeypatch.setattr(flask.app, "iscoroutinefunction", lambda f: asked.append(f) or real(f))
    assert client.get("/api/v1/healthz").status_code == 200
    first = len(asked)

    for _ in range(3):
        assert client.get("/api/v1/healthz").get_json() == {"status": "ok"}
    assert len(asked) == first  # nothing asked again
    assert client.get("/api/v1/concerts").status_code == 200  # another view: asked once, answered right


def test_the_limiter_hooks_run_only_on_limited_routes(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unlimited route (healthz) skips Flask-Limiter's before, after and teardown hooks; a
    limited one (holding a seat) still runs them and carries X-RateLimit-* headers. Joining the
    queue counts its limits inside the issue script: headers, and Flask-Limiter never asked.
    Hidden way to fail: the limited route losing its headers because the after hook was dropped."""
    from flask_limiter import Limiter

    looked: list[int] = []
    real = Limiter.current_limit
    monkeypatch.setattr(Limiter, "current_limit", property(lambda self: looked.append(1) or real.fget(self)))  # type: ignore[attr-defined]
    assert client.get("/api/v1/healthz").status_code == 200
    assert looked == []

    joined = client.post("/api/v1/queue/tokens", json={"concertId": 1})
    assert looked == [] and joined.headers.get("X-RateLimit-Limit")

    token = {"X-Queue-Token": "1." + "A" * 22}  # well formed: the per-user job limit applies
    held = client.post("/api/v1/reservations", json={"scheduleId": 1, "seatId": 1}, headers=token)
    assert looked and held.headers.get("X-RateLimit-Limit")


@pytest.mark.parametrize(
    ("body", "content_type", "fields", "detail"),
    [
        ('{"concertId": ', "application/json", None, "not valid JSON"),
        ("{}", "application/json", ["concertId"], "schema"),
        ("[]", "application/json", ["concertId"], "schema"),  # falsy JSON is no body, as spectree read it
        ('{"concertId": 0}', "application/json", ["concertId"], "schema"),
        ('{"concertId": "x"}', "application/json", ["concertId"], "schema"),
        ('{"concertId": 1, "seat": 2}', "application/json", ["seat"], "schema"),
        ('{"concertId": 1, "userId": -1}', "application/json", ["userId"], "schema"),
        ("[1]", "application/json", ["body"], "schema"),
        (None, None, ["concertId"], "schema"),
    ],
)
def test_a_bad_join_body_is_a_400_problem_naming_the_field(
    client: FlaskClient, body: str | None, content_type: str | None, fields: list[str] | None, detail: str
) -> None:
    """The join validates its body itself (not through spectree's wrapper, bench/request_profile.py):
    every malformed body is still the 400 problem+json spectree's validation gave, naming the field.
    Hidden way to fail: a bad body reaching the issue script (a 500, or a token for concert 0)."""
    response = client.post("/api/v1/queue/tokens", data=body, content_type=content_type)

    assert response.status_code == 400
    problem = problem_of(response)
    assert problem["code"] == "VALIDATION_ERROR"
    assert detail in problem["detail"]
    if fields is not None:
        assert [e["field"] for e in problem["errors"]] == fields
