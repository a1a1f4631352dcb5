"""Migrations, the seed loader and the invariant checker on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from models import check, schema, seed
from models.concerts import Concert, Schedule, Seat
from models.db import db, init_database, utcnow
from models.tables import ALL_TABLES

SEED_INDEXES = [
    ("seats", ("schedule_id", "status"), False),
    ("reservations", ("status", "expires_at"), False),
    ("payments", ("user_id",), False),
    ("payments", ("reservation_id",), True),
]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[None]:
    """An empty SQLite file bound to the deferred database; no schema yet."""
    init_database(f"sqlite:///{tmp_path / 'schema.db'}")
    yield
    db.close()


@pytest.fixture
def migrated(database: None) -> None:
    schema.migrate()


def indexes_of(table: str) -> dict[tuple[str, ...], bool]:
    """Index columns -> unique, for one table."""
    return {tuple(i.columns): bool(i.unique) for i in db.get_indexes(table)}


def test_migrate_creates_every_table(database: None) -> None:
    assert db.get_tables() == []

    applied = schema.migrate()

    assert applied == sorted(p.stem for p in schema.MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.py"))
    assert applied[0] == "001_initial"
    tables = set(db.get_tables())
    assert {model._meta.table_name for model in ALL_TABLES} <= tables
    for model in ALL_TABLES:
        columns = {c.name for c in db.get_columns(model._meta.table_name)}
        assert {f.column_name for f in model._meta.sorted_fields} <= columns, model._meta.table_name


@pytest.mark.parametrize(("table", "columns", "unique"), SEED_INDEXES)
def test_migrate_creates_the_seed_indexes(migrated: None, table: str, columns: tuple[str, ...], unique: bool) -> None:
    found = indexes_of(table)

    assert columns in found, found
    assert found[columns] is unique


def test_a_seat_number_cannot_repeat_within_a_schedule(migrated: None) -> None:
    concert = Concert.create(title="T", venue="V")
    schedule = Schedule.create(concert=concert, starts_at=utcnow(), total_seats=1)
    Seat.create(schedule=schedule, number=1, price=10)

    with pytest.raises(pw.IntegrityError):
        Seat.create(schedule=schedule, number=1, price=10)
    assert Seat.select().count() == 1


def test_migrate_is_idempotent(migrated: None) -> None:
    assert schema.pending() == []
    assert schema.migrate() == []
    assert set(db.get_tables()) >= {model._meta.table_name for model in ALL_TABLES}


def test_seed_loads_every_seat_available_with_sql_defaults(migrated: None) -> None:
    result = seed.seed(concerts=2, schedules=3, seats=100)

    assert (result.concerts, result.schedules, result.seats) == (2, 6, 600)
    assert Concert.select().count() == 2
    assert Schedule.select().count() == 6
    assert Seat.select().count() == 600
    assert Seat.select().where((Seat.status == "AVAILABLE") & (Seat.version == 0)).count() == 600
    per_schedule = db.execute_sql(
        "SELECT schedule_id, COUNT(*), MIN(number), MAX(number), COUNT(DISTINCT number) FROM seats GROUP BY schedule_id"
    ).fetchall()
    assert sorted(row[1:] for row in per_schedule) == [(100, 1, 100, 100)] * 6
    assert check.violations() == []


@pytest.mark.parametrize("bad", [{"concerts": 0}, {"schedules": 0}, {"seats": 0}])
def test_seed_refuses_non_positive_counts(migrated: None, bad: dict[str, int]) -> None:
    counts = {"concerts": 1, "schedules": 1, "seats": 1, **bad}

    with pytest.raises(ValueError):
        seed.seed(**counts)
    assert Concert.select().count() == 0


def test_a_clean_database_has_no_violations(migrated: None) -> None:
    assert check.violations() == []


def test_a_wallet_that_disagrees_with_its_ledger_is_reported_as_invariant_3(migrated: None) -> None:
    # Given a wallet of 500 whose ledger only adds up to 300 (written behind the domain's back)
    db.execute_sql("INSERT INTO point_wallets (user_id, balance, version) VALUES (11, 500, 2)")
    db.execute_sql(
        "INSERT INTO point_ledger (user_id, type, amount, balance_after) VALUES (11, 'CHARGE', 100, 100), "
        "(11, 'CHARGE', 200, 300)"
    )
    # and a consistent wallet next to it
    db.execute_sql("INSERT INTO point_wallets (user_id, balance, version) VALUES (12, 40, 1)")
    db.execute_sql("INSERT INTO point_ledger (user_id, type, amount, balance_after) VALUES (12, 'CHARGE', 40, 40)")

    found = check.violations()

    assert len(found) == 1, found
    assert found[0].startswith("invariant 3: wallet balance differs from its ledger sum")
    assert "11" in found[0] and "500" in found[0] and "300" in found[0]


def test_a_negative_balance_is_reported_as_invariant_3(migrated: None) -> None:
    db.execute_sql("INSERT INTO point_wallets (user_id, balance, version) VALUES (13, -5, 1)")
    db.execute_sql("INSERT INTO point_ledger (user_id, type, amount, balance_after) VALUES (13, 'USE', -5, -5)")

    found = check.violations()

    assert found == ["invariant 3: negative wallet balance: (13, -5)"]
