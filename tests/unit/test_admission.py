"""ADMIT_MODE=stock: a pass admits what can still be sold (corrected by no-shows); fixed admits ACTIVE_LIMIT."""

from __future__ import annotations

from flask import Flask

from config import bootstrap
from models import admission
from models.admission import STOCK, Stock, no_show_rate, pass_limit, stock_of
from models.concerts import HELD, RESERVED, Schedule, Seat
from models.seed import seed_demo
from models.waiting_room import WaitingRoom


def test_the_stock_target_is_available_seats_times_the_factor_grossed_up_by_no_shows() -> None:
    stock = Stock(available=40, held=3, no_show=0.2)

    assert pass_limit(mode="fixed", limit=100, stock=stock, factor=1.0) == 100
    assert pass_limit(mode=STOCK, limit=100, stock=stock, factor=1.0) == 50  # 40 ÷ (1 − 0.2)
    assert pass_limit(mode=STOCK, limit=30, stock=stock, factor=1.0) == 30  # never above the limit in force
    assert pass_limit(mode=STOCK, limit=100, stock=Stock(0, 5, 0.0), factor=2.0) == 0  # only holds left
    assert Stock(0, 1, 0.0).sold_out is False and Stock(0, 0, 0.0).sold_out is True


def test_the_no_show_rate_waits_for_100_admissions_and_is_capped() -> None:
    assert no_show_rate(admitted=99, holders=0) == 0.0
    assert no_show_rate(admitted=200, holders=150) == 0.25
    assert no_show_rate(admitted=200, holders=10) == admission.MAX_NO_SHOW


def set_status(concert_id: int, statuses: list[str]) -> None:
    seats = Seat.select().join(Schedule).where(Schedule.concert == concert_id).order_by(Seat.id)
    for seat, status in zip(seats, statuses, strict=False):
        Seat.update(status=status).where(Seat.id == seat.id).execute()


def test_a_stock_pass_admits_only_as_many_as_can_still_buy_and_none_once_sold_out(app: Flask) -> None:
    # Given a concert with 5 seats left on sale (the rest reserved) and 20 fans waiting
    concert = seed_demo()
    assert concert is not None
    total = Seat.select().join(Schedule).where(Schedule.concert == concert).count()
    set_status(concert, [RESERVED] * (total - 5))
    room = WaitingRoom(bootstrap.current().redis, active_limit=100, active_ttl=600, waiting_ttl=300)
    room.issue(user_id=1, concert_id=concert, limit=0)  # nobody admitted on join: the pass decides
    line = [room.issue(user_id=u, concert_id=concert, limit=0) for u in range(2, 21)]

    # When a stock-mode pass runs
    stock = stock_of(concert_id=concert, admitted=room.admitted_total(concert_id=concert))
    limit = pass_limit(mode=STOCK, limit=100, stock=stock, factor=1.0)
    first = room.admit(concert_id=concert, sold_out=stock.sold_out, limit=limit)

    # Then 5 are admitted (a fixed pass would have admitted all 20), in arrival order
    assert (stock.available, first.admitted, first.waiting) == (5, 5, 15)
    assert room.status(token=line[3].token, touch=False).status == "ACTIVE"
    assert room.status(token=line[4].token, touch=False).rank == 1

    # And once the last seats are held nobody more is admitted; once sold, every waiter reads soldOut
    set_status(concert, [RESERVED] * (total - 5) + [HELD] * 5)
    held = stock_of(concert_id=concert, admitted=5)
    assert (held.sold_out, pass_limit(mode=STOCK, limit=100, stock=held, factor=1.0)) == (False, 0)
    set_status(concert, [RESERVED] * total)
    gone = stock_of(concert_id=concert, admitted=5)
    assert room.admit(concert_id=concert, sold_out=gone.sold_out, limit=100).admitted == 0
    assert room.status(token=line[10].token, touch=False).sold_out is True
