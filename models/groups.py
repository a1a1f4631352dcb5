"""Group holds and best available (SPEC §3 "Group holds (v2)"): several seats, all or nothing.

One transaction holds every seat: each seat AVAILABLE -> HELD by compare-and-set on its version,
each reservation its own row under the same UNIQUE keys as a single hold (the live seat, the
user's hold slot, the job id). Any conflict rolls the whole group back, so a group is never held
in part, and the per-user cap counts every seat of it (one hold slot per seat).

Reservation job ids are `<job>:<i>`, so a redelivered group job finds and returns the same
reservations instead of holding again.

Best available, `together`: among the blocks of N consecutive seat numbers that are all
AVAILABLE, the lowest block that does not leave a single empty seat between itself and a taken
(HELD/RESERVED) seat; when every block would leave one, the lowest block (pretix #1324: a lone
seat between two bookings is a seat nobody buys).

Best available re-picks from the fresh state each time another writer takes a seat of its pick
between the read and the compare-and-set, so 409 SEAT_NOT_AVAILABLE means "no block (or not N
seats) of that size is free", never "lost a few races"; `_lost_pick` bounds the loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import peewee as pw

from models.concerts import AVAILABLE, Seat
from models.concerts import HELD as SEAT_HELD
from models.db import db, utcnow
from models.errors import ConcurrentUpdate, LimitExceeded, NotFound, SeatNotAvailable, ValidationError
from models.reservations import HELD, Reservation, ReservationView, free_hold_slots, view_of


@dataclass(frozen=True)
class GroupSeat:
    """A seat of the schedule as the group hold reads it."""

    seat_id: int
    number: int
    price: int
    status: str
    version: int


def pick_together(seats: Sequence[GroupSeat], quantity: int) -> list[GroupSeat] | None:
    """The lowest block of `quantity` consecutive AVAILABLE numbers leaving no single gap next to a
    taken seat, else the lowest block, else None (see the module docstring)."""
    by_number = {s.number: s for s in seats}

    def free(n: int) -> bool:
        return n in by_number and by_number[n].status == AVAILABLE

    def taken(n: int) -> bool:
        return n in by_number and by_number[n].status != AVAILABLE

    blocks = [
        [by_number[n + i] for i in range(quantity)]
        for n in sorted(by_number)
        if all(free(n + i) for i in range(quantity))
    ]
    for block in blocks:
        low, high = block[0].number, block[-1].number
        if not (free(low - 1) and taken(low - 2)) and not (free(high + 1) and taken(high + 2)):
            return block
    return blocks[0] if blocks else None


def pick_lowest(seats: Sequence[GroupSeat], quantity: int) -> list[GroupSeat] | None:
    """The `quantity` lowest-numbered AVAILABLE seats, or None when there are fewer."""
    free = sorted((s for s in seats if s.status == AVAILABLE), key=lambda s: s.number)
    return free[:quantity] if len(free) >= quantity else None


def lowest_seat_id(*, schedule_id: int) -> int:
    """The schedule's lowest seat id: the routing key of its best-available jobs (NotFound if none)."""
    found = Seat.select(pw.fn.MIN(Seat.id)).where(Seat.schedule == schedule_id).scalar()
    if found is None:
        raise NotFound(f"schedule {schedule_id} does not exist")
    return int(found)


def hold_seats(
    *,
    user_id: int,
    schedule_id: int,
    job_id: str,
    hold_ttl: int,
    max_holds: int,
    seat_ids: Sequence[int] | None = None,
    quantity: int | None = None,
    together: bool = False,
    max_extensions: int = 2,
) -> list[ReservationView]:
    """Hold the given seats (`seat_ids`) or the best available (`quantity`, `together`), all or nothing.

    Raises ValidationError (not exactly one of seat_ids/quantity, duplicates), LimitExceeded (more
    than `max_holds` seats, or not enough of the user's hold slots left), NotFound (a seat not in
    the schedule), SeatNotAvailable (naming the taken seats; nothing held).
    """
    count = _validate(seat_ids, quantity, max_holds)
    done = _done(job_id)
    if done:
        return done
    picks, limit = 0, 1
    while True:
        seats = _seats(schedule_id)
        limit = max(limit, len(seats))
        chosen = _given(seats, seat_ids, schedule_id) if seat_ids is not None else _best(seats, count, together)
        slots = free_hold_slots(user_id=user_id, schedule_id=schedule_id, max_holds=max_holds, count=count)
        picks += 1
        try:
            rows = _take_all(chosen, user_id, schedule_id, slots, job_id, hold_ttl, max_extensions)
        except SeatNotAvailable:
            if seat_ids is not None:
                raise
            _lost_pick(picks, limit)
            continue
        except pw.IntegrityError as exc:
            again = _done(job_id)
            if again:
                return again
            if "hold_slot" in str(exc).lower():
                raise ConcurrentUpdate(
                    "another hold of yours landed at the same moment; retry", retry_after=1
                ) from None
            if seat_ids is not None:
                raise SeatNotAvailable("a seat of the group was just taken") from None
            _lost_pick(picks, limit)
            continue
        numbers = {s.seat_id: s.number for s in chosen}
        return [view_of(r, numbers[r.seat_id]) for r in rows]


