"""Write seat transitions through to the catalogue cache, after the commit (models/cache.py)."""

from __future__ import annotations

from config.bootstrap import current
from models.cache import CatalogueCache
from models.concerts import Seat
from models.reservations import ReservationView


def catalogue_cache() -> CatalogueCache:
    """The cache this process writes seat transitions through to."""
    s = current().settings
    return CatalogueCache(
        current().redis,
        schedule_ttl=s.cache_schedule_ttl,
        schedule_jitter=s.cache_schedule_jitter,
        seats_ttl=s.cache_seats_ttl,
        seats_jitter=s.cache_seats_jitter,
    )


def write_through(view: ReservationView) -> None:
    """Tell the cache the reservation's seat's state as committed now.

    The status is read back from the database rather than assumed, so a redelivered (idempotent)
    message can never write an old state over a newer one; seat transitions are serialized by
    the partition, so nothing changes the seat between the commit and this read.
    """
    seat = Seat.get_by_id(view.seat_id)
    catalogue_cache().seat_changed(
        schedule_id=view.schedule_id, seat_id=seat.id, number=seat.number, price=seat.price, status=seat.status
    )
