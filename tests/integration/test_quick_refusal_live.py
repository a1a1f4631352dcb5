"""Quick refusal (SPEC §3) on MariaDB + Redis: a seat AVAILABLE in the database for more than 1 s
is never refused at the edge, whichever way it was released and whatever races the release.

Each case releases a held (or paid) seat the three ways a seat comes back on sale (expiry,
cancel, refund), in the worst order the pipeline allows: the release commits and the process
dies before its write-through (the mark is never deleted), while a paused worker that read the
seat as taken just before the release writes its mark only after it. An edge checker reads
the mark the way POST /reservations does, every few milliseconds, throughout.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from flask import Flask

from config.bootstrap import current
from models import payments, points, quick_refusal, refunds, reservations
from models.concerts import Seat
from models.db import db, utcnow
from models.redis_support import scripts_in_one_round_trip
from models.seed import seed_demo
from tests.support.helpers import hold_directly
from workers.cache import mark_seat, write_through

pytestmark = pytest.mark.integration

BIG = 10_000_000


def refused_at_edge(seat: Seat) -> bool:
    client = current().redis
    (reply,) = scripts_in_one_round_trip(
        client, [quick_refusal.check_call(client, schedule_id=seat.schedule_id, seat_id=seat.id)]
    )
    return quick_refusal.refusal_of(reply) is not None


def held_and_marked(seat: Seat, user_id: int, kind: str) -> int:
    """Hold (and for a refund, pay) the seat, with the write-through a worker does; the id to release."""
    view = hold_directly(seat, user_id)
    write_through(view)
    if kind != "refund":
        return view.reservation_id
    points.charge(user_id=user_id, amount=BIG, max_charge=BIG, max_balance=BIG)
    paid = payments.pay(reservation_id=view.reservation_id, user_id=user_id, job_id=uuid.uuid4().hex)
    write_through(reservations.get_reservation(reservation_id=view.reservation_id, user_id=user_id))
    return paid.payment_id


def release(kind: str, ref: int, user_id: int) -> None:
    """The domain's release alone: committed, then no write-through (the worker died)."""
    if kind == "expire":
        far = utcnow() + dt.timedelta(hours=1)
        assert reservations.expire_hold(reservation_id=ref, now=far) is not None
    elif kind == "cancel":
        reservations.cancel_reservation(reservation_id=ref, user_id=user_id)
    else:
        refunds.refund_payment(payment_id=ref, user_id=user_id, job_id=uuid.uuid4().hex, cutoff_s=0)


@pytest.mark.parametrize("kind", ["expire", "cancel", "refund"])
def test_a_released_seat_is_not_refused_a_second_after_its_release_even_with_a_late_stale_mark(
    live_app: Flask, kind: str
) -> None:
    seed_demo()
    seat = Seat.select().order_by(Seat.id).first()
    ref = held_and_marked(seat, 7, kind)
    assert refused_at_edge(seat)  # the mark works: a second fan is refused with no job
    released = threading.Event()
    refusals: list[float] = []
    stop = threading.Event()

    def paused_worker() -> None:  # read the seat as taken just before the release, mark just after it
        read_at = quick_refusal.now_ms()
        with db.connection_context():
            status = Seat.get_by_id(seat.id).status
        released.wait(5)
        time.sleep(0.3)
        mark_seat(
            current().redis,
            schedule_id=seat.schedule_id,
            seat_id=seat.id,
            refusal=f"seat is {status}",
            read_at_ms=read_at,
        )

    def edge() -> None:
        while not stop.is_set():
            if refused_at_edge(seat):
                refusals.append(time.time())
            time.sleep(0.005)

    threads = [threading.Thread(target=paused_worker), threading.Thread(target=edge)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    before_release = time.time()
    release(kind, ref, 7)
    released.set()
    time.sleep(1.6)
    stop.set()
    for t in threads:
        t.join(10)

    assert Seat.get_by_id(seat.id).status == "AVAILABLE"
    late = [round(t - before_release, 3) for t in refusals if t - before_release > 1.0]
    assert late == [], f"refused {len(late)} times more than 1 s after the release: {late[:5]}"
    assert any(t > before_release + 0.3 for t in refusals)  # the late stale mark did land, and lapsed by itself

    # And with its write-through (no crash), a release clears the mark at once.
    ref = held_and_marked(seat, 8, kind)
    assert refused_at_edge(seat)
    release(kind, ref, 8)
    write_through(reservations.get_reservation(reservation_id=_reservation_of(kind, ref, 8), user_id=8))
    assert not refused_at_edge(seat)


def _reservation_of(kind: str, ref: int, user_id: int) -> int:
    if kind != "refund":
        return ref
    return payments.get_payment(payment_id=ref, user_id=user_id).reservation_id
