"""Replica routing of the deferred database (models/db.py), on two SQLite files.

The "replica" is a second database file with different rows, so every answer names the database
that gave it. Hidden ways it can fail: a marked read that stays on the primary; an unmarked
read, a read inside a transaction, or a read under on_primary() sent to the replica (a decision
on stale data); a failing replica raising instead of falling back, or tried again on every read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from models.concerts import Concert, list_concerts, list_schedules
from models.db import RoutingDatabase, db, init_database, make_database, on_primary, on_replica
from models.errors import NotFound
from models.schema import migrate


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[pw.Database, pw.Database]]:
    """A primary with concert "P" and a replica file with concert "R", routed by `db`."""
    replica_url = f"sqlite:///{tmp_path / 'replica.db'}"
    replica = init_database(replica_url)
    migrate()
    Concert.create(title="R", venue="replica")
    db.close()
    primary = init_database(f"sqlite:///{tmp_path / 'primary.db'}", replica_url=replica_url)
    migrate()
    Concert.create(id=7, title="P", venue="primary")  # an id the replica has not got
    db.close()
    yield primary, db.replica
    db.close()
    replica.close()


def titles() -> list[str]:
    return [c.title for c in list_concerts()]


def test_without_a_replica_every_read_runs_on_the_primary(tmp_path: Path) -> None:
    init_database(f"sqlite:///{tmp_path / 'only.db'}")
    migrate()
    Concert.create(title="P", venue="primary")
    with on_replica() as on:
        assert on is False and titles() == ["P"]
    db.close()


def test_marked_reads_go_to_the_replica_and_everything_else_to_the_primary(pair) -> None:
    assert titles() == ["R"]  # list_concerts is a replica_read
    assert [c.title for c in Concert.select()] == ["P"]  # an unmarked query
    with on_primary():
        assert titles() == ["P"]
        with on_replica() as on:  # a pin wins over a nested request for the replica
            assert on is False and titles() == ["P"]
    with db.atomic():  # inside a transaction its own writes must be seen
        Concert.create(title="P2", venue="primary")
        assert titles() == ["P", "P2"]
    with on_replica() as on:
        assert on is True and [c.title for c in Concert.select()] == ["R"]
    assert titles() == ["R"]


def test_routing_is_per_thread(pair) -> None:
    seen: list[str] = []
    with on_replica():
        thread = threading.Thread(target=lambda: seen.extend(c.title for c in Concert.select()))
        thread.start()
        thread.join()
        assert [c.title for c in Concert.select()] == ["R"]
    assert seen == ["P"]


def test_a_row_the_replica_has_not_got_yet_is_read_from_the_primary(pair) -> None:
    assert list_schedules(concert_id=7) == []  # NotFound on the replica: asked again on the primary
    with pytest.raises(NotFound):
        list_schedules(concert_id=999)


def test_a_failing_replica_sends_reads_to_the_primary_and_rests(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = make_database("mysql://root:@127.0.0.1:1/none?connect_timeout=1")
    db.set_replica(broken)
    assert titles() == ["P"]  # the connect failed: the primary answered
    assert db.replica_resting()
    db.set_replica(pair[1])
    monkeypatch.setattr(RoutingDatabase, "REPLICA_REST_S", 60.0)
    db.rest_replica(RuntimeError("down"))
    assert titles() == ["P"]  # resting: not even tried
    db.set_replica(pair[1])
    assert titles() == ["R"]


def test_a_replica_failing_mid_query_is_retried_on_the_primary(pair) -> None:
    replica = pair[1]
    replica.execute_sql("DROP TABLE concerts")  # the query now fails on the replica only
    assert titles() == ["P"]
    assert db.replica_resting()
