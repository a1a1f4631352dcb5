"""Group commit: holds of several different free seats in one transaction (workers/group.py).

Each seat is still taken by its own compare-and-set on its version, and each hold is its own
reservation row under the same unique keys as `reservations.hold_seat`; the statements are
set-based (two reads, one UPDATE, one INSERT, one read of the new ids, one commit: a fixed cost
per group, not per hold). Anything unexpected inside the
transaction (a seat changed since the read, a unique key) rolls the whole group back and
returns None: the caller then runs each hold alone through `reservations.hold_seat`, which
knows how to answer every conflict.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import peewee as pw

from models.concerts import AVAILABLE
from models.concerts import HELD as SEAT_HELD
from models.db import db, utcnow
from models.errors import DomainError, LimitExceeded, NotFound
from models.reservations import HELD, Reservation, ReservationView, rejection_for


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
    seats, slots = _snapshot(holds)
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


def _snapshot(holds: Sequence[HoldRequest]) -> tuple[dict[int, tuple], dict[tuple[int, int], set[int]]]:
    """The group's seats (id, schedule, number, price, status, version) and the hold slots in use per
    (user, schedule), in one statement (a UNION ALL: one round trip where two queries took two; on a
    starved machine each round trip of a group cost 10-20 ms, py-spy at 20:40 UTC). Fixed SQL text
    with the integer ids written in (`_ints`), as every statement of a group: peewee built each
    statement per call, ~1.7 ms of a lone hold's 4.9 ms of worker CPU (2026-12-03)."""
    sql = (
        "SELECT 's', id, schedule_id, number, price, status, version FROM seats"
        f" WHERE id IN ({_ints(h.seat_id for h in holds)})"
        " UNION ALL SELECT 'r', user_id, schedule_id, hold_slot, 0, '', 0 FROM reservations"
        f" WHERE user_id IN ({_ints(h.user_id for h in holds)})"
        f" AND schedule_id IN ({_ints(h.schedule_id for h in holds)}) AND hold_slot IS NOT NULL"
    )
    found: dict[int, tuple] = {}
    used: dict[tuple[int, int], set[int]] = defaultdict(set)
    for kind, a, b, c, price, status, version in db.execute_sql(sql).fetchall():
        if kind == "s":
            found[int(a)] = (int(a), int(b), int(c), int(price), str(status), int(version))
        else:
            used[(int(a), int(b))].add(int(c))
    return found, used


_PLAIN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # the job ids the web makes (workers.jobs.JOB_ID's alphabet)


def _datetime_sql(value: dt.datetime) -> str:
    """A naive datetime as a quoted SQL literal, as PyMySQL and sqlite3 write it ('YYYY-MM-DD HH:MM:SS[.ffffff]')."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a datetime: {value!r}")
    return f"'{value.isoformat(' ')}'"


def _ints(values: Iterable[int]) -> str:
    """Integers as SQL text (each through int(): nothing else can reach the statement)."""
    return ",".join(str(int(v)) for v in sorted(set(values)))


def _commit(
    todo: list[tuple[int, HoldRequest, int]], seats: dict[int, tuple], hold_ttl: int, max_extensions: int
) -> list[ReservationView]:
    """Every seat's compare-and-set in one UPDATE, every reservation row in one INSERT, one commit.

    A fixed number of statements per group, whatever its size: the UPDATE takes each seat only
    at the version read (CASE per id) and only while AVAILABLE, and must change exactly one row
    per seat, else the group is rolled back (_GroupConflict). The new ids are read back by the
    UNIQUE job_id (portable: no RETURNING, no assumption about consecutive auto-increments).
    """
    if not todo:
        return []
    now = utcnow()
    expires = now + dt.timedelta(seconds=hold_ttl)
    ids = [hold.seat_id for _, hold, _ in todo]
    when = " ".join(f"WHEN {int(seat_id)} THEN {int(seats[seat_id][5])}" for seat_id in ids)
    update = (
        f"UPDATE seats SET status = '{SEAT_HELD}', version = version + 1 WHERE id IN ({_ints(ids)})"
        f" AND status = '{AVAILABLE}' AND version = CASE id {when} END"
    )
    p = db.param
    columns = (
        "user_id, seat_id, schedule_id, price, status, expires_at, version, live_seat_id, hold_slot,"
        " extensions_left, job_id, created_at, updated_at"
    )
    # Every value is written into the SQL text (integers through int(), the two timestamps as the
    # driver would quote them, job ids of the web's alphabet quoted): PyMySQL escaped the 4 x 32
    # parameters of a group's INSERT one by one, ~5 % of a worker's CPU (py-spy, 2026-12-03).
    # A job id outside that alphabet (never made by the service) goes as a parameter.
    at_expiry = _datetime_sql(Reservation.expires_at.db_value(expires))
    at_now = _datetime_sql(Reservation.created_at.db_value(now))
    values, params = [], []
    job_ids = [hold.job_id for _, hold, _ in todo]
    plain = all(_PLAIN_ID.fullmatch(job_id) for job_id in job_ids)
    for _, hold, slot in todo:
        seat_id, price = int(hold.seat_id), int(seats[hold.seat_id][3])
        job = f"'{hold.job_id}'" if plain else p
        values.append(
            f"({int(hold.user_id)}, {seat_id}, {int(hold.schedule_id)}, {price}, '{HELD}', {at_expiry}, 0, {seat_id},"
            f" {int(slot)}, {int(max_extensions)}, {job}, {at_now}, {at_now})"
        )
        if not plain:
            params.append(hold.job_id)
    listed = ", ".join(f"'{job_id}'" for job_id in job_ids) if plain else ", ".join([p] * len(job_ids))
    with db.atomic():
        if db.execute_sql(update).rowcount != len(ids):
            raise _GroupConflict(ids)
        db.execute_sql(f"INSERT INTO reservations ({columns}) VALUES {', '.join(values)}", params or None)
        cursor = db.execute_sql(
            f"SELECT job_id, id FROM reservations WHERE job_id IN ({listed})", None if plain else job_ids
        )
        new_ids = {str(job_id): int(rid) for job_id, rid in cursor.fetchall()}
    return [
        ReservationView(
            int(new_ids[hold.job_id]),
            hold.user_id,
            hold.schedule_id,
            hold.seat_id,
            int(seats[hold.seat_id][2]),
            int(seats[hold.seat_id][3]),
            HELD,
            expires,
            now,
            max_extensions,
        )
        for _, hold, _ in todo
    ]
