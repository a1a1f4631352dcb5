"""Seat holds (reservations): hold, cancel, expire; each a compare-and-set in one transaction.

Invariant 1 (a seat has at most one HELD/CONFIRMED reservation) is enforced by the database:
`live_seat_id` equals `seat_id` while a reservation is live and NULL otherwise, under a UNIQUE
key; the seat row changes only by `UPDATE ... WHERE status=? AND version=?`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee as pw

from models.concerts import AVAILABLE, Seat, SeatRow, seat_row
from models.concerts import HELD as SEAT_HELD
from models.db import BaseModel, UtcDateTimeField, db, replica_read, utcnow
from models.errors import ConcurrentUpdate, LimitExceeded, NotFound, ReservationNotHeld, SeatNotAvailable

HELD, CONFIRMED, EXPIRED, CANCELLED, REFUNDED = "HELD", "CONFIRMED", "EXPIRED", "CANCELLED", "REFUNDED"


class Reservation(BaseModel):
    """A user's hold on a seat (see the module docstring for the keys that guard it)."""

    id = pw.BigAutoField()
    user_id = pw.BigIntegerField()
    seat = pw.ForeignKeyField(Seat, column_name="seat_id", backref="reservations")
    seat_id: int  # peewee's id accessor of the `seat` foreign key
    schedule_id = pw.BigIntegerField()
    price = pw.BigIntegerField()
    status = pw.CharField(max_length=16, default=HELD)
    expires_at = UtcDateTimeField()
    version = pw.IntegerField(default=0)
    live_seat_id = pw.BigIntegerField(null=True, unique=True)
    hold_slot = pw.SmallIntegerField(null=True)
    job_id = pw.CharField(max_length=64, null=True, unique=True)
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)
    extensions_left = pw.SmallIntegerField(default=0)  # migration 008; models/extensions.py counts it down

    class Meta:
        table_name = "reservations"
        indexes = (
            (("status", "expires_at"), False),
            (("user_id", "schedule_id", "status"), False),
            (("user_id", "schedule_id", "hold_slot"), True),
        )


@dataclass(frozen=True)
class ReservationView:
    """A reservation as the API shows it."""

    reservation_id: int
    user_id: int
    schedule_id: int
    seat_id: int
    seat_number: int
    price: int
    status: str
    expires_at: dt.datetime
    created_at: dt.datetime
    extensions_left: int = 0


def view_of(r: Reservation, seat_number: int | None = None) -> ReservationView:
    """A reservation row as the API shows it."""
    number = seat_number if seat_number is not None else Seat.get_by_id(r.seat_id).number
    return ReservationView(
        r.id,
        r.user_id,
        r.schedule_id,
        r.seat_id,
        number,
        r.price,
        r.status,
        r.expires_at,
        r.created_at,
        r.extensions_left if r.status == HELD else 0,
    )


def rejection_for(*, status: str, number: int) -> SeatNotAvailable | None:
    """Why a hold on a seat in this committed state fails, or None when the seat can be held.

    The one rule for both paths: hold_seat, and the partition's batch (workers/batch.py) that
    answers holds on taken seats in bulk.
    """
    if status == AVAILABLE:
        return None
    return SeatNotAvailable(f"seat {number} is {status.lower()}")


