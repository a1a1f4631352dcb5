"""009 binary keys: Idempotency-Keys and job ids compare exactly (case-sensitive) on MySQL too.

The tables were created `utf8mb4_unicode_ci`, so on MySQL/MariaDB `order-abc` and `ORDER-ABC`
were one key (the second payment's lookup found the first and answered 422
IDEMPOTENCY_KEY_REUSED) while SQLite, Redis and SPEC §3 tell them apart. `utf8mb4_bin` compares
bytes: one behaviour in every database. SQLite already compares TEXT with BINARY: a no-op there.

Columns: `payments.idempotency_key` (the client's key; UNIQUE with user_id), and the job ids
that find a redelivered job's effect: `payments.job_id`, `payments.refund_job_id`,
`reservations.job_id` (all UNIQUE). Queue tokens are never stored in the database (Redis only,
binary-safe). Not changed: `outbox_events.event_id` (UUIDs the server writes in lower case and
never looks up from input) and `concerts.seed_hex` (never looked up).
"""

import peewee as pw
from peewee_migrate import Migrator

# (table, column, type, null): the column's definition, kept as it was
COLUMNS = (
    ("payments", "idempotency_key", "VARCHAR(128)", "NULL"),
    ("payments", "job_id", "VARCHAR(64)", "NULL"),
    ("payments", "refund_job_id", "VARCHAR(64)", "NULL"),
    ("reservations", "job_id", "VARCHAR(64)", "NULL"),
)


def _collate(migrator: Migrator, database: pw.Database, collation: str) -> None:
    if not isinstance(database, pw.MySQLDatabase):
        return
    for table, column, sql_type, null in COLUMNS:
        migrator.sql(
            f"ALTER TABLE {table} MODIFY {column} {sql_type} CHARACTER SET utf8mb4 COLLATE {collation} {null}"
        )


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Make the key columns binary (utf8mb4_bin) on MySQL; nothing on SQLite."""
    _collate(migrator, database, "utf8mb4_bin")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Back to the tables' utf8mb4_unicode_ci."""
    _collate(migrator, database, "utf8mb4_unicode_ci")