def _lost_pick(picks: int, limit: int) -> None:
    """After best available lost a seat of its pick to another writer: pick again from the fresh state
    (until `_best` finds no candidate, which is SEAT_NOT_AVAILABLE), unless it lost `limit` times.

    Every lost pick means another writer took a seat in between, so without releases a schedule of
    N seats cannot make it lose more than N times; the bound only stops a pathological churn of
    holds and releases, and says so (CONCURRENT_UPDATE, retry) instead of claiming no block is free.
    """
    if picks >= limit:
        raise ConcurrentUpdate(f"best available lost {picks} picks to other holds in a row; retry", retry_after=1)


def _validate(seat_ids: Sequence[int] | None, quantity: int | None, max_holds: int) -> int:
    if (seat_ids is None) == (quantity is None):
        raise ValidationError("send exactly one of seatIds or quantity")
    count = len(seat_ids) if seat_ids is not None else int(quantity or 0)
    if seat_ids is not None and len(set(seat_ids)) != len(seat_ids):
        raise ValidationError("seatIds must be distinct")
    if count < 1:
        raise ValidationError("a group holds at least one seat")
    if count > max_holds:
        raise LimitExceeded(f"a group holds at most {max_holds} seats")
    return count


def _done(job_id: str) -> list[ReservationView]:
    """The reservations an earlier attempt of this job made, in request order (empty if none)."""
    rows = list(Reservation.select().where(Reservation.job_id.startswith(f"{job_id}:")))
    rows.sort(key=lambda r: int(str(r.job_id).rsplit(":", 1)[1]))
    return [view_of(r) for r in rows]


def _seats(schedule_id: int) -> list[GroupSeat]:
    query = Seat.select(Seat.id, Seat.number, Seat.price, Seat.status, Seat.version).where(Seat.schedule == schedule_id)
    return [GroupSeat(int(i), int(n), int(p), str(s), int(v)) for i, n, p, s, v in query.tuples()]


def _given(seats: list[GroupSeat], seat_ids: Sequence[int], schedule_id: int) -> list[GroupSeat]:
    by_id = {s.seat_id: s for s in seats}
    missing = [i for i in seat_ids if i not in by_id]
    if missing:
        raise NotFound(f"seats {', '.join(map(str, missing))} do not exist in schedule {schedule_id}")
    chosen = [by_id[i] for i in seat_ids]
    taken = sorted((s for s in chosen if s.status != AVAILABLE), key=lambda s: s.number)
    if taken:
        numbers = ", ".join(str(s.number) for s in taken)
        marks = [(s.seat_id, f"seat {s.number} is {s.status.lower()}") for s in taken]
        named = f"seats {numbers} are" if len(taken) > 1 else f"seat {numbers} is"
        raise SeatNotAvailable(f"{named} not available", taken=marks)
    return chosen


def _best(seats: list[GroupSeat], quantity: int, together: bool) -> list[GroupSeat]:
    chosen = pick_together(seats, quantity) if together else pick_lowest(seats, quantity)
    if chosen is None:
        how = "consecutive " if together else ""
        raise SeatNotAvailable(f"there are not {quantity} {how}seats available")
    return chosen


def _take_all(
    chosen: list[GroupSeat],
    user_id: int,
    schedule_id: int,
    slots: list[int],
    job_id: str,
    hold_ttl: int,
    max_extensions: int,
) -> list[Reservation]:
    """Every seat AVAILABLE -> HELD by compare-and-set and its reservation, in one transaction.

    Seats are locked in id order, so two groups never wait on each other in a cycle.
    """
    now = utcnow()
    order = {s.seat_id: i for i, s in enumerate(chosen)}
    rows: list[Reservation] = []
    with db.atomic():
        for seat in sorted(chosen, key=lambda s: s.seat_id):
            changed = (
                Seat.update(status=SEAT_HELD, version=Seat.version + 1)
                .where((Seat.id == seat.seat_id) & (Seat.status == AVAILABLE) & (Seat.version == seat.version))
                .execute()
            )
            if changed != 1:
                raise SeatNotAvailable(f"seat {seat.number} was just taken")
        for i, seat in enumerate(chosen):
            rows.append(
                Reservation.create(
                    user_id=user_id,
                    seat=seat.seat_id,
                    schedule_id=schedule_id,
                    price=seat.price,
                    status=HELD,
                    expires_at=now + dt.timedelta(seconds=hold_ttl),
                    live_seat_id=seat.seat_id,
                    hold_slot=slots[i],
                    job_id=f"{job_id}:{order[seat.seat_id]}",
                    extensions_left=max_extensions,
                    created_at=now,
                    updated_at=now,
                )
            )
    return rows
