"""The catalogue over HTTP on the unit tier: concerts, schedules with counts, seat maps, admin create."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from models import seed
from models.concerts import HELD, RESERVED, Concert, Schedule, Seat
from tests.support.helpers import drop_catalogue_cache, make_app, problem_of, queue_headers

ADMIN = {"Authorization": "Bearer test-admin-token"}
NEW_CONCERT: dict[str, Any] = {
    "title": "Spring Live",
    "venue": "Seoul Arena",
    "schedules": [
        {"startsAt": "2030-05-01T19:00:00+09:00", "seatCount": 3, "price": 1000},
        {"startsAt": "2030-05-02T19:30:00+09:00", "seatCount": 1000, "price": 2500},
    ],
}


def create(client: FlaskClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return client.post("/api/v1/admin/concerts", json=body, headers=ADMIN if headers is None else headers)


def with_schedule(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(NEW_CONCERT)
    body["schedules"][0].update(changes)
    return body


def seats_response(client: FlaskClient, schedule_id: int | str, query: str = "") -> Any:
    concert_id = Schedule.get_by_id(schedule_id).concert_id if str(schedule_id).isdigit() else 1
    return client.get(f"/api/v1/schedules/{schedule_id}/seats{query}", headers=queue_headers(client, 1, concert_id))


def seats_of(client: FlaskClient, schedule_id: int, query: str = "") -> list[dict[str, Any]]:
    response = seats_response(client, schedule_id, query)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["scheduleId"] == schedule_id
    return list(response.get_json()["seats"])


@pytest.fixture
def demo(client: FlaskClient) -> int:
    """The demo concert (2 schedules x 50 seats); returns its id."""
    concert_id = seed.seed_demo()
    assert concert_id is not None
    return concert_id


def test_no_concerts_lists_empty(client: FlaskClient) -> None:
    assert client.get("/api/v1/concerts").get_json() == {"concerts": []}


def test_concerts_list_shows_the_demo_concert(client: FlaskClient, demo: int) -> None:
    response = client.get("/api/v1/concerts")

    assert response.status_code == 200
    assert response.get_json() == {"concerts": [{"concertId": demo, "title": "Demo Night", "venue": "Olympic Hall"}]}
    assert seed.seed_demo() is None  # a second demo seed adds nothing
    assert len(client.get("/api/v1/concerts").get_json()["concerts"]) == 1


def test_schedules_show_total_and_available_seats_by_start_time(client: FlaskClient, demo: int) -> None:
    body = client.get(f"/api/v1/concerts/{demo}/schedules").get_json()

    assert body["concertId"] == demo
    schedules = body["schedules"]
    assert [(s["totalSeats"], s["availableSeats"]) for s in schedules] == [(50, 50), (50, 50)]
    starts = [dt.datetime.fromisoformat(s["startsAt"].removesuffix("Z")) for s in schedules]
    assert all(s["startsAt"].endswith("Z") for s in schedules)
    assert starts[1] - starts[0] == dt.timedelta(days=1)


def test_held_and_reserved_seats_are_not_available(client: FlaskClient, demo: int) -> None:
    # Given three seats HELD and two RESERVED in the first schedule only
    first, second = (s["scheduleId"] for s in client.get(f"/api/v1/concerts/{demo}/schedules").get_json()["schedules"])
    Seat.update(status=HELD).where((Seat.schedule == first) & Seat.number.in_([1, 2, 3])).execute()
    Seat.update(status=RESERVED).where((Seat.schedule == first) & Seat.number.in_([10, 20])).execute()
    drop_catalogue_cache()  # direct DB writes bypass the cache write-through

    # When the schedules are listed
    schedules = client.get(f"/api/v1/concerts/{demo}/schedules").get_json()["schedules"]

    # Then the first schedule shows 45 available, the second is untouched
    counts = {s["scheduleId"]: (s["totalSeats"], s["availableSeats"]) for s in schedules}
    assert counts == {first: (50, 45), second: (50, 50)}


def test_seat_map_is_ordered_by_number_and_filters_by_status(client: FlaskClient, demo: int) -> None:
    schedule_id = client.get(f"/api/v1/concerts/{demo}/schedules").get_json()["schedules"][0]["scheduleId"]
    Seat.update(status=HELD).where((Seat.schedule == schedule_id) & Seat.number.in_([4, 2])).execute()
    Seat.update(status=RESERVED).where((Seat.schedule == schedule_id) & (Seat.number == 7)).execute()
    drop_catalogue_cache()  # direct DB writes bypass the cache write-through

    every = seats_of(client, schedule_id)
    assert [s["number"] for s in every] == list(range(1, 51))
    assert {s["price"] for s in every} == {50_000}
    assert len({s["seatId"] for s in every}) == 50
    assert [s["number"] for s in seats_of(client, schedule_id, "?status=HELD")] == [2, 4]
    assert [s["number"] for s in seats_of(client, schedule_id, "?status=RESERVED")] == [7]
    available = seats_of(client, schedule_id, "?status=AVAILABLE")
    assert [s["number"] for s in available] == [n for n in range(1, 51) if n not in (2, 4, 7)]
    assert {s["status"] for s in available} == {"AVAILABLE"}


def test_seat_map_orders_by_number_not_by_insertion(client: FlaskClient) -> None:
    # Given seats inserted out of order
    concert = Concert.create(title="Odd", venue="Hall")
    schedule = Schedule.create(concert=concert, starts_at=dt.datetime(2030, 1, 1, 10), total_seats=5)
    for number in (5, 3, 1, 4, 2):
        Seat.create(schedule=schedule, number=number, price=number * 100)

    seats = seats_of(client, schedule.id)

    assert [(s["number"], s["price"]) for s in seats] == [(n, n * 100) for n in range(1, 6)]


@pytest.mark.parametrize("query", ["?status=BAD", "?status=available"])
def test_seat_map_with_an_unknown_status_is_400(client: FlaskClient, demo: int, query: str) -> None:
    response = seats_response(client, 1, query)

    assert response.status_code == 400
    assert problem_of(response)["code"] == "VALIDATION_ERROR"


def test_seat_map_without_a_queue_token_is_401(client: FlaskClient, demo: int) -> None:
    response = client.get("/api/v1/schedules/1/seats")

    assert response.status_code == 401
    assert problem_of(response)["code"] == "TOKEN_MISSING"


def test_unknown_concert_or_schedule_is_404(client: FlaskClient, demo: int) -> None:
    token = queue_headers(client, 1, demo)

    for response in (
        client.get("/api/v1/concerts/999/schedules"),
        client.get("/api/v1/schedules/999/seats", headers=token),
    ):
        assert response.status_code == 404
        assert problem_of(response)["code"] == "NOT_FOUND"


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", str(2**63)])
def test_non_numeric_or_out_of_range_ids_are_400(client: FlaskClient, demo: int, bad: str) -> None:
    token = queue_headers(client, 1, demo)

    for response in (
        client.get(f"/api/v1/concerts/{bad}/schedules"),
        client.get(f"/api/v1/schedules/{bad}/seats", headers=token),
    ):
        assert response.status_code == 400, response.request.path
        assert problem_of(response)["code"] == "VALIDATION_ERROR"


def test_admin_creates_a_concert_with_numbered_seats_and_utc_times(client: FlaskClient) -> None:
    response = create(client, NEW_CONCERT)

    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    concert_id = body["concertId"]
    assert response.headers["Location"].endswith(f"/api/v1/concerts/{concert_id}/schedules")
    assert [(s["startsAt"], s["totalSeats"]) for s in body["schedules"]] == [
        ("2030-05-01T10:00:00.000Z", 3),
        ("2030-05-02T10:30:00.000Z", 1000),
    ]
    first, second = (s["scheduleId"] for s in body["schedules"])
    assert Schedule.get_by_id(first).starts_at == dt.datetime(2030, 5, 1, 10, 0)
    assert [(s["number"], s["price"], s["status"]) for s in seats_of(client, first)] == [
        (1, 1000, "AVAILABLE"),
        (2, 1000, "AVAILABLE"),
        (3, 1000, "AVAILABLE"),
    ]
    assert [s["number"] for s in seats_of(client, second)] == list(range(1, 1001))
    listed = client.get(f"/api/v1/concerts/{concert_id}/schedules").get_json()["schedules"]
    assert [(s["startsAt"], s["availableSeats"]) for s in listed] == [
        ("2030-05-01T10:00:00.000Z", 3),
        ("2030-05-02T10:30:00.000Z", 1000),
    ]
    assert client.get("/api/v1/concerts").get_json()["concerts"] == [
        {"concertId": concert_id, "title": "Spring Live", "venue": "Seoul Arena"}
    ]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "TOKEN_MISSING"),
        ({"Authorization": "Bearer wrong"}, "TOKEN_INVALID"),
        ({"Authorization": "test-admin-token"}, "TOKEN_MISSING"),
        ({"Authorization": "Basic x"}, "TOKEN_MISSING"),
    ],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
def test_admin_without_the_right_bearer_is_401_with_a_challenge_and_creates_nothing(
    client: FlaskClient, headers: dict[str, str], code: str
) -> None:
    response = create(client, NEW_CONCERT, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert problem_of(response)["code"] == code
    assert (Concert.select().count(), Schedule.select().count(), Seat.select().count()) == (0, 0, 0)


def test_admin_is_off_when_admin_token_is_unset(unit_settings: Settings) -> None:
    from models.db import db

    client = make_app(unit_settings.with_(admin_token="")).test_client()
    try:
        response = create(client, NEW_CONCERT, headers={"Authorization": "Bearer "})

        assert response.status_code == 403
        assert Concert.select().count() == 0
    finally:
        db.close()


@pytest.mark.parametrize(
    "body",
    [
        with_schedule(seatCount=0),
        with_schedule(seatCount=1001),
        with_schedule(seatCount="3"),
        with_schedule(price=-1),
        with_schedule(startsAt="2030-05-01T19:00:00"),
        with_schedule(startsAt="next friday"),
        with_schedule(extra=1),
        {**NEW_CONCERT, "genre": "rock"},
        {**NEW_CONCERT, "schedules": []},
        {**NEW_CONCERT, "title": ""},
        {**NEW_CONCERT, "title": "   "},
        {"title": "T", "venue": "V"},
    ],
    ids=[
        "seatCount-0",
        "seatCount-1001",
        "seatCount-string",
        "negative-price",
        "naive-startsAt",
        "unparseable-startsAt",
        "unknown-schedule-field",
        "unknown-field",
        "no-schedules",
        "empty-title",
        "blank-title",
        "missing-schedules",
    ],
)
def test_admin_rejects_a_bad_body_with_400_and_creates_nothing(client: FlaskClient, body: dict[str, Any]) -> None:
    response = create(client, body)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "VALIDATION_ERROR"
    assert (Concert.select().count(), Seat.select().count()) == (0, 0)


def test_admin_rejects_a_form_body_with_400(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/admin/concerts",
        data="title=T&venue=V",
        content_type="application/x-www-form-urlencoded",
        headers=ADMIN,
    )

    assert response.status_code == 400, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "VALIDATION_ERROR"
    assert Concert.select().count() == 0
