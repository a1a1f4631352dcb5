"""The catalogue cache on real MariaDB + Redis (issue 6's must-show).

Every kind of seat transition goes through HTTP and an in-thread PartitionWorker; the next reads of
the seat map and the schedule list show it without a rebuild. A cold key read by 200 threads at
once is rebuilt from the database exactly once. With Redis down, reads come from the database.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from config.bootstrap import current
from config.settings import Settings
from models import concerts
from models.cache import CatalogueCache, sched_key, schedule_keys
from models.concerts import AVAILABLE, HELD, RESERVED, NewSchedule, Seat, create_concert
from models.db import db, utcnow
from models.reservations import hold_seat
from tests.support.helpers import make_app, worker_thread
from workers.reservations import enqueue_expiries

pytestmark = pytest.mark.integration

API = "/api/v1"
WAIT = {"Prefer": "wait=5"}
CLOSED_REDIS = "redis://127.0.0.1:1/0"
READERS = 200


@dataclass(frozen=True)
class Demo:
    concert_id: int
    schedule_id: int
    other_schedule_id: int
    seat_id: int


@pytest.fixture
def redis_url(redis_any: str) -> str:
    """Every test here runs on the single Redis server and on the Redis Cluster."""
    return redis_any


@pytest.fixture
def live_settings(live_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The conftest's live settings, with the hold TTL a test asks for (indirect parameter)."""
    return live_settings.with_(hold_ttl=getattr(request, "param", 300))


@pytest.fixture
def demo(live_app: Flask) -> Demo:
    day = utcnow() + dt.timedelta(days=2)
    concert_id, views = create_concert(
        title="Live Cache", venue="Hall", schedules=[NewSchedule(day, 50, 50_000), NewSchedule(day, 50, 50_000)]
    )
    seat = Seat.get((Seat.schedule == views[0].schedule_id) & (Seat.number == 10))
    db.close()
    return Demo(concert_id, views[0].schedule_id, views[1].schedule_id, seat.id)


@pytest.fixture
def db_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the catalogue's database reads by function name (thread-safe)."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    for name in ("list_schedules", "seat_map"):
        real = getattr(concerts, name)

        def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = name, **kwargs: Any) -> Any:
            with lock:
                calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(concerts, name, counted)
    return calls


@pytest.fixture
def pipeline(live_app: Flask) -> Iterator[Any]:
    """The partition worker as a thread owning every partition; always stopped and joined."""
    with worker_thread() as worker:
        yield worker


@dataclass
class User:
    client: FlaskClient
    headers: dict[str, str]
    demo: Demo

    def seen(self) -> tuple[str, int, int]:
        """(seat status on the seat map, availableSeats of its schedule, of the other schedule) over HTTP."""
        seats = self.client.get(f"{API}/schedules/{self.demo.schedule_id}/seats", headers=self.headers)
        schedules = self.client.get(f"{API}/concerts/{self.demo.concert_id}/schedules")
        assert (seats.status_code, schedules.status_code) == (200, 200)
        status = next(s["status"] for s in seats.get_json()["seats"] if s["seatId"] == self.demo.seat_id)
        available = {s["scheduleId"]: s["availableSeats"] for s in schedules.get_json()["schedules"]}
        return status, available[self.demo.schedule_id], available[self.demo.other_schedule_id]

    def hold(self) -> int:
        body = {"scheduleId": self.demo.schedule_id, "seatId": self.demo.seat_id}
        response = self.client.post(f"{API}/reservations", json=body, headers={**self.headers, **WAIT})
        assert response.status_code == 201, response.get_json()
        return int(response.get_json()["reservationId"])

    def cancel(self, reservation_id: int) -> None:
        response = self.client.delete(f"{API}/reservations/{reservation_id}", headers=self.headers)
        assert (response.status_code, response.get_json()["status"]) == (200, "CANCELLED"), response.get_json()

    def pay(self, reservation_id: int) -> None:
        charged = self.client.post(f"{API}/users/1/points/charge", json={"amount": 50_000})
        assert charged.status_code == 200, charged.get_json()
        body = {"reservationId": reservation_id}
        response = self.client.post(f"{API}/payments", json=body, headers={**self.headers, **WAIT})
        assert response.status_code == 201, response.get_json()

    def expire(self, reservation_id: int) -> None:
        time.sleep(1.2)  # HOLD_TTL=1: the hold is past its time
        assert enqueue_expiries() == 1
        db.close()
        deadline = time.monotonic() + 10
        while self.seen()[0] != AVAILABLE:  # each look is a cached read; the expiry lands asynchronously
            assert time.monotonic() < deadline, "the expiry never showed on the seat map"
            time.sleep(0.05)


@pytest.fixture
def user(live_client: FlaskClient, demo: Demo) -> User:
    response = live_client.post(f"{API}/queue/tokens", json={"userId": 1, "concertId": demo.concert_id})
    assert response.get_json()["status"] == "ACTIVE", response.get_json()
    return User(live_client, {"X-Queue-Token": response.get_json()["token"]}, demo)


# name -> (before priming, the transition, the seat's new status, change of availableSeats)
TRANSITIONS: dict[str, tuple[Callable[[User], Any], Callable[[User, Any], Any], str, int]] = {
    "hold": (lambda u: None, lambda u, _: u.hold(), HELD, -1),
    "cancel": (User.hold, User.cancel, AVAILABLE, +1),
    "expiry": (User.hold, User.expire, AVAILABLE, +1),
    "payment": (User.hold, User.pay, RESERVED, 0),
}