def hold_seat(
    *,
    user_id: int,
    schedule_id: int,
    seat_id: int,
    job_id: str,
    hold_ttl: int,
    max_holds: int,
    redelivered: bool = True,
    max_extensions: int = 2,
) -> ReservationView:
    """Hold an AVAILABLE seat for `hold_ttl` seconds; idempotent by job id.

    Raises NotFound (no such seat in the schedule), SeatNotAvailable, or LimitExceeded
    (the user already holds `max_holds` seats of the schedule). With `redelivered=False` (the
    job's first attempt) the lookup of an earlier attempt's reservation is skipped; the UNIQUE
    job_id still catches a duplicate.
    """
    if redelivered:
        done = Reservation.get_or_none(Reservation.job_id == job_id)
        if done is not None:
            return view_of(done)
    seat = seat_row(seat_id, schedule_id)
    if seat is None:
        raise NotFound(f"seat {seat_id} does not exist in schedule {schedule_id}")
    rejection = rejection_for(status=seat.status, number=seat.number)
    if rejection is not None:
        raise rejection
    for _ in range(max_holds + 1):  # a slot taken by a parallel hold of the same user: the next one
        [slot] = free_hold_slots(user_id=user_id, schedule_id=schedule_id, max_holds=max_holds)
        try:
            reservation = _take_seat(
                seat,
                seat_id=seat_id,
                user_id=user_id,
                schedule_id=schedule_id,
                slot=slot,
                job_id=job_id,
                hold_ttl=hold_ttl,
                max_extensions=max_extensions,
            )
        except pw.IntegrityError as exc:
            if "hold_slot" in str(exc).lower() and Reservation.get_or_none(Reservation.job_id == job_id) is None:
                continue
            return _after_conflict(exc, job_id=job_id, seat_number=seat.number)
        except pw.OperationalError as exc:
            # InnoDB picked this transaction as a deadlock's victim and rolled all of it back: run it
            # again. Parallel holds of one user insert into the same (user, schedule, slot) unique
            # index, whose duplicate checks can deadlock (4 parallel holds under load, 2026-12-02).
            # Inside an outer transaction the rollback took that one too, so it is not retried here.
            if not is_deadlock(exc) or db.in_transaction():
                raise
            continue
        return view_of(reservation, seat.number)
    raise ConcurrentUpdate("your other holds kept taking the free slots; retry", retry_after=1)


def is_deadlock(exc: BaseException) -> bool:
    """MySQL/MariaDB error 1213: the server rolled the transaction back to break a deadlock."""
    return bool(exc.args) and exc.args[0] == 1213


def free_hold_slots(*, user_id: int, schedule_id: int, max_holds: int, count: int = 1) -> list[int]:
    """`count` of the user's unused hold slots in the schedule (lowest first), or LimitExceeded.

    The one per-user cap (MAX_HOLDS_PER_USER) of single holds and group holds (models/groups.py):
    every held seat takes a slot, and UNIQUE (user_id, schedule_id, hold_slot) enforces it."""
    used = {
        slot
        for (slot,) in Reservation.select(Reservation.hold_slot)
        .where(
            (Reservation.user_id == user_id)
            & (Reservation.schedule_id == schedule_id)
            & Reservation.hold_slot.is_null(False)
        )
        .tuples()
    }
    free = [s for s in range(1, max_holds + 1) if s not in used]
    if len(free) < count:
        raise LimitExceeded(f"you may hold {max_holds} seats of this schedule and already hold {len(used)}")
    return free[:count]


def _take_seat(
    seat: SeatRow,
    *,
    seat_id: int,
    user_id: int,
    schedule_id: int,
    slot: int,
    job_id: str,
    hold_ttl: int,
    max_extensions: int = 2,
) -> Reservation:
    """AVAILABLE -> HELD by compare-and-set on the seat's version, and the HELD reservation, in one transaction.

    Raises SeatNotAvailable when the seat changed since it was read; IntegrityError when a unique
    key (the live seat, the hold slot, the job id) says another hold won.
    """
    now = utcnow()
    with db.atomic():
        changed = (
            Seat.update(status=SEAT_HELD, version=Seat.version + 1)
            .where((Seat.id == seat_id) & (Seat.status == AVAILABLE) & (Seat.version == seat.version))
            .execute()
        )
        if changed != 1:
            raise SeatNotAvailable(f"seat {seat.number} was just taken")
        return Reservation.create(
            user_id=user_id,
            seat=seat_id,
            schedule_id=schedule_id,
            price=seat.price,
            status=HELD,
            expires_at=now + dt.timedelta(seconds=hold_ttl),
            live_seat_id=seat_id,
            hold_slot=slot,
            job_id=job_id,
            extensions_left=max_extensions,
            created_at=now,
            updated_at=now,
        )


