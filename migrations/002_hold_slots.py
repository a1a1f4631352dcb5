"""002 hold slots: the per-user hold limit enforced by the database.

A HELD reservation takes one of the user's MAX_HOLDS_PER_USER slots of its schedule
(`hold_slot` 1..N, UNIQUE with user_id and schedule_id); CONFIRMED, CANCELLED and EXPIRED
reservations set it back to NULL. Two workers holding seats for the same user in different
partitions at once can therefore never exceed the limit: the second insert of a slot fails.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Add reservations.hold_slot with its unique key."""
    migrator.add_fields("reservations", hold_slot=pw.SmallIntegerField(null=True))
    migrator.add_index("reservations", "user_id", "schedule_id", "hold_slot", unique=True)


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop the column and its key."""
    migrator.drop_index("reservations", "user_id", "schedule_id", "hold_slot")
    migrator.remove_fields("reservations", "hold_slot")
