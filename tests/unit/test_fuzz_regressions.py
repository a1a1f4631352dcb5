"""Regressions for the 5xx answers found by fuzzing the API (schemathesis and hand probes, issue 8).

Each request here used to end in 500 INTERNAL_ERROR; a hostile or merely odd request must be
answered with a 4xx problem+json instead.
"""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.conftest import problem_of

ADMIN = {"Authorization": "Bearer test-admin-token"}


@pytest.mark.parametrize(
    "starts_at",
    [
        "0001-01-01T00:00:00+01:00",  # in UTC this is year 0
        "9999-12-31T23:59:59-01:00",  # in UTC this is year 10000
    ],
)
def test_a_schedule_start_outside_the_utc_range_is_a_400_not_a_500(client: FlaskClient, starts_at: str) -> None:
    body = {"title": "t", "venue": "v", "schedules": [{"startsAt": starts_at, "seatCount": 1, "price": 0}]}

    response = client.post("/api/v1/admin/concerts", json=body, headers=ADMIN)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "VALIDATION_ERROR"


def _deeply_nested(depth: int = 5000) -> str:
    # ~10 KB: well under MAX_BODY_BYTES (16 KiB), deeper than Python's recursion limit
    return '{"amount": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/queue/tokens",
        "/api/v1/users/1/points/charge",
        "/api/v1/reservations",
        "/api/v1/payments",
        "/api/v1/admin/concerts",
    ],
)
def test_a_deeply_nested_json_body_is_a_400_not_a_500(client: FlaskClient, path: str) -> None:
    response = client.post(path, data=_deeply_nested(), content_type="application/json", headers=ADMIN)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "VALIDATION_ERROR"


# "\xb2" is SUPERSCRIPT TWO, one Latin-1 byte on the wire: str.isdigit() is True for it, int() fails.
ODD_DIGIT_TOKEN = "\xb2.AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/queue/token"),
        ("DELETE", "/api/v1/queue/token"),
        ("GET", "/api/v1/schedules/1/seats"),
        ("GET", "/api/v1/reservations/1"),
        ("DELETE", "/api/v1/reservations/1"),
        ("GET", "/api/v1/payments/1"),
    ],
)
def test_a_queue_token_whose_head_is_a_non_ascii_digit_is_a_401_not_a_500(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method, headers={"X-Queue-Token": ODD_DIGIT_TOKEN})

    assert response.status_code == 401, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "TOKEN_INVALID"
