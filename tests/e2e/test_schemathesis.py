"""Schemathesis over every operation of /api/v1/openapi.json (issue 8, fuzzing).

The app is the unit-tier one (temporary SQLite + fakeredis) called through WSGI, so the run needs
no server and stays well under a minute; bench/fuzz.py runs the bigger campaign against a live
gunicorn. For every generated request (schema-valid and schema-invalid) it asserts: no 5xx, the
status code, content type, headers and body are the documented ones, schema-valid requests are
accepted and schema-invalid ones rejected (bench/fuzz.toml says which refusals are business rules),
and every 4xx/5xx is application/problem+json with type, title, status, detail and code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from config.settings import Settings
from tests.support.helpers import user_headers

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "fuzz-admin-token"
FUZZ_USER = 424_242
PROBLEM_KEYS = ("type", "title", "status", "detail", "code")
MAX_EXAMPLES = 40
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The unit-tier app with the demo concert, rate limits off (else most answers are 429)."""
    from config import bootstrap
    from models.db import db
    from models.seed import seed_demo
    from tests.support.helpers import make_app

    settings_ = Settings().with_(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}",
        redis_url="embedded",
        admin_token=ADMIN_TOKEN,
        rate_limit_enabled=False,
    )
    app = make_app(settings_)
    bootstrap.current().redis.flushall()
    with db.connection_context():
        seed_demo()
    yield app
    db.close()


@pytest.fixture(scope="module")
def queue_token(fuzz_app: Flask) -> str:
    """An ACTIVE queue token of the demo concert, so the gated routes are fuzzed past the gate."""
    waiting_room = fuzz_app.extensions["waiting_room"]
    token = waiting_room.issue(user_id=FUZZ_USER, concert_id=1).token
    waiting_room.admit(concert_id=1)
    assert waiting_room.status(token=token).status == "ACTIVE"
    return str(token)


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Flask) -> Any:
    """The app's own OpenAPI document, loaded through WSGI."""
    config = SchemathesisConfig.from_path(ROOT / "bench" / "fuzz.toml")
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.check
def problem_details(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is RFC 9457 problem+json with a machine code."""
    if response.status_code < 400:
        return None
    values = next((v for k, v in response.headers.items() if k.lower() == "content-type"), "")
    media_type = values[0] if isinstance(values, list) else values
    assert media_type.split(";")[0].strip() == "application/problem+json", (response.status_code, media_type)
    body = response.json()
    missing = [key for key in PROBLEM_KEYS if key not in body]
    assert not missing, f"problem without {missing}: {body}"
    assert body["status"] == response.status_code, body
    return True


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    # The same cases every run: `make test` must not turn red on a new random draw. Exploration
    # with fresh draws is bench/fuzz.py's job; what it finds becomes a test in test_fuzz_regressions.
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_every_operation_answers_as_documented(case: Any, queue_token: str) -> None:
    # the operator routes take the admin token; every other route the fuzz user's identity
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if "/admin/" in case.path else user_headers(FUZZ_USER)
    if case.path != "/api/v1/queue/token" or case.method != "DELETE":  # leaving would end the token
        headers["X-Queue-Token"] = queue_token
    case.call_and_validate(headers=headers, additional_checks=[problem_details])
