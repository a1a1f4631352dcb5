"""How many fans an admission pass may let in: ACTIVE_LIMIT (`ADMIT_MODE=fixed`, the default) or
sized to what can still be sold (`ADMIT_MODE=stock`).

In stock mode a concert's active fans are held at

    target = ceil(AVAILABLE seats × ADMIT_FACTOR ÷ (1 − no-show rate))

(at most the ACTIVE_LIMIT / operator limit in force), so a pass admits
min(free slots, target − active). The no-show rate is the share of admitted fans who never asked
for a hold: 1 − (distinct users with a reservation ÷ admissions), counted once 100 fans were
admitted and capped at 0.5, so fans admitted a moment ago (who have not held yet) cannot make the
target run away. Held seats are not in the target: their holders are already active. When no seat
can still be sold (none AVAILABLE, none HELD) the concert is sold out: admission stops and every
waiter learns `soldOut` at the next poll (models/waiting_room.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import peewee as pw

from models.concerts import AVAILABLE, HELD, Schedule, seat_counts
from models.reservations import Reservation

FIXED, STOCK = "fixed", "stock"
MIN_ADMITTED_FOR_RATE = 100
MAX_NO_SHOW = 0.5


@dataclass(frozen=True)
class Stock:
    """What a concert can still sell and how its admitted fans behaved."""

    available: int
    held: int
    no_show: float

    @property
    def sold_out(self) -> bool:
        return self.available == 0 and self.held == 0


def stock_of(*, concert_id: int, admitted: int) -> Stock:
    """The concert's sellable seats (one GROUP BY on the seat index) and measured no-show rate."""
    counts = seat_counts(concert_id=concert_id)
    return Stock(counts[AVAILABLE], counts[HELD], no_show_rate(admitted=admitted, holders=holders_of(concert_id)))


def holders_of(concert_id: int) -> int:
    """Distinct users who asked for a hold of any schedule of the concert."""
    schedules = Schedule.select(Schedule.id).where(Schedule.concert == concert_id)
    query = Reservation.select(pw.fn.COUNT(Reservation.user_id.distinct())).where(
        Reservation.schedule_id.in_(schedules)
    )
    return int(query.scalar() or 0)


def no_show_rate(*, admitted: int, holders: int) -> float:
    """1 − holders ÷ admitted, 0 until MIN_ADMITTED_FOR_RATE were admitted, at most MAX_NO_SHOW."""
    if admitted < MIN_ADMITTED_FOR_RATE:
        return 0.0
    return min(MAX_NO_SHOW, max(0.0, 1 - holders / admitted))


def pass_limit(*, mode: str, limit: int, stock: Stock | None, factor: float) -> int:
    """The active-slot limit of one pass: `limit` (fixed), or the stock target under it (stock)."""
    if mode != STOCK or stock is None:
        return limit
    return min(limit, math.ceil(stock.available * factor / (1 - stock.no_show)))