def _after_conflict(exc: pw.IntegrityError, *, job_id: str, seat_number: int) -> ReservationView:
    """Explain a unique-key conflict of hold_seat (the transaction was rolled back)."""
    done = Reservation.get_or_none(Reservation.job_id == job_id)
    if done is not None:  # the same job ran concurrently (redelivery): same answer
        return view_of(done)
    text = str(exc).lower()
    if "hold_slot" in text:
        raise ConcurrentUpdate("another hold of yours landed at the same moment; retry", retry_after=1) from None
    raise SeatNotAvailable(f"seat {seat_number} was just taken") from None


def get_reservation(*, reservation_id: int, user_id: int) -> ReservationView:
    """The user's own reservation; another user's is NotFound (existence is not revealed)."""
    r = Reservation.get_or_none((Reservation.id == reservation_id) & (Reservation.user_id == user_id))
    if r is None:
        raise NotFound(f"reservation {reservation_id} does not exist")
    return view_of(r)


def list_reservations(
    *, user_id: int, status: str | None = None, limit: int = 50, before: int | None = None
) -> list[ReservationView]:
    """The user's reservations, newest first; `before` (a reservation id) pages to older ones."""
    query = Reservation.select().where(Reservation.user_id == user_id)
    if status is not None:
        query = query.where(Reservation.status == status)
    if before is not None:
        query = query.where(Reservation.id < before)
    rows = list(query.order_by(Reservation.id.desc()).limit(max(1, min(limit, 100))))
    seat_ids = [r.seat_id for r in rows]
    numbers: dict[int, int] = {}
    if seat_ids:
        numbers = {
            int(sid): int(n) for sid, n in Seat.select(Seat.id, Seat.number).where(Seat.id.in_(seat_ids)).tuples()
        }
    return [view_of(r, numbers[r.seat_id]) for r in rows]


def cancel_reservation(*, reservation_id: int, user_id: int) -> ReservationView:
    """Cancel the user's HELD reservation; the seat is AVAILABLE again at once. Idempotent."""
    r = Reservation.get_or_none((Reservation.id == reservation_id) & (Reservation.user_id == user_id))
    if r is None:
        raise NotFound(f"reservation {reservation_id} does not exist")
    if r.status == CANCELLED:
        return view_of(r)
    if r.status != HELD:
        raise ReservationNotHeld(f"reservation {reservation_id} is {r.status.lower()} and cannot be cancelled")
    return _release(r, CANCELLED)


def expire_hold(*, reservation_id: int, now: dt.datetime | None = None) -> ReservationView | None:
    """Expire one HELD reservation past its time and free its seat; None if nothing to do."""
    r = Reservation.get_or_none(Reservation.id == reservation_id)
    if r is None or r.status != HELD or r.expires_at > (now or utcnow()):
        return None
    try:
        return _release(r, EXPIRED)
    except ConcurrentUpdate:
        return None


