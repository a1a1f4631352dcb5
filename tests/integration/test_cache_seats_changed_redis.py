"""A group commit's write-through (cache.seats_changed: many seats of one schedule per script call)
on one Redis and on the Redis Cluster: every key it touches is declared and in the schedule's slot,
so the cluster runs it, directly and in the group's pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config.bootstrap import make_redis
from models.cache import CatalogueCache, schedule_keys

pytestmark = pytest.mark.integration

SCHEDULE = 730_778  # no other test uses this schedule id
SEATS = range(1, 1201)  # 3 script calls of <= 500 seats


@pytest.fixture
def redis_url(redis_any: str) -> str:
    return redis_any


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = make_redis(redis_url)
    c.delete(*schedule_keys(SCHEDULE))
    yield c
    c.delete(*schedule_keys(SCHEDULE))
    c.close()


@pytest.mark.parametrize("through", ["client", "pipeline"])
def test_many_seats_change_in_place_and_the_count_moves_by_their_sum(client: redis.Redis, through: str) -> None:
    ver, seats, avail = schedule_keys(SCHEDULE)
    client.hset(seats, mapping={str(s): f"AVAILABLE|{s}|100" for s in SEATS})
    client.set(avail, len(SEATS))
    cache = CatalogueCache(client)
    changes = [(s, s, 100, "HELD") for s in SEATS[:1100]] + [(s, s, 100, "AVAILABLE") for s in SEATS[1100:]]

    if through == "pipeline":
        pipe = client.pipeline(transaction=False)
        cache.seats_changed(schedule_id=SCHEDULE, changes=changes, client=pipe)
        pipe.execute()
    else:
        cache.seats_changed(schedule_id=SCHEDULE, changes=changes)

    assert client.hmget(seats, ["1", "500", "501", "1100", "1101"]) == [
        "HELD|1|100",
        "HELD|500|100",
        "HELD|501|100",
        "HELD|1100|100",
        "AVAILABLE|1101|100",
    ]
    assert int(client.get(avail)) == 100  # 1,200 - 1,100 held (the 100 left AVAILABLE did not move it)
    assert int(client.get(ver)) == 3  # one bump per call: a rebuild that read before them stores nothing
