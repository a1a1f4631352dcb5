"""010 charge keys: `POST .../points/charge` honours Idempotency-Key (SPEC §3 v2).

`point_ledger.idempotency_key` (NULL for entries made without a key, and for USE/REFUND) is
written in the charge's own transaction, UNIQUE with `user_id`: of two concurrent charges with
one key only one entry can commit; the other finds it and answers its `balance_after`.
Binary collation like the payment keys (migration 009): keys compare exactly.
"""

import peewee as pw
from peewee_migrate import Migrator

INDEX = "pointledger_user_id_idempotency_key"


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Add point_ledger.idempotency_key (utf8mb4_bin on MySQL) and UNIQUE (user_id, idempotency_key)."""
    collation = " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if isinstance(database, pw.MySQLDatabase) else ""
    migrator.sql(f"ALTER TABLE point_ledger ADD COLUMN idempotency_key VARCHAR(128){collation} NULL")
    migrator.sql(f"CREATE UNIQUE INDEX {INDEX} ON point_ledger (user_id, idempotency_key)")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop the key and its column."""
    on_table = " ON point_ledger" if isinstance(database, pw.MySQLDatabase) else ""
    migrator.sql(f"DROP INDEX {INDEX}{on_table}")
    migrator.sql("ALTER TABLE point_ledger DROP COLUMN idempotency_key")
