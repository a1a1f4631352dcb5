"""DATABASE_REPLICA_URL on a real MariaDB primary + replica (issue 14, SPEC §2 "Beyond one machine").

The app runs over HTTP (Flask test client + an in-thread partition worker) with both URLs. The
replica's answers are told apart from the primary's by stopping replication (STOP SLAVE): what
the primary wrote after that exists only there, so a read that misses it was served by the replica.

Hidden ways this can fail, each checked below:
* a catalogue read that silently runs on the primary (routing not applied: the lagging replica's
  view never shows);
* a decision (hold, payment) or a read of one's own write taken from the lagging replica: a seat
  held twice, a payment that reads back as missing, a reservation still HELD after it was paid;
* a cache rebuild from the lagging replica: the seat map shows a HELD seat AVAILABLE until the
  TTL, although the version check passes (the version counts transitions the replica lacks);
* a replica that went away answered as a 500, or its dead pooled connections reused forever;
* a replica that came back never used again.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.bootstrap import current
from config.settings import Settings
from models.cache import schedule_keys
from models.concerts import NewSchedule, Seat, create_concert
from models.db import REPLICA_READ_TIMEOUT, RoutingDatabase, db, utcnow
from models.seat_pages import pages_key
from tests.support.helpers import make_app, worker_thread
from tests.support.identity import TEST_JWT_SECRET
from tests.support.mariadb_pair import Pair, sql

pytestmark = pytest.mark.integration

API = "/api/v1"
WAIT = {"Prefer": "wait=5"}
ADMIN = {"Authorization": "Bearer test-admin-token"}


_MINE: dict[str, float] = {}


class _ThisThreadsReads:
    """database_replica_reads_total as models.db counts it, plus this test thread's own share.

    The app's in-thread worker (and threads left by earlier tests in this process) run marked
    reads too; the global counter then moved by more than the request under test made (5 for
    one concert list in a full-suite run). The Flask test client serves a request in the test's
    own thread, so counting that thread alone is exact.
    """

    def __init__(self, real: Any) -> None:
        self.real, self.thread = real, threading.get_ident()

    def labels(self, served_by: str) -> Any:
        counter = self.real.labels(served_by)
        if threading.get_ident() != self.thread:
            return counter
        outer = self

        class _Inc:
            def inc(self, amount: float = 1) -> None:
                counter.inc(amount)
                if threading.get_ident() == outer.thread:
                    _MINE[served_by] = _MINE.get(served_by, 0.0) + amount

        return _Inc()


@pytest.fixture(autouse=True)
def _count_this_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.db

    _MINE.clear()
    monkeypatch.setattr(models.db, "REPLICA_READS", _ThisThreadsReads(models.db.REPLICA_READS))


def replica_reads(served_by: str) -> float:
    """Lag-tolerant reads this test's thread made so far that ran on `served_by` (replica or primary)."""
    return _MINE.get(served_by, 0.0)


@pytest.fixture
def pair_settings(mariadb_pair: Pair, redis_url: str, request: pytest.FixtureRequest) -> Settings:
    """Settings with the pair's primary as DATABASE_URL and its replica as DATABASE_REPLICA_URL; no
    lag limit unless a test asks for one (indirect parameter): lag is how these tests tell the
    servers apart."""
    return Settings().with_(
        database_url=mariadb_pair.primary_url,
        database_replica_url=mariadb_pair.replica_url,
        database_replica_max_lag=getattr(request, "param", 0.0),
        redis_url=redis_url,
        admin_token="test-admin-token",
        auth_jwt_secret=TEST_JWT_SECRET,
    )


@pytest.fixture
def pair_app(pair_settings: Settings, mariadb_pair: Pair) -> Iterator[Flask]:
    """The app on the pair, a fresh schema (replicated), an empty Redis db; replication running after."""
    app = make_app(pair_settings)
    current().redis.flushdb()
    mariadb_pair.wait_caught_up()
    # the warm-up ran before the fresh schema and found no tables on the replica: no rest for that
    db.set_replica(db.replica, max_lag=pair_settings.database_replica_max_lag)
    try:
        yield app
    finally:
        db.close()
        try:
            replicating = mariadb_pair.replicating()
        except Exception:  # the test shut the replica down and failed before starting it again
            mariadb_pair.restart_replica()
            replicating = mariadb_pair.replicating()
        if not replicating:
            mariadb_pair.start_replication()


@pytest.fixture
def concert(pair_app: Flask, mariadb_pair: Pair) -> tuple[int, int]:
    """(concert id, schedule id) of a concert with 10 seats, on both servers."""
    concert_id, [schedule] = create_concert(
        title="Replicated", venue="Hall", schedules=[NewSchedule(utcnow() + dt.timedelta(days=2), 10, 1_000)]
    )
    db.close()
    mariadb_pair.wait_caught_up()
    return concert_id, schedule.schedule_id


