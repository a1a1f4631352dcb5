"""Points on real MariaDB: concurrent charges of one wallet, limits, the schema, seed and check CLIs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings
from models import check
from models.db import db
from models.points import LedgerEntry, Wallet
from tests.support.helpers import make_app, models_cli, problem_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
THREADS = 50
AMOUNT = 1000
MAX_ATTEMPTS = 100
SEED_INDEXES = [
    ("seats", ("schedule_id", "status"), False),
    ("reservations", ("status", "expires_at"), False),
    ("payments", ("user_id",), False),
    ("payments", ("reservation_id",), True),
]


def charge(client: FlaskClient, user: int, amount: int) -> Any:
    return client.post(f"/api/v1/users/{user}/points/charge", json={"amount": amount})


def ledger(user: int) -> list[LedgerEntry]:
    return list(LedgerEntry.select().where(LedgerEntry.user_id == user).order_by(LedgerEntry.id))


@pytest.fixture
def limited_client(live_settings: Settings) -> Iterator[FlaskClient]:
    """An app on MariaDB whose limits are small: MAX_CHARGE 2,000 and MAX_BALANCE 1,500."""
    app = make_app(live_settings.with_(max_charge=2000, max_balance=1500))
    yield app.test_client()
    db.close()


def test_fifty_concurrent_charges_of_one_wallet_all_land_exactly_once(
    live_app: Flask, record_property: Callable[[str, object], None]
) -> None:
    # Given 50 threads, each with its own HTTP client, released together by a barrier
    user = 4242
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()
    conflicts = 0
    outcomes: list[int] = []
    errors: list[str] = []

    def worker() -> None:
        nonlocal conflicts
        client = live_app.test_client()
        try:
            barrier.wait(timeout=30)
            for _ in range(MAX_ATTEMPTS):
                response = charge(client, user, AMOUNT)
                if response.status_code != 409:
                    break
                assert problem_of(response)["code"] == "CONCURRENT_UPDATE"
                assert int(response.headers["Retry-After"]) >= 1
                with lock:
                    conflicts += 1
                time.sleep(0.002 + 0.003 * (threading.get_ident() % 5) / 4)
            with lock:
                outcomes.append(response.status_code)
        except BaseException as exc:  # surfaced below: a thread must not fail silently
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if not db.is_closed():
                db.close()

    # When each thread charges 1,000 points once, retrying on 409 CONCURRENT_UPDATE
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)

    print(f"409s: {conflicts}")
    record_property("409s", conflicts)

    # Then every charge succeeded exactly once and the wallet agrees with its ledger
    assert errors == []
    assert not any(t.is_alive() for t in threads)
    assert outcomes == [200] * THREADS
    client = live_app.test_client()
    balance = client.get(f"/api/v1/users/{user}/points").get_json()["balance"]
    entries = ledger(user)
    assert balance == THREADS * AMOUNT == 50_000
    assert sum(e.amount for e in entries) == balance
    assert len(entries) * AMOUNT == balance
    assert len(entries) == THREADS
    assert sorted(e.balance_after for e in entries) == list(range(AMOUNT, THREADS * AMOUNT + 1, AMOUNT))
    assert Wallet.get_by_id(user).version == THREADS
    history = client.get(f"/api/v1/users/{user}/points/history").get_json()["entries"]
    assert [e["balanceAfter"] for e in history] == list(range(THREADS * AMOUNT, 0, -AMOUNT))
    assert check.violations() == []


def test_a_charge_above_max_charge_writes_nothing_on_mariadb(limited_client: FlaskClient) -> None:
    response = charge(limited_client, 1, 2001)

    assert response.status_code == 422
    assert problem_of(response)["code"] == "LIMIT_EXCEEDED"
    assert Wallet.select().count() == 0
    assert LedgerEntry.select().count() == 0


def test_max_balance_is_enforced_with_nothing_written_on_mariadb(limited_client: FlaskClient) -> None:
    # Given a wallet at MAX_BALANCE exactly
    assert charge(limited_client, 1, 1000).status_code == 200
    assert charge(limited_client, 1, 500).get_json() == {"userId": 1, "balance": 1500}

    # When one more point is charged, and a new user's first charge is above the balance limit
    over = charge(limited_client, 1, 1)
    first_over = charge(limited_client, 2, 1501)

    # Then both are refused and nothing changed
    assert over.status_code == 422
    assert problem_of(over)["code"] == "LIMIT_EXCEEDED"
    assert first_over.status_code == 422
    assert Wallet.get_by_id(1).balance == 1500
    assert [e.amount for e in ledger(1)] == [1000, 500]
    assert Wallet.get_or_none(Wallet.user_id == 2) is None
    assert ledger(2) == []
    assert check.violations() == []


def test_every_table_is_innodb_utf8mb4(live_app: Flask) -> None:
    rows = db.execute_sql(
        "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
    ).fetchall()
    tables = {name: (engine, collation) for name, engine, collation in rows}

    expected = {
        "concerts",
        "concert_schedules",
        "seats",
        "point_wallets",
        "point_ledger",
        "reservations",
        "payments",
        "outbox_events",
    }
    assert expected <= set(tables)
    for name in expected:
        engine, collation = tables[name]
        assert engine == "InnoDB", name
        assert collation.startswith("utf8mb4"), (name, collation)


@pytest.mark.parametrize(("table", "columns", "unique"), SEED_INDEXES)
def test_the_seed_indexes_exist_on_mariadb(live_app: Flask, table: str, columns: tuple[str, ...], unique: bool) -> None:
    rows = db.execute_sql(
        "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        (table,),
    ).fetchall()
    indexes: dict[str, tuple[bool, list[str]]] = {}
    for name, non_unique, column in rows:
        indexes.setdefault(name, (int(non_unique) == 0, []))[1].append(column)

    matching = [is_unique for is_unique, cols in indexes.values() if tuple(cols) == columns]
    assert matching, indexes
    assert unique in matching


def test_the_seed_cli_loads_ten_thousand_seats_and_check_passes(live_app: Flask, mysql_url: str) -> None:
    seeded = models_cli(mysql_url, "seed", "--concerts", "1", "--schedules", "2", "--seats", "5000")

    assert seeded.returncode == 0, seeded.stderr
    assert "10000 seat(s)" in seeded.stdout
    counts = db.execute_sql(
        "SELECT COUNT(*), SUM(status = 'AVAILABLE' AND version = 0), COUNT(DISTINCT schedule_id) FROM seats"
    ).fetchone()
    assert (int(counts[0]), int(counts[1]), int(counts[2])) == (10_000, 10_000, 2)

    checked = models_cli(mysql_url, "check")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith("0 violation(s)")


def test_the_check_cli_exits_1_on_a_violation(live_app: Flask, mysql_url: str) -> None:
    db.execute_sql("INSERT INTO point_wallets (user_id, balance, version) VALUES (9, 100, 1)")

    checked = models_cli(mysql_url, "check")

    assert checked.returncode == 1
    assert "invariant 3" in checked.stdout
    assert checked.stdout.strip().endswith("1 violation(s)")