@pytest.mark.parametrize(
    ("name", "live_settings"), [(n, 1 if n == "expiry" else 300) for n in TRANSITIONS], indirect=["live_settings"]
)
def test_each_transition_shows_on_the_next_seat_map_and_schedule_list_without_a_rebuild(
    name, live_settings, pipeline, user, db_reads
):
    before, transition, status, delta = TRANSITIONS[name]
    # Given the seat in its starting state and both cache entries primed by reads
    reservation = before(user)
    _, available, other = user.seen()
    reads, rebuilds = dict(db_reads), user.client.application.extensions["catalogue_cache"].rebuilds

    # When the transition goes through HTTP and the partition worker
    transition(user, reservation)

    # Then the next reads show the new state, written through (no read of the catalogue tables)
    assert user.seen() == (status, available + delta, other)
    assert dict(db_reads) == reads
    assert user.client.application.extensions["catalogue_cache"].rebuilds == rebuilds
    assert Seat.get_by_id(user.demo.seat_id).status == status
    db.close()


def fallbacks(event: str = "fallback") -> Counter[str]:
    """Reads that went to the database because Redis raised (or, with event="gave_up_waiting",
    because a waiter gave up on another caller's rebuild), by cache, since the process started."""
    sample = REGISTRY.get_sample_value
    return Counter({k: sample("cache_events_total", {"cache": k, "event": event}) or 0 for k in ("seats", "schedules")})


def fresh_client(url: str, pool: int) -> redis.Redis:
    """A Redis client of its own with a pool of `pool` connections (per node on a cluster)."""
    if url.startswith("redis+cluster://"):
        from config.bootstrap import make_cluster

        return make_cluster(url)  # type: ignore[return-value]
    return redis.Redis.from_url(url, decode_responses=True, max_connections=pool)


@pytest.mark.parametrize("pool", [None, 1000], ids=["app-redis-client", "client-with-1000-connections"])
def test_200_concurrent_reads_of_cold_keys_rebuild_each_from_the_database_once(live_app, demo, db_reads, pool):
    # 200 readers as 8 processes' caches of 25 threads each: within a process the threads share one
    # thread's single flight; the 8 contend for the Redis lock. The caches use the app's own client,
    # or a client whose pool cannot run out (isolates the single flight from pool waits)
    app_cache: CatalogueCache = live_app.extensions["catalogue_cache"]
    client = app_cache.r if pool is None else fresh_client(live_app.config["SETTINGS"].redis_url, pool)
    caches = [app_cache if pool is None else CatalogueCache(client)] + [CatalogueCache(client) for _ in range(7)]
    hold_seat(user_id=1, schedule_id=demo.schedule_id, seat_id=demo.seat_id, job_id="j1", hold_ttl=300, max_holds=4)
    expected_seats = concerts.seat_map(schedule_id=demo.schedule_id)
    expected_schedules = concerts.list_schedules(concert_id=demo.concert_id)
    db.close()
    assert [s.available_seats for s in expected_schedules] == [49, 50]
    r = current().redis
    r.delete(*schedule_keys(demo.schedule_id)[1:])
    r.delete(sched_key(demo.concert_id))
    fallbacks_before, gave_up_before = fallbacks(), fallbacks("gave_up_waiting")
    db_reads.clear()
    barrier = threading.Barrier(READERS)
    results: list[Any] = [None] * READERS

    def read(i: int) -> None:
        with live_app.app_context():
            barrier.wait()
            try:  # like a request: a connection is opened lazily (only a rebuild needs one) and closed after
                cache = caches[i % len(caches)]
                if i % 2:
                    seats = cache.seat_map(schedule_id=demo.schedule_id)
                    schedules = cache.schedules(concert_id=demo.concert_id)
                else:
                    schedules = cache.schedules(concert_id=demo.concert_id)
                    seats = cache.seat_map(schedule_id=demo.schedule_id)
                results[i] = (seats, schedules)
            finally:
                if not db.is_closed():
                    db.close()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    fell_back, gave_up = fallbacks() - fallbacks_before, fallbacks("gave_up_waiting") - gave_up_before
    assert db_reads == {"seat_map": 1, "list_schedules": 1}, (
        f"database reads {dict(db_reads)}; of them fallbacks on a Redis error: {dict(fell_back)}, "
        f"waiters that gave up: {dict(gave_up)}"
    )
    assert results.count((expected_seats, expected_schedules)) == READERS


def test_with_redis_down_reads_come_from_the_database_and_readyz_names_redis(live_settings):
    app = make_app(live_settings.with_(redis_url=CLOSED_REDIS))
    client = app.test_client()
    try:
        day = utcnow() + dt.timedelta(days=1)
        concert_id, views = create_concert(title="No Redis", venue="Hall", schedules=[NewSchedule(day, 20, 100)] * 2)
        seat = Seat.get((Seat.schedule == views[0].schedule_id) & (Seat.number == 3))
        hold_seat(user_id=1, schedule_id=seat.schedule_id, seat_id=seat.id, job_id="j1", hold_ttl=300, max_holds=4)

        schedules = client.get(f"{API}/concerts/{concert_id}/schedules")
        assert schedules.status_code == 200
        assert [s["availableSeats"] for s in schedules.get_json()["schedules"]] == [19, 20]
        cache: CatalogueCache = app.extensions["catalogue_cache"]
        assert [(s.number, s.status) for s in cache.seat_map(schedule_id=seat.schedule_id, status=HELD)] == [(3, HELD)]
        assert len(cache.seat_map(schedule_id=seat.schedule_id)) == 20

        ready = client.get(f"{API}/readyz")
        assert ready.status_code == 503
        checks = ready.get_json()["checks"]
        assert checks["database"] == "ok"
        assert checks["redis"].startswith("error") and "Connection" in checks["redis"]
    finally:
        db.close()
