"""Operator controls: the admin queue API, its audit log, and their effect on admission and joins."""

from __future__ import annotations

import datetime as dt
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from models.queue_controls import Controls, QueueControls, fingerprint
from models.waiting_room import ACTIVE, WAITING, WaitingRoom

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _concert(client: FlaskClient, seats: int = 3) -> int:
    body = {
        "title": "Night",
        "venue": "Hall",
        "schedules": [{"startsAt": "2030-01-01T19:00:00Z", "seatCount": seats, "price": 1000}],
    }
    response = client.post("/api/v1/admin/concerts", json=body, headers=ADMIN)
    assert response.status_code == 201
    return int(response.get_json()["concertId"])


def _patch(client: FlaskClient, concert_id: int, body: dict[str, Any], headers: dict[str, str] = ADMIN) -> Any:
    return client.patch(f"/api/v1/admin/concerts/{concert_id}/queue", json=body, headers=headers)


def _room(client: fakeredis.FakeRedis, limit: int = 2) -> WaitingRoom:
    return WaitingRoom(client, active_limit=limit, active_ttl=600, waiting_ttl=300)


def test_get_reports_counts_seats_and_default_controls(client: FlaskClient) -> None:
    concert_id = _concert(client)
    client.post("/api/v1/queue/tokens", json={"userId": 1, "concertId": concert_id})

    state = client.get(f"/api/v1/admin/concerts/{concert_id}/queue", headers=ADMIN).get_json()

    assert state == {
        "concertId": concert_id,
        "waiting": 0,
        "prequeued": 0,
        "active": 1,
        "admittedTotal": 1,
        "admittedPerMinute": 1,
        "activeLimit": 100,
        "admitPerSecond": None,
        "paused": False,
        "soldOut": False,
        "held": 0,
        "sold": 0,
        "available": 3,
        "notice": None,
    }


def test_patch_changes_only_the_given_fields_and_audits_each_change(client: FlaskClient) -> None:
    concert_id = _concert(client)

    response = _patch(client, concert_id, {"paused": True, "notice": "  Doors at 7  ", "activeLimit": 5})
    assert response.status_code == 200
    assert response.get_json()["paused"] is True
    assert response.get_json()["notice"] == "Doors at 7"
    assert response.get_json()["activeLimit"] == 5
    again = _patch(client, concert_id, {"paused": False, "activeLimit": None}).get_json()
    assert (again["paused"], again["activeLimit"], again["notice"]) == (False, 100, "Doors at 7")

    entries = client.get("/api/v1/admin/audit", headers=ADMIN).get_json()["entries"]
    changes = [(e["field"], e["before"], e["after"]) for e in entries]
    # newest first; within one PATCH the fields in the order given
    assert sorted(changes[:2]) == [("activeLimit", 5, None), ("paused", True, False)]
    assert sorted(changes[2:]) == [("activeLimit", None, 5), ("notice", None, "Doors at 7"), ("paused", False, True)]
    assert {e["who"] for e in entries} == {fingerprint("test-admin-token")}
    assert "test-admin-token" not in str(entries)
    assert all(e["concertId"] == concert_id for e in entries)
    assert dt.datetime.fromisoformat(entries[0]["at"].replace("Z", "+00:00")).tzinfo is not None


def test_a_patch_that_changes_nothing_writes_no_audit_entry(client: FlaskClient) -> None:
    concert_id = _concert(client)
    _patch(client, concert_id, {"paused": False, "notice": ""})

    assert client.get("/api/v1/admin/audit", headers=ADMIN).get_json()["entries"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"paused": "yes"},
        {"activeLimit": -1},
        {"admitPerSecond": 0},
        {"notice": "x" * 281},
        {"colour": "red"},
    ],
)
def test_invalid_controls_are_a_400_and_change_nothing(client: FlaskClient, body: dict[str, Any]) -> None:
    concert_id = _concert(client)

    response = _patch(client, concert_id, body)

    assert response.status_code == 400
    assert response.get_json()["code"] == "VALIDATION_ERROR"
    assert client.get("/api/v1/admin/audit", headers=ADMIN).get_json()["entries"] == []


