"""The group commit's statements on MariaDB (models/group_holds.py): values written into the SQL text
(no per-parameter escaping) store exactly what the parameters stored, to the microsecond, and a
job id outside the web's alphabet still goes as a parameter."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask

from models import check
from models.concerts import Seat
from models.db import db
from models.group_holds import HoldRequest, hold_seats
from models.reservations import Reservation, ReservationView
from models.seed import seed_demo

pytestmark = pytest.mark.integration


@pytest.fixture
def seats(live_app: Flask) -> list[Seat]:
    seed_demo()
    first = Seat.select().order_by(Seat.id).first()
    return list(Seat.select().where(Seat.schedule == first.schedule_id).order_by(Seat.number))


def test_a_groups_rows_store_its_views_timestamps_and_job_ids_exactly(seats, monkeypatch):
    plain = [uuid.uuid4().hex for _ in range(3)]
    odd = ["odd job's id", "also odd; --"]  # never made by the web, but a model must store it as given
    params: list[object] = []
    real = db.obj.execute_sql
    monkeypatch.setattr(db.obj, "execute_sql", lambda sql, p=None, *a, **k: params.append(p) or real(sql, p, *a, **k))

    with db.connection_context():
        first = hold_seats(
            holds=[HoldRequest(200 + i, s.schedule_id, s.id, plain[i]) for i, s in enumerate(seats[:3])],
            hold_ttl=300,
            max_holds=4,
        )
        plain_params = list(params)
        second = hold_seats(
            holds=[HoldRequest(210 + i, s.schedule_id, s.id, odd[i]) for i, s in enumerate(seats[3:5])],
            hold_ttl=300,
            max_holds=4,
        )

    assert first is not None and second is not None
    assert all(p is None for p in plain_params)  # the plain group: nothing for PyMySQL to escape
    for view, job_id in zip([*first, *second], plain + odd, strict=True):
        assert isinstance(view, ReservationView)
        row = Reservation.get_by_id(view.reservation_id)
        assert (row.job_id, row.expires_at, row.created_at) == (job_id, view.expires_at, view.created_at)
        assert row.expires_at.microsecond == view.expires_at.microsecond
    assert check.violations() == []
