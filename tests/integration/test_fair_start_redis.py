"""The fair start's pre-queue on the real servers: one Redis and the Redis Cluster (every key of a
concert under its `{c:N}` tag, so each script runs on one slot)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from config.bootstrap import make_redis
from models import fairness
from models.prequeue import PreQueue, keys
from models.waiting_room import ACTIVE, WaitingRoom

pytestmark = pytest.mark.integration

CONCERT = 730_777  # no other test uses this concert id


@pytest.fixture
def redis_url(redis_any: str) -> str:
    """Every test here runs on the single Redis server and on the Redis Cluster."""
    return redis_any


@pytest.fixture
def client(redis_url: str) -> Iterator[object]:
    """A client; only this concert's keys are removed afterwards (the cluster is shared by other tests)."""
    c = make_redis(redis_url)
    yield c
    for key in c.scan_iter(match=f"wr:{{c:{CONCERT}}}*", count=1000):
        c.delete(key)
    c.srem("wr:concerts", CONCERT)
    c.close()


def test_drawn_fans_are_admitted_first_in_drawn_order_and_later_joiners_after_them(client) -> None:  # type: ignore[no-untyped-def]
    """Hidden failures: a script touching a key outside the concert's slot (MOVED/CROSSSLOT on a cluster);
    admission in join order; a later joiner ranked or admitted ahead of the drawn."""
    # Given 200 fans pre-queued in a shuffled order before an opening that has just passed
    seed, opens = fairness.new_seed(), int(time.time() * 1000) - 1000
    pq = PreQueue(client, waiting_ttl=300)
    room = WaitingRoom(client, active_limit=50, active_ttl=600, waiting_ttl=300)
    users = list(range(1, 201))
    random.Random(7).shuffle(users)
    tokens = {u: pq.join(user_id=u, concert_id=CONCERT, seed=seed, opens_at_ms=opens) for u in users}
    assert room.admit(concert_id=CONCERT).admitted == 0  # the gate holds admission until the draw
    # When one fan leaves, the gate opens and 10 more fans join
    assert room.leave(token=tokens[users[0]].token)
    assert pq.open_gate(concert_id=CONCERT) == 199
    late = [room.issue(user_id=1000 + i, concert_id=CONCERT) for i in range(10)]
    admitted = room.admit(concert_id=CONCERT).admitted
    # Then the 50 admitted are the first 50 of the drawn order, the later joiners rank after the drawn
    drawn = fairness.drawn_order(seed, [fairness.entrant_of(u) for u in users[1:]])
    assert pq.drawn_order(concert_id=CONCERT, seed=seed, size=37) == drawn  # read after admission began
    by_entrant = {fairness.entrant_of(u): u for u in users}
    active = {u for u in users[1:] if room.status(token=tokens[u].token, touch=False).status == ACTIVE}
    assert admitted == 50 and active == {by_entrant[e] for e in drawn[:50]}
    assert [room.status(token=t.token, touch=False).rank for t in late] == list(range(150, 160))
    assert int(client.zcard(keys(CONCERT)["pre"])) == 149
