"""The mark refresh's many-seat script (quick_refusal.mark_many) on one Redis and on the Redis
Cluster: every key it writes is declared and in the schedule's slot, so the cluster runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config.bootstrap import make_redis
from models import quick_refusal

pytestmark = pytest.mark.integration

SCHEDULE = 730_777  # no other test uses this schedule id


@pytest.fixture
def redis_url(redis_any: str) -> str:
    return redis_any


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = make_redis(redis_url)
    yield c
    c.delete(*[quick_refusal.taken_key(SCHEDULE, seat) for seat in range(1, 1201)])
    c.close()


def test_many_marks_are_written_with_their_ttl_and_read_back_as_refusals(client: redis.Redis) -> None:
    refusals = [(seat, f"seat {seat} is held") for seat in range(1, 1201)]  # 3 script calls of <= 500

    quick_refusal.mark_many(
        client, schedule_id=SCHEDULE, refusals=refusals, read_at_ms=quick_refusal.now_ms(), ttl_ms=5_000
    )

    values = client.mget([quick_refusal.taken_key(SCHEDULE, seat) for seat in (1, 500, 501, 1200)])
    assert values == ["seat 1 is held", "seat 500 is held", "seat 501 is held", "seat 1200 is held"]
    assert 0 < client.pttl(quick_refusal.taken_key(SCHEDULE, 1200)) <= 5_000
    assert client.get(quick_refusal.taken_key(SCHEDULE, 1201)) is None
