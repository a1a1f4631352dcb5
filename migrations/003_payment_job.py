"""003 payment job id: a redelivered payment message finds the payment it already made."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Add payments.job_id (UNIQUE, NULL for payments made outside a job)."""
    migrator.add_fields("payments", job_id=pw.CharField(max_length=64, null=True, unique=True))


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop payments.job_id."""
    migrator.remove_fields("payments", "job_id")
