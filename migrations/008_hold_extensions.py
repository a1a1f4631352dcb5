"""008 hold extensions: how many more times a HELD reservation may be extended (HOLD_MAX_EXTENSIONS)."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Add reservations.extensions_left (set from HOLD_MAX_EXTENSIONS at hold time; 0 for older rows)."""
    migrator.add_fields(
        "reservations", extensions_left=pw.SmallIntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    )
    if isinstance(database, pw.MySQLDatabase):  # add_fields leaves no SQL default; raw INSERTs need one
        migrator.sql("ALTER TABLE reservations ALTER COLUMN extensions_left SET DEFAULT 0")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop reservations.extensions_left."""
    migrator.remove_fields("reservations", "extensions_left")
