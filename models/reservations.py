"""Seat holds (reservations): the table; the hold/cancel/expire functions arrive with the pipeline issue."""

from __future__ import annotations

import peewee as pw

from models.concerts import Seat
from models.db import BaseModel, UtcDateTimeField, utcnow

HELD, CONFIRMED, EXPIRED, CANCELLED = "HELD", "CONFIRMED", "EXPIRED", "CANCELLED"
LIVE_STATUSES = (HELD, CONFIRMED)


class Reservation(BaseModel):
    """A user's hold on a seat.

    `live_seat_id` equals `seat_id` while the reservation is HELD or CONFIRMED and is NULL
    otherwise; its UNIQUE key is what makes a second live reservation of one seat impossible
    in the database itself (SPEC §5 invariant 1), whatever the workers do.
    """

    id = pw.BigAutoField()
    user_id = pw.BigIntegerField()
    seat = pw.ForeignKeyField(Seat, column_name="seat_id", backref="reservations")
    schedule_id = pw.BigIntegerField()
    price = pw.BigIntegerField()
    status = pw.CharField(max_length=16, default=HELD)
    expires_at = UtcDateTimeField()
    version = pw.IntegerField(default=0)
    live_seat_id = pw.BigIntegerField(null=True, unique=True)
    job_id = pw.CharField(max_length=64, null=True, unique=True)
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "reservations"
        indexes = (
            (("status", "expires_at"), False),
            (("user_id", "schedule_id", "status"), False),
        )
