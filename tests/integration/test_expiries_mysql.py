"""Group commit for expiries (workers/expiries.py) on MariaDB, racing new holds of the same fans.

Four partitions expire their lapsed holds in groups at the same moment as those fans hold new
seats: the group's updates and the new holds meet in the (user, schedule, hold slot) unique
index, where InnoDB may pick a deadlock victim. Whatever it picks, every lapsed hold ends
EXPIRED with its seat AVAILABLE, every new hold is HELD, and the invariant check is clean.
"""

from __future__ import annotations

import datetime as dt

import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from flask import Flask

from config.bootstrap import current
from models import check
from models.concerts import Seat
from models.db import db, utcnow
from models.reservations import Reservation
from models.seed import seed_demo
from tests.support.helpers import hold_directly, run_in_threads
from workers.batch import SeatBatch
from workers.dispatch import handle
from workers.expiries import ExpiryRuns
from workers.reservations import expire_hold

pytestmark = pytest.mark.integration


@pytest.fixture
def seats(live_app: Flask) -> list[Seat]:
    """The demo concert on a fresh MariaDB schema: 2 schedules x 50 seats."""
    seed_demo()
    return list(Seat.select().order_by(Seat.id))


def expiry(reservation_id: int) -> MessageProxy:
    kwargs = {"reservation_id": reservation_id}
    return MessageProxy(Message(queue_name="seats.p0", actor_name=expire_hold.name, args=(), kwargs=kwargs, options={}))


def test_four_partitions_expire_forty_holds_in_groups_while_the_same_fans_hold_new_seats(seats) -> None:  # type: ignore[no-untyped-def]
    # Given 40 fans whose holds on schedule 1's seats 1-40 lapsed a minute ago
    lapsed = [hold_directly(seats[k], k + 1).reservation_id for k in range(40)]
    Reservation.update(expires_at=utcnow() - dt.timedelta(minutes=1)).execute()
    db.close()
    runs = ExpiryRuns(SeatBatch(current().redis, handle, stale_after_s=60), handle)
    partitions = [lapsed[p::4] for p in range(4)]

    def expire(ids: list[int]) -> None:
        for k in range(0, len(ids), 5):  # batches of 5: two groups per partition
            runs([expiry(rid) for rid in ids[k : k + 5]])

    def hold_new(users: range, first_seat: int) -> list[int]:
        with db.connection_context():
            return [hold_directly(seats[first_seat + k], u).reservation_id for k, u in enumerate(users)]

    # When 4 partitions expire them in groups while fans 1-10 hold schedule 1's seats 41-50
    # and fans 11-40 hold schedule 2's seats 1-30, all at once
    results = run_in_threads(
        [
            *[lambda ids=ids: expire(ids) for ids in partitions],
            lambda: hold_new(range(1, 11), 40),
            lambda: hold_new(range(11, 26), 50),
            lambda: hold_new(range(26, 41), 65),
        ],
        timeout=120,
    )

    # Then every lapsed hold expired and freed its seat, every new hold is HELD, nothing is broken
    with db.connection_context():
        assert {r.status for r in Reservation.select().where(Reservation.id.in_(lapsed))} == {"EXPIRED"}
        assert {s.status for s in Seat.select().where(Seat.id.in_([s.id for s in seats[:40]]))} == {"AVAILABLE"}
        new = [rid for ids in results[4:] for rid in ids]
        assert len(new) == 40
        assert {r.status for r in Reservation.select().where(Reservation.id.in_(new))} == {"HELD"}
        assert check.violations() == []