def test_the_admin_queue_routes_need_the_admin_token(client: FlaskClient) -> None:
    concert_id = _concert(client)

    assert client.get(f"/api/v1/admin/concerts/{concert_id}/queue").status_code == 401
    assert _patch(client, concert_id, {"paused": True}, {"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/admin/audit").status_code == 401
    assert client.get("/api/v1/admin/concerts/999/queue", headers=ADMIN).status_code == 404


def test_the_notice_reaches_fans_in_token_responses(client: FlaskClient) -> None:
    concert_id = _concert(client)
    _patch(client, concert_id, {"notice": "Sale resumes at 20:05"})

    joined = client.post("/api/v1/queue/tokens", json={"userId": 7, "concertId": concert_id}).get_json()
    polled = client.get("/api/v1/queue/token", headers={"X-Queue-Token": joined["token"]}).get_json()

    assert joined["notice"] == polled["notice"] == "Sale resumes at 20:05"


def test_while_paused_a_joiner_waits_even_with_free_slots(client: FlaskClient) -> None:
    concert_id = _concert(client)
    _patch(client, concert_id, {"paused": True})

    joined = client.post("/api/v1/queue/tokens", json={"userId": 7, "concertId": concert_id}).get_json()

    assert joined["status"] == WAITING and joined["rank"] == 1


def test_controls_persist_in_redis_across_instances() -> None:
    redis = fakeredis.FakeRedis(decode_responses=True)
    QueueControls(redis).change(concert_id=4, who="admin:x", changes={"admitPerSecond": 3, "notice": "hi"})

    assert QueueControls(redis).get(concert_id=4) == Controls(admit_per_second=3, notice="hi")


def test_the_pass_admits_nobody_while_paused_and_all_free_after_resume() -> None:
    redis = fakeredis.FakeRedis(decode_responses=True)
    room, controls = _room(redis, limit=3), QueueControls(redis)
    controls.change(concert_id=1, who="admin:x", changes={"paused": True})
    tokens = [room.issue(user_id=u, concert_id=1, limit=controls.get(concert_id=1).join_limit(3)) for u in (1, 2, 3)]
    assert [t.status for t in tokens] == [WAITING] * 3

    def operator(concert_id: int) -> tuple[int, int | None]:
        c = controls.get(concert_id=concert_id)
        return c.limit(3), c.per_pass(1.0)

    assert room.admit_all(is_sold_out=lambda _: False, controls=operator)[0].admitted == 0
    controls.change(concert_id=1, who="admin:x", changes={"paused": False})
    assert room.admit_all(is_sold_out=lambda _: False, controls=operator)[0].admitted == 3
    assert room.admitted_total(concert_id=1) == 3


def test_admit_per_second_caps_each_pass_and_active_limit_bounds_slots() -> None:
    redis = fakeredis.FakeRedis(decode_responses=True)
    room = _room(redis, limit=100)
    for user in range(1, 11):
        room.issue(user_id=user, concert_id=1, limit=0)
    paced = Controls(admit_per_second=4)
    limited = Controls(active_limit=6)

    first = room.admit(concert_id=1, limit=paced.limit(100), per_pass=paced.per_pass(1.0))
    second = room.admit(concert_id=1, limit=limited.limit(100), per_pass=limited.per_pass(1.0))

    assert (first.admitted, first.active) == (4, 4)
    assert (second.admitted, second.active, second.waiting) == (2, 6, 4)
    assert room.status(token=room.issue(user_id=1, concert_id=1).token).status == ACTIVE


def test_a_paced_queue_admits_no_joiner_directly() -> None:
    assert Controls(admit_per_second=5).join_limit(100) == 0
    assert Controls(paused=True).join_limit(100) == 0
    assert Controls(active_limit=7).join_limit(100) == 7
    assert Controls(admit_per_second=5).per_pass(0.5) == 3


def test_control_values_are_exported_as_metrics(app: Flask, client: FlaskClient) -> None:
    concert_id = _concert(client)
    _patch(client, concert_id, {"paused": True, "activeLimit": 9, "admitPerSecond": 4, "notice": "hello"})

    text = client.get("/api/v1/metrics").get_data(as_text=True)

    assert f'queue_control_paused{{concert="{concert_id}"}} 1.0' in text
    assert f'queue_control_active_limit{{concert="{concert_id}"}} 9.0' in text
    assert f'queue_control_admit_per_second{{concert="{concert_id}"}} 4.0' in text
    assert f'queue_control_notice_set{{concert="{concert_id}"}} 1.0' in text


def test_get_counts_fans_in_a_fair_start_pre_queue(client: FlaskClient) -> None:
    opens = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    body = {
        "title": "Fair",
        "venue": "Hall",
        "saleOpensAt": opens,
        "schedules": [{"startsAt": "2030-01-01T19:00:00Z", "seatCount": 2, "price": 1000}],
    }
    concert_id = client.post("/api/v1/admin/concerts", json=body, headers=ADMIN).get_json()["concertId"]
    for user in (1, 2):
        joined = client.post("/api/v1/queue/tokens", json={"userId": user, "concertId": concert_id})
        assert joined.get_json()["status"] == "PREQUEUED"

    state = client.get(f"/api/v1/admin/concerts/{concert_id}/queue", headers=ADMIN).get_json()

    assert (state["prequeued"], state["waiting"], state["active"]) == (2, 0, 0)
