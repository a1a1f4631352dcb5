"""Write seat transitions through to the catalogue cache, after the commit (models/cache.py)."""

from __future__ import annotations

from config.bootstrap import current
from models.concerts import Seat
from models.reservations import ReservationView


def write_through(view: ReservationView) -> None:
    """Tell the cache the reservation's seat's state as committed now.

    The status is read back from the database rather than assumed, so a redelivered (idempotent)
    message can never write an old state over a newer one; seat transitions are serialized by
    the partition, so nothing changes the seat between the commit and this read.
    """
    seat = Seat.get_by_id(view.seat_id)
    current().catalogue_cache().seat_changed(
        schedule_id=view.schedule_id, seat_id=seat.id, number=seat.number, price=seat.price, status=seat.status
    )
