"""Payments: the table; the pay function arrives with the payments issue."""

from __future__ import annotations

import peewee as pw

from models.db import BaseModel, UtcDateTimeField, utcnow
from models.reservations import Reservation


class Payment(BaseModel):
    """A completed payment; UNIQUE(reservation_id) makes a second charge of one reservation impossible."""

    id = pw.BigAutoField()
    reservation = pw.ForeignKeyField(Reservation, column_name="reservation_id", unique=True, backref="payments")
    user_id = pw.BigIntegerField(index=True)
    amount = pw.BigIntegerField()
    idempotency_key = pw.CharField(max_length=128, null=True)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "payments"
        indexes = ((("user_id", "idempotency_key"), True),)