def fan(app: Flask, user_id: int, concert_id: int) -> tuple[FlaskClient, dict[str, str]]:
    """A test client acting for `user_id` and its ACTIVE queue token's header."""
    client = app.test_client()
    response = client.post(f"{API}/queue/tokens", json={"userId": user_id, "concertId": concert_id})
    assert response.get_json()["status"] == "ACTIVE", response.get_json()
    return client, {"X-Queue-Token": response.get_json()["token"]}


def titles(client: FlaskClient) -> list[str]:
    response = client.get(f"{API}/concerts")
    assert response.status_code == 200, response.get_json()
    return [c["title"] for c in response.get_json()["concerts"]]


def seat_status(client: FlaskClient, headers: dict[str, str], schedule_id: int, seat_id: int) -> str:
    response = client.get(f"{API}/schedules/{schedule_id}/seats", headers=headers)
    assert response.status_code == 200, response.get_json()
    return str(next(s["status"] for s in response.get_json()["seats"] if s["seatId"] == seat_id))


def test_catalogue_reads_come_from_the_lagging_replica_while_holds_payments_and_own_writes_use_the_primary(
    pair_app: Flask, mariadb_pair: Pair, concert: tuple[int, int]
) -> None:
    concert_id, schedule_id = concert
    seat_id = Seat.get((Seat.schedule == schedule_id) & (Seat.number == 1)).id
    db.close()
    alice, alice_token = fan(pair_app, 1, concert_id)
    bob, bob_token = fan(pair_app, 2, concert_id)
    assert alice.post(f"{API}/users/1/points/charge", json={"amount": 5_000}).status_code == 200
    mariadb_pair.wait_caught_up()

    # Given the replica stops applying the primary's writes, and a concert is created after that
    mariadb_pair.stop_replication()
    created = alice.post(
        f"{API}/admin/concerts",
        headers=ADMIN,
        json={
            "title": "Only on the primary",
            "venue": "Hall",
            "schedules": [{"startsAt": "2030-01-01T19:00:00Z", "seatCount": 3, "price": 10}],
        },
    )
    assert created.status_code == 201, created.get_json()
    new_concert = created.get_json()["concertId"]

    # Then the concert list is the replica's (it lacks the new concert): the replica answered
    served = replica_reads("replica")
    assert titles(alice) == ["Replicated"]
    assert replica_reads("replica") == served + 1
    # and the new concert's schedules are found all the same (a cache fill reads the primary)
    schedules = alice.get(f"{API}/concerts/{new_concert}/schedules")
    assert schedules.status_code == 200 and len(schedules.get_json()["schedules"]) == 1, schedules.get_json()

    with worker_thread():
        # When Alice holds seat 1 while the replica still has it AVAILABLE
        held = alice.post(
            f"{API}/reservations", json={"scheduleId": schedule_id, "seatId": seat_id}, headers={**alice_token, **WAIT}
        )
        assert held.status_code == 201, held.get_json()
        reservation_id = held.get_json()["reservationId"]
        assert sql(mariadb_pair.replica_url, "SELECT status FROM seats WHERE id = %s", seat_id) == [("AVAILABLE",)]

        # Then Bob cannot hold it (the decision reads the primary)
        taken = bob.post(
            f"{API}/reservations", json={"scheduleId": schedule_id, "seatId": seat_id}, headers={**bob_token, **WAIT}
        )
        assert (taken.status_code, taken.get_json()["code"]) == (409, "SEAT_NOT_AVAILABLE"), taken.get_json()

        # and a cold seat-map cache is filled from the primary: HELD, not the replica's AVAILABLE
        current().redis.delete(schedule_keys(schedule_id)[1], pages_key(schedule_id))
        assert seat_status(bob, bob_token, schedule_id, seat_id) == "HELD"
        assert seat_status(bob, bob_token, schedule_id, seat_id) == "HELD"  # and so it stays cached

        # When Alice pays, her payment, reservation and balance read back at once (own writes: primary)
        paid = alice.post(f"{API}/payments", json={"reservationId": reservation_id}, headers={**alice_token, **WAIT})
        assert paid.status_code == 201, paid.get_json()
    payment = alice.get(f"{API}/payments/{paid.get_json()['paymentId']}")
    assert payment.status_code == 200, payment.get_json()
    reservation = alice.get(f"{API}/reservations/{reservation_id}", headers=alice_token)
    assert (reservation.status_code, reservation.get_json()["status"]) == (200, "CONFIRMED"), reservation.get_json()
    assert alice.get(f"{API}/users/1/points").get_json()["balance"] == 5_000 - 1_000
    mine = alice.get(f"{API}/me/reservations")
    assert [r["status"] for r in mine.get_json()["reservations"]] == ["CONFIRMED"], mine.get_json()
    assert sql(mariadb_pair.replica_url, "SELECT COUNT(*) FROM payments") == [(0,)]  # still lagging

    # When replication resumes, the replica's list catches up
    mariadb_pair.start_replication()
    assert titles(alice) == ["Replicated", "Only on the primary"]