def expire_holds(*, reservation_ids: list[int], now: dt.datetime | None = None) -> list[ReservationView]:
    """Expire many due holds in one transaction (a partition's group commit); their views, in order.

    One read of the reservations, one of their seats, then one UPDATE of the reservations and one
    of the seats, each row still a compare-and-set on the version read (CASE per id), and one
    commit: a fixed number of statements per group (one by one each expiry cost a read, two
    updates, a seat read, a read-back and a commit). If a row count falls short (some row moved
    after the reads), the whole group rolls back and every reservation is expired one by one
    (`expire_hold`), which decides each as the serial path always did. Not yet due, no longer
    HELD or unknown reservations are skipped, as `expire_hold` skips them.
    """
    if not reservation_ids:
        return []
    now = now or utcnow()
    due = list(
        Reservation.select()
        .where(Reservation.id.in_(reservation_ids) & (Reservation.status == HELD) & (Reservation.expires_at <= now))
        .order_by(Reservation.id)
    )
    if not due:
        return []
    seats = {seat.id: seat for seat in Seat.select().where(Seat.id.in_({r.seat_id for r in due}))}
    stamp = utcnow()
    res_ids = [r.id for r in due]
    seat_ids = [r.seat_id for r in due]
    try:
        with db.atomic():
            changed = (
                Reservation.update(
                    status=EXPIRED, live_seat_id=None, hold_slot=None, version=Reservation.version + 1, updated_at=stamp
                )
                .where(
                    Reservation.id.in_(res_ids)
                    & (Reservation.status == HELD)
                    & (Reservation.version == pw.Case(Reservation.id, [(r.id, r.version) for r in due]))
                )
                .execute()
            )
            freed = (
                Seat.update(status=AVAILABLE, version=Seat.version + 1)
                .where(
                    Seat.id.in_(seat_ids)
                    & (Seat.status == SEAT_HELD)
                    & (Seat.version == pw.Case(Seat.id, [(sid, seats[sid].version) for sid in seat_ids]))
                )
                .execute()
            )
            if changed != len(due) or freed != len(due):  # a row moved since the reads: decide each alone
                raise ConcurrentUpdate(f"{len(due) - changed} reservation(s), {len(due) - freed} seat(s) changed")
    except (ConcurrentUpdate, KeyError):
        one_by_one = (expire_hold(reservation_id=rid, now=now) for rid in reservation_ids)
        return [v for v in one_by_one if v is not None]
    order = {rid: k for k, rid in enumerate(reservation_ids)}
    views: list[ReservationView] = []
    for r in sorted(due, key=lambda r: order[r.id]):
        r.status, r.version, r.updated_at = EXPIRED, r.version + 1, stamp
        views.append(view_of(r, seats[r.seat_id].number))
    return views


@replica_read
def find_expired(*, limit: int = 500, now: dt.datetime | None = None) -> list[tuple[int, int]]:
    """(reservation id, seat id) of HELD reservations past expires_at, oldest first (status, expires_at index)."""
    rows = (
        Reservation.select(Reservation.id, Reservation.seat)
        .where((Reservation.status == HELD) & (Reservation.expires_at <= (now or utcnow())))
        .order_by(Reservation.expires_at)
        .limit(limit)
        .tuples()
    )
    return [(int(rid), int(sid)) for rid, sid in rows]


def _release(r: Reservation, status: str) -> ReservationView:
    """HELD -> `status` and the seat HELD -> AVAILABLE, both by compare-and-set, in one transaction."""
    with db.atomic():
        changed = (
            Reservation.update(
                status=status, live_seat_id=None, hold_slot=None, version=Reservation.version + 1, updated_at=utcnow()
            )
            .where((Reservation.id == r.id) & (Reservation.status == HELD) & (Reservation.version == r.version))
            .execute()
        )
        if changed != 1:
            raise ConcurrentUpdate(f"reservation {r.id} changed concurrently", retry_after=1)
        seat = Seat.get_by_id(r.seat_id)
        freed = (
            Seat.update(status=AVAILABLE, version=Seat.version + 1)
            .where((Seat.id == r.seat_id) & (Seat.status == SEAT_HELD) & (Seat.version == seat.version))
            .execute()
        )
        if freed != 1:
            raise ConcurrentUpdate(f"seat {r.seat_id} changed concurrently", retry_after=1)
    return view_of(Reservation.get_by_id(r.id), seat.number)


def reservation_json(v: ReservationView) -> dict[str, object]:
    """The public JSON form of a reservation (the job result and the GET body share it)."""
    from models.db import iso

    return {
        "reservationId": v.reservation_id,
        "userId": v.user_id,
        "scheduleId": v.schedule_id,
        "seatId": v.seat_id,
        "seatNumber": v.seat_number,
        "price": v.price,
        "status": v.status,
        "expiresAt": iso(v.expires_at),
        "createdAt": iso(v.created_at),
        "extensionsLeft": v.extensions_left,
    }
