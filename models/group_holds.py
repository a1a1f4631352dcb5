"""Group commit: holds of several different free seats in one transaction (workers/group.py).

Each seat is still taken by its own compare-and-set on its version, and each hold is its own
reservation row under the same unique keys as `reservations.hold_seat`; only the reads, the
transaction and its commit (the log flush) are shared. Anything unexpected inside the
transaction (a seat changed since the read, a unique key) rolls the whole group back and
returns None: the caller then runs each hold alone through `reservations.hold_seat`, which
knows how to answer every conflict.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import peewee as pw

from models.concerts import AVAILABLE, Seat
from models.concerts import HELD as SEAT_HELD
from models.db import db, utcnow
from models.errors import DomainError, LimitExceeded, NotFound
from models.reservations import HELD, Reservation, ReservationView, rejection_for, view_of


@dataclass(frozen=True)
class HoldRequest:
    """One hold of a group: a job's first attempt."""

    user_id: int
    schedule_id: int
    seat_id: int
    job_id: str


class _GroupConflict(Exception):
    """Raised inside the group's transaction to roll it back (a seat changed under it)."""


def hold_seats(
    *, holds: Sequence[HoldRequest], hold_ttl: int, max_holds: int, max_extensions: int = 2
) -> list[ReservationView | DomainError] | None:
    """Hold these seats (all different) in one transaction; per hold its view or its domain error.

    None when the group conflicted and was rolled back: hold them one by one instead.
    """
    if len({h.seat_id for h in holds}) != len(holds):
        raise ValueError("a group holds each seat at most once")
    seats: dict[int, tuple] = {
        int(row[0]): row  # type: ignore[misc]
        for row in Seat.select(Seat.id, Seat.schedule, Seat.number, Seat.price, Seat.status, Seat.version)
        .where(Seat.id.in_([h.seat_id for h in holds]))
        .tuples()
    }
    slots = _used_slots(holds)
    outcomes: list[ReservationView | DomainError] = []
    todo: list[tuple[int, HoldRequest, int]] = []  # (index, hold, slot)
    for hold in holds:
        found = seats.get(hold.seat_id)
        if found is None or int(found[1]) != hold.schedule_id:
            outcomes.append(NotFound(f"seat {hold.seat_id} does not exist in schedule {hold.schedule_id}"))
            continue
        rejection: DomainError | None = rejection_for(status=str(found[4]), number=int(found[2]))
        used = slots[(hold.user_id, hold.schedule_id)]
        free = [s for s in range(1, max_holds + 1) if s not in used]
        if rejection is None and not free:
            rejection = LimitExceeded(f"you already hold {max_holds} seats of this schedule")
        outcomes.append(rejection)  # type: ignore[arg-type]  # replaced by the view below when None
        if rejection is None:
            used.add(free[0])
            todo.append((len(outcomes) - 1, hold, free[0]))
    try:
        views = _commit(todo, seats, hold_ttl, max_extensions)
    except (_GroupConflict, pw.IntegrityError):
        return None
    for (index, _, _), view in zip(todo, views, strict=True):
        outcomes[index] = view
    return outcomes


def _used_slots(holds: Sequence[HoldRequest]) -> dict[tuple[int, int], set[int]]:
    """The hold slots in use per (user, schedule) of the group, in one query."""
    used: dict[tuple[int, int], set[int]] = defaultdict(set)
    rows = (
        Reservation.select(Reservation.user_id, Reservation.schedule_id, Reservation.hold_slot)
        .where(
            Reservation.user_id.in_(sorted({h.user_id for h in holds}))
            & Reservation.schedule_id.in_(sorted({h.schedule_id for h in holds}))
            & Reservation.hold_slot.is_null(False)
        )
        .tuples()
    )
    for user_id, schedule_id, slot in rows:
        used[(int(user_id), int(schedule_id))].add(int(slot))
    return used


def _commit(
    todo: list[tuple[int, HoldRequest, int]], seats: dict[int, tuple], hold_ttl: int, max_extensions: int
) -> list[ReservationView]:
    """Every seat's compare-and-set and every reservation row, then one commit."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=hold_ttl)
    views = []
    with db.atomic():
        for _, hold, slot in todo:
            _id, _schedule, number, price, _status, version = seats[hold.seat_id]
            changed = (
                Seat.update(status=SEAT_HELD, version=Seat.version + 1)
                .where((Seat.id == hold.seat_id) & (Seat.status == AVAILABLE) & (Seat.version == version))
                .execute()
            )
            if changed != 1:
                raise _GroupConflict(hold.seat_id)
            r = Reservation.create(
                user_id=hold.user_id,
                seat=hold.seat_id,
                schedule_id=hold.schedule_id,
                price=price,
                status=HELD,
                expires_at=expires,
                live_seat_id=hold.seat_id,
                hold_slot=slot,
                extensions_left=max_extensions,
                job_id=hold.job_id,
                created_at=now,
                updated_at=now,
            )
            views.append(view_of(r, int(number)))
    return views
