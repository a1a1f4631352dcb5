"""004 outbox aggregate index; drop the redundant seats(schedule_id) index.

* `outbox_events (aggregate_type, aggregate_id)`: the invariant-4 check (`python -m models
  check`) joins every payment to its outbox rows by aggregate. Without the index that was a
  nested loop over both tables: at 55k payments it ran past the 10 s query timeout
  (bench/index_bench.py's data, 2026-11-27).
* `seat_schedule_id` (schedule_id) is a left prefix of UNIQUE (schedule_id, number), which
  serves the foreign key and every `WHERE schedule_id = ?` as well; one index less to maintain
  on every seat write, and the optimizer can no longer pick it over (schedule_id, status).
"""

import peewee as pw
from peewee_migrate import Migrator


def _drop_index_sql(database: pw.Database, name: str, table: str) -> str:
    if isinstance(database, pw.SqliteDatabase):
        return f"DROP INDEX IF EXISTS {name}"
    return f"DROP INDEX {name} ON {table}"


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Add the outbox aggregate index and drop seats(schedule_id)."""
    migrator.add_index("outbox_events", "aggregate_type", "aggregate_id")
    migrator.sql(_drop_index_sql(database, "seat_schedule_id", "seats"))


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Restore seats(schedule_id); drop the outbox aggregate index."""
    migrator.sql("CREATE INDEX seat_schedule_id ON seats (schedule_id)")
    migrator.drop_index("outbox_events", "aggregate_type", "aggregate_id")