def test_a_replica_that_goes_down_sends_lag_tolerant_reads_to_the_primary_and_is_used_again_when_back(
    pair_app: Flask, mariadb_pair: Pair, concert: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RoutingDatabase, "REPLICA_REST_S", 0.5)
    client = pair_app.test_client()
    assert titles(client) == ["Replicated"]  # a replica connection now waits in the pool

    # Given the replica server goes away (its pooled connection is dead)
    mariadb_pair.shutdown_replica()
    fell_back, served = replica_reads("primary"), replica_reads("replica")

    # Then every catalogue read still answers, from the primary: never a 500
    for _ in range(3):
        assert titles(client) == ["Replicated"]
        schedules = client.get(f"{API}/concerts/{concert[0]}/schedules")
        assert schedules.status_code == 200, schedules.get_json()
    assert replica_reads("primary") >= fell_back + 3 and replica_reads("replica") == served

    # When it is back, after the rest period the replica serves again
    mariadb_pair.restart_replica()
    time.sleep(0.6)
    assert titles(client) == ["Replicated"]
    assert replica_reads("replica") == served + 1


def test_a_frozen_replica_costs_one_read_two_seconds_then_the_primary_answers(
    pair_app: Flask, mariadb_pair: Pair, concert: tuple[int, int]
) -> None:
    """A replica that accepts connections and never answers (frozen, or a dropped network path):
    the read in flight on it gives up after REPLICA_READ_TIMEOUT (2 s, not the primary's 10 s)
    and is answered by the primary; the reads after it skip the resting replica."""
    client = pair_app.test_client()
    assert titles(client) == ["Replicated"]  # a replica connection just back in the pool: no ping
    with mariadb_pair.frozen_replica():
        started = time.monotonic()
        assert titles(client) == ["Replicated"]
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(5):
            assert titles(client) == ["Replicated"]
        next_five = time.monotonic() - started
    print(f"frozen replica: first read {first:.2f} s, next five {next_five:.3f} s")
    assert REPLICA_READ_TIMEOUT - 0.1 <= first < REPLICA_READ_TIMEOUT + 1.0
    assert next_five < 0.5


@pytest.mark.parametrize("pair_settings", [1.0], indirect=True)
def test_a_replica_that_stops_replicating_is_left_alone_until_it_caught_up(
    pair_app: Flask, mariadb_pair: Pair, concert: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DATABASE_REPLICA_MAX_LAG=1: a replica whose replication stopped (an error on the replica, an
    operator's STOP SLAVE) would serve an ever older catalogue and never show new holds to the
    expiry scan; it is noticed within LAG_CHECK_S and the reads go to the primary until it is back."""
    monkeypatch.setattr(RoutingDatabase, "REPLICA_REST_S", 0.3)
    monkeypatch.setattr(RoutingDatabase, "LAG_CHECK_S", 0.1)
    client = pair_app.test_client()
    assert titles(client) == ["Replicated"]

    # Given replication stops and a concert is created on the primary
    mariadb_pair.stop_replication()
    create_concert(title="New", venue="Hall", schedules=[NewSchedule(utcnow() + dt.timedelta(days=3), 2, 10)])
    db.close()

    # Then the lists come from the primary (the replica alone would not have it)
    time.sleep(0.15)
    served = replica_reads("replica")
    assert titles(client) == ["Replicated", "New"]
    assert titles(client) == ["Replicated", "New"]
    assert replica_reads("replica") == served

    # When replication resumes, after the rest the replica serves again
    mariadb_pair.start_replication()
    time.sleep(0.4)
    assert titles(client) == ["Replicated", "New"]
    assert replica_reads("replica") == served + 1


@pytest.fixture
def unreachable_replica_app(pair_settings: Settings) -> Iterator[Flask]:
    """The app with DATABASE_REPLICA_URL on a port nobody listens on."""
    app = make_app(pair_settings.with_(database_replica_url="mysql://root:@127.0.0.1:1/test"))
    current().redis.flushdb()
    yield app
    db.close()


def test_a_replica_unreachable_from_the_start_answers_from_the_primary(unreachable_replica_app: Flask) -> None:
    client: Any = unreachable_replica_app.test_client()
    assert client.get(f"{API}/concerts").get_json() == {"concerts": []}
    assert client.get(f"{API}/readyz").status_code == 200
