"""Operator controls on real Redis and MariaDB: a PATCH made through the web app acts in a separate
`python -m scheduler` process at its next admission pass; concurrent changes (single server and
Cluster) each leave exactly one audit entry whose `before` is the previous entry's `after`."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import bootstrap
from config.bootstrap import make_redis
from models.queue_controls import QueueControls
from tests.support.helpers import wait_for
from tests.support.procs import cluster

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer test-admin-token"}


def _passes(concert_id: int) -> Callable[[int], None]:
    """Wait for `n` admission passes of the scheduler: each pass rewrites the concert's rate key."""
    r = bootstrap.current().redis
    rate = f"wr:{{c:{concert_id}}}:rate"

    def wait(n: int) -> None:
        for _ in range(n):
            r.delete(rate)
            assert wait_for(lambda: r.exists(rate), timeout=10) is not None, "no admission pass within 10 s"

    return wait


def test_pause_and_pace_act_at_the_next_pass_of_another_process(
    live_app: Flask, live_client: FlaskClient, mysql_url: str, redis_url: str
) -> None:
    # Given a concert whose admission the operator paused, and three fans who joined meanwhile
    schedule = {"startsAt": "2030-01-01T19:00:00Z", "seatCount": 5, "price": 1}
    body = {"title": "Live", "venue": "Hall", "schedules": [schedule]}
    concert_id = live_client.post("/api/v1/admin/concerts", json=body, headers=ADMIN).get_json()["concertId"]
    queue = f"/api/v1/admin/concerts/{concert_id}/queue"
    assert live_client.patch(queue, json={"paused": True}, headers=ADMIN).status_code == 200
    for user in (1, 2, 3):
        joined = live_client.post("/api/v1/queue/tokens", json={"userId": user, "concertId": concert_id}).get_json()
        assert joined["status"] == "WAITING"

    def state() -> dict[str, int]:
        return live_client.get(queue, headers=ADMIN).get_json()  # type: ignore[no-any-return]

    with cluster(mysql_url, redis_url) as procs:
        procs.start_scheduler()
        passes = _passes(concert_id)
        # When the scheduler runs two passes while paused, nobody is admitted
        passes(2)
        assert (state()["waiting"], state()["active"]) == (3, 0), procs.logs()

        # When the operator resumes at one admission per second
        live_client.patch(queue, json={"paused": False, "admitPerSecond": 1}, headers=ADMIN)
        # Then the scheduler process admits again (the delay is not this test's business)
        assert wait_for(lambda: state()["active"] >= 1, timeout=30) is not None, procs.logs()
        # Then each later pass admits exactly one more, never the three free slots at once
        seen = [state()["active"]]
        for _ in range(2):
            passes(1)
            seen.append(state()["active"])
        assert seen[-1] == 3 and all(b - a <= 1 for a, b in itertools.pairwise(seen)), seen
        assert state()["admittedTotal"] == 3


def test_concurrent_changes_are_each_audited_once_in_order(redis_any: str) -> None:
    # Given two operators changing one concert's active limit at the same time, 60 times each
    client = make_redis(redis_any)
    concert_id = int(uuid.uuid4().int % 10**12) + 10**6
    barrier = threading.Barrier(2)

    def operator(parity: int) -> None:
        controls = QueueControls(client)
        barrier.wait(timeout=10)
        for i in range(60):
            controls.change(concert_id=concert_id, who=f"admin:{parity}", changes={"activeLimit": 2 * i + parity + 1})

    threads = [threading.Thread(target=operator, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then every change is in the log exactly once, and each starts from the one before it
    entries = list(reversed(QueueControls(client).audit(concert_ids=[concert_id], limit=500)))
    assert len(entries) == 120
    assert entries[0].before is None
    assert all(later.before == earlier.after for earlier, later in itertools.pairwise(entries))
    assert QueueControls(client).get(concert_id=concert_id).active_limit == entries[-1].after
    client.delete(f"ctl:{{c:{concert_id}}}", f"ctl:{{c:{concert_id}}}:audit")
