"""Write seat transitions through to the catalogue cache and the quick-refusal marks, after the commit.

(models/cache.py, models/quick_refusal.py)
"""

from __future__ import annotations

import logging
from typing import Any

from config.bootstrap import current
from models import quick_refusal
from models.concerts import Seat
from models.redis_support import ANY_REDIS_ERROR
from models.reservations import ReservationView, rejection_for

log = logging.getLogger("workers.cache")


def write_through(view: ReservationView) -> None:
    """Tell the cache the reservation's seat's state as committed now.

    The status is read back from the database rather than assumed, so a redelivered (idempotent)
    message can never write an old state over a newer one; seat transitions are serialized by
    the partition, so nothing changes the seat between the commit and this read.
    """
    write_through_many([view])


def mark_seat(client: Any, *, schedule_id: int, seat_id: int, refusal: str | None, read_at_ms: int) -> None:
    """quick_refusal.mark, never failing the job: a lost mark only means the next hold is queued."""
    try:
        quick_refusal.mark(client, schedule_id=schedule_id, seat_id=seat_id, refusal=refusal, read_at_ms=read_at_ms)
    except ANY_REDIS_ERROR as exc:
        log.warning("quick-refusal mark failed for seat %s: %s", seat_id, exc)


def write_through_many(views: list[ReservationView]) -> None:
    """`write_through` for a group of committed transitions: one seat read and one round trip for all
    (the cache entry and the quick-refusal mark of every seat)."""
    if not views:
        return
    read_at = quick_refusal.now_ms()
    seats = {seat.id: seat for seat in Seat.select().where(Seat.id.in_({v.seat_id for v in views}))}
    services = current()
    cache = services.catalogue_cache()
    pipe = services.redis.pipeline(transaction=False)
    changes: dict[int, list[tuple[int, int, int, str]]] = {}  # per schedule: one cache script call
    for view in views:
        seat = seats[view.seat_id]
        changes.setdefault(view.schedule_id, []).append((seat.id, seat.number, seat.price, seat.status))
    for schedule_id, changed in changes.items():
        cache.seats_changed(schedule_id=schedule_id, changes=changed, client=pipe)
    for view in views:
        seat = seats[view.seat_id]
        rejection = rejection_for(status=seat.status, number=seat.number)
        quick_refusal.mark(
            pipe,
            schedule_id=view.schedule_id,
            seat_id=seat.id,
            refusal=None if rejection is None else rejection.detail,
            read_at_ms=read_at,
        )
    try:
        pipe.execute()
    except ANY_REDIS_ERROR as exc:  # the TTLs bound how long a missed write-through can show
        log.warning("write-through failed for seat(s) %s: %s", ", ".join(str(v.seat_id) for v in views), exc)
