"""Hold extensions: one more HOLD_TTL for a HELD reservation, HOLD_MAX_EXTENSIONS times at most."""

from __future__ import annotations

import datetime as dt

from models.db import iso, utcnow
from models.errors import ConcurrentUpdate, ExtensionLimit, NotFound, ReservationExpired, ReservationNotHeld
from models.reservations import HELD, Reservation, ReservationView, view_of


def extend_hold(*, reservation_id: int, user_id: int, hold_ttl: int, now: dt.datetime | None = None) -> ReservationView:
    """Extend the user's HELD, unexpired reservation to now + `hold_ttl`, once per extension left.

    The compare-and-set requires HELD, the version read and `expires_at > now`, so an extension and
    the expiry sweep never both win: a hold past its time is not extended, and an extended hold
    changed its version under the sweep's compare-and-set. Raises NotFound, ReservationNotHeld,
    ReservationExpired or ExtensionLimit.
    """
    now = now or utcnow()
    r = Reservation.get_or_none((Reservation.id == reservation_id) & (Reservation.user_id == user_id))
    if r is None:
        raise NotFound(f"reservation {reservation_id} does not exist")
    if r.status != HELD:
        raise ReservationNotHeld(f"reservation {reservation_id} is {r.status.lower()} and cannot be extended")
    if r.expires_at <= now:
        raise ReservationExpired(f"the hold on reservation {reservation_id} expired at {iso(r.expires_at)}")
    if r.extensions_left <= 0:
        raise ExtensionLimit(f"reservation {reservation_id} was already extended as often as allowed")
    changed = (
        Reservation.update(
            expires_at=now + dt.timedelta(seconds=hold_ttl),
            extensions_left=Reservation.extensions_left - 1,
            version=Reservation.version + 1,
            updated_at=now,
        )
        .where(
            (Reservation.id == r.id)
            & (Reservation.status == HELD)
            & (Reservation.version == r.version)
            & (Reservation.expires_at > now)
            & (Reservation.extensions_left > 0)
        )
        .execute()
    )
    if changed != 1:
        raise ConcurrentUpdate(f"reservation {reservation_id} changed concurrently; retry", retry_after=1)
    return view_of(Reservation.get_by_id(r.id))
