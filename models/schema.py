"""Schema migrations through peewee-migrate (files in migrations/)."""

from __future__ import annotations

import logging
from pathlib import Path

import peewee as pw
from peewee_migrate import Router

from models.db import db

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
HISTORY_TABLE = "schema_migrations"


def _router() -> Router:
    logger = logging.getLogger("migrations")
    database = db.obj if isinstance(db, pw.DatabaseProxy) else db
    return Router(database, migrate_dir=str(MIGRATIONS_DIR), migrate_table=HISTORY_TABLE, logger=logger)


def migrate() -> list[str]:
    """Apply every pending migration; return the names applied."""
    return list(_router().run())


def pending() -> list[str]:
    """Names of migrations not yet applied."""
    return list(_router().diff)


def drop_all() -> None:
    """Drop every table and the migration history (tests and benchmarks only)."""
    from models.tables import ALL_TABLES

    database = db.obj
    database.drop_tables(list(reversed(ALL_TABLES)), safe=True)
    database.execute_sql(f"DROP TABLE IF EXISTS {HISTORY_TABLE}")
