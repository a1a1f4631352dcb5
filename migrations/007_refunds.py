"""007 refunds: a payment's status (PAID | REFUNDED), when and by which job it was refunded.

A refunded reservation's status is REFUNDED (the column already holds any status name).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Add payments.status (default PAID), refunded_at and refund_job_id (UNIQUE, NULL until refunded)."""

    class DateTime6(pw.DateTimeField):
        field_type = "DATETIME(6)"

    migrator.add_fields(
        "payments",
        status=pw.CharField(max_length=16, default="PAID", constraints=[pw.SQL("DEFAULT 'PAID'")]),
        refunded_at=DateTime6(null=True),
        refund_job_id=pw.CharField(max_length=64, null=True, unique=True),
    )
    if isinstance(database, pw.MySQLDatabase):  # add_fields leaves no SQL default; raw INSERTs need one
        migrator.sql("ALTER TABLE payments ALTER COLUMN status SET DEFAULT 'PAID'")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop the refund columns."""
    migrator.remove_fields("payments", "status", "refunded_at", "refund_job_id")
