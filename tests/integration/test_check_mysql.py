"""The invariant checker is seen to catch what it promises (SPEC §5, 1-4, models/check.py).

A consistent MariaDB database (a paid seat with its published event, a held seat, a free seat)
is checked clean by `python -m models check` run as its own process. Then each violation is
planted with raw SQL, the way a bug or a hand edit would leave it, and the same command must
print it and exit 1; undoing the plant makes the database clean again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask

from models import check, outbox, payments, points, refunds
from models.concerts import Seat
from models.db import db
from models.seed import seed_demo
from tests.support.helpers import hold, models_cli

pytestmark = pytest.mark.integration

PAYER, HOLDER = 11, 12


@dataclass(frozen=True)
class World:
    """Ids of the consistent state every plant starts from."""

    paid_res: int
    paid_seat: int
    payment: int
    held_res: int
    held_seat: int
    free_seat: int
    payer_balance: int


@pytest.fixture
def world(live_app: Flask) -> Iterator[World]:
    """A paid reservation (event published), a held one and a free seat, on a fresh MariaDB schema."""
    seed_demo()
    paid, held, free = list(Seat.select().order_by(Seat.id).limit(3))
    points.charge(user_id=PAYER, amount=120_000, max_charge=1_000_000, max_balance=10_000_000)
    paid_res = hold(paid, PAYER)
    payment = payments.pay(reservation_id=paid_res, user_id=PAYER, job_id=uuid.uuid4().hex)
    outbox.relay_once(publish=lambda rows: [None] * len(rows))
    held_res = hold(held, HOLDER)
    yield World(paid_res, paid.id, payment.payment_id, held_res, held.id, free.id, payment.balance)


# A refund as models/refunds.py writes it (payment, reservation, seat, ledger, wallet, event), and its undo.
REFUNDED_IN_FULL = [
    "UPDATE payments SET status = 'REFUNDED', refunded_at = UTC_TIMESTAMP(6) WHERE id = {payment}",
    "UPDATE reservations SET status = 'REFUNDED', live_seat_id = NULL WHERE id = {paid_res}",
    "UPDATE seats SET status = 'AVAILABLE' WHERE id = {paid_seat}",
    "INSERT INTO point_ledger (user_id, type, amount, balance_after, reference, created_at) SELECT user_id, "
    "'REFUND', amount, {payer_balance} + amount, CONCAT('refund:payment:', id), UTC_TIMESTAMP(6) FROM payments "
    "WHERE id = {payment}",
    "UPDATE point_wallets w JOIN payments p ON p.user_id = w.user_id SET w.balance = w.balance + p.amount "
    "WHERE p.id = {payment}",
    "INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, topic, message_key, payload, "
    "status, created_at, published_at, retry_count) SELECT 'planted-refunded', aggregate_type, aggregate_id, "
    "'PaymentRefunded', 'payment-refunded', message_key, payload, status, created_at, published_at, retry_count "
    "FROM outbox_events WHERE aggregate_id = {payment} AND event_type = 'PaymentCompleted'",
]
UNDO_REFUND = [
    "UPDATE payments SET status = 'PAID', refunded_at = NULL WHERE id = {payment}",
    "UPDATE reservations SET status = 'CONFIRMED', live_seat_id = seat_id WHERE id = {paid_res}",
    "UPDATE seats SET status = 'RESERVED' WHERE id = {paid_seat}",
    "UPDATE point_wallets w JOIN payments p ON p.user_id = w.user_id SET w.balance = w.balance - p.amount "
    "WHERE p.id = {payment}",
    "DELETE FROM point_ledger WHERE type = 'REFUND'",
    "DELETE FROM outbox_events WHERE event_type = 'PaymentRefunded'",
]

# (expected line, plant, undo): the SQL is formatted with the World's fields.
PLANTS: dict[str, tuple[str, list[str], list[str]]] = {
    "1: two live reservations of one seat": (
        "invariant 1: seat with more than one HELD/CONFIRMED reservation: ({held_seat}, 2)",
        [
            "INSERT INTO reservations (user_id, seat_id, schedule_id, price, status, expires_at, version, "
            "created_at, updated_at) SELECT 99, seat_id, schedule_id, price, 'HELD', expires_at, 0, created_at, "
            "updated_at FROM reservations WHERE id = {held_res}"
        ],
        ["DELETE FROM reservations WHERE user_id = 99"],
    ),
    "1: a live reservation outside the unique key": (
        "invariant 1: live reservation whose live_seat_id is not its seat: ({held_res}, {held_seat})",
        ["UPDATE reservations SET live_seat_id = NULL WHERE id = {held_res}"],
        ["UPDATE reservations SET live_seat_id = seat_id WHERE id = {held_res}"],
    ),
    "2: a RESERVED seat nobody paid for": (
        "invariant 2: RESERVED seat without exactly one CONFIRMED reservation with one payment that is not refunded: "
        "({free_seat}, 0, 0)",
        ["UPDATE seats SET status = 'RESERVED' WHERE id = {free_seat}"],
        ["UPDATE seats SET status = 'AVAILABLE' WHERE id = {free_seat}"],
    ),
    "2: a paid seat back on sale": (
        "invariant 2: CONFIRMED reservation whose seat is not RESERVED: ({paid_res}, 'AVAILABLE')",
        ["UPDATE seats SET status = 'AVAILABLE' WHERE id = {paid_seat}"],
        ["UPDATE seats SET status = 'RESERVED' WHERE id = {paid_seat}"],
    ),
    "2: a payment of an expired reservation": (
        "invariant 2: payment whose reservation is not CONFIRMED: ({payment}, 'EXPIRED')",
        ["UPDATE reservations SET status = 'EXPIRED', live_seat_id = NULL WHERE id = {paid_res}"],
        ["UPDATE reservations SET status = 'CONFIRMED', live_seat_id = seat_id WHERE id = {paid_res}"],
    ),
    "2: a refunded payment whose reservation still stands": (
        "invariant 2: refunded payment whose reservation is not REFUNDED: ({payment}, 'CONFIRMED')",
        ["UPDATE payments SET status = 'REFUNDED' WHERE id = {payment}"],
        ["UPDATE payments SET status = 'PAID' WHERE id = {payment}"],
    ),
    "3: a refund without its points back": (
        "invariant 3: refunded payment without exactly one REFUND ledger entry of its amount: ({payment}, 0)",
        [
            "UPDATE payments SET status = 'REFUNDED' WHERE id = {payment}",
            "UPDATE reservations SET status = 'REFUNDED', live_seat_id = NULL WHERE id = {paid_res}",
            "UPDATE seats SET status = 'AVAILABLE' WHERE id = {paid_seat}",
        ],
        [
            "UPDATE payments SET status = 'PAID' WHERE id = {payment}",
            "UPDATE reservations SET status = 'CONFIRMED', live_seat_id = seat_id WHERE id = {paid_res}",
            "UPDATE seats SET status = 'RESERVED' WHERE id = {paid_seat}",
        ],
    ),
    "2: a refunded reservation keeping its seat's live key": (
        "invariant 2: refunded reservation still holding its seat's live key: ({paid_res}, {paid_seat})",
        [*REFUNDED_IN_FULL, "UPDATE reservations SET live_seat_id = seat_id WHERE id = {paid_res}"],
        UNDO_REFUND,
    ),
    "2: a refunded seat never put back on sale": (
        "invariant 2: refunded seat not on sale again (neither AVAILABLE nor taken by a later live reservation): "
        "({paid_res}, {paid_seat}, 'RESERVED')",
        [*REFUNDED_IN_FULL, "UPDATE seats SET status = 'RESERVED' WHERE id = {paid_seat}"],
        UNDO_REFUND,
    ),
    "4: a refund without its event": (
        "invariant 4: refunded payment without exactly one PaymentRefunded outbox row: ({payment}, 0)",
        [*REFUNDED_IN_FULL, "DELETE FROM outbox_events WHERE event_type = 'PaymentRefunded'"],
        UNDO_REFUND,
    ),
    "4: a refund event of a paid seat": (
        "invariant 4: PaymentRefunded outbox row of a payment that is not refunded: (",
        [
            "INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, topic, message_key, "
            "payload, status, created_at, published_at, retry_count) SELECT 'planted-refund', aggregate_type, "
            "aggregate_id, 'PaymentRefunded', 'payment-refunded', message_key, payload, status, created_at, "
            "published_at, retry_count FROM outbox_events WHERE aggregate_id = {payment}"
        ],
        ["DELETE FROM outbox_events WHERE event_id = 'planted-refund'"],
    ),
    "3: a balance its ledger does not explain": (
        "invariant 3: wallet balance differs from its ledger sum: (11, {payer_balance_plus_1}, ",
        ["UPDATE point_wallets SET balance = balance + 1 WHERE user_id = 11"],
        ["UPDATE point_wallets SET balance = balance - 1 WHERE user_id = 11"],
    ),
    "3: a negative balance its ledger explains": (
        "invariant 3: negative wallet balance: (77, -5)",
        [
            "INSERT INTO point_ledger (user_id, type, amount, balance_after, reference, created_at) "
            "VALUES (77, 'USE', -5, -5, 'planted', UTC_TIMESTAMP(6))",
            "INSERT INTO point_wallets (user_id, balance, version, updated_at) VALUES (77, -5, 1, UTC_TIMESTAMP(6))",
        ],
        ["DELETE FROM point_ledger WHERE user_id = 77", "DELETE FROM point_wallets WHERE user_id = 77"],
    ),
    "3: ledger entries without a wallet": (
        "invariant 3: ledger entries for a user without a wallet: (78, 1)",
        [
            "INSERT INTO point_ledger (user_id, type, amount, balance_after, reference, created_at) "
            "VALUES (78, 'CHARGE', 10, 10, 'planted', UTC_TIMESTAMP(6))"
        ],
        ["DELETE FROM point_ledger WHERE user_id = 78"],
    ),
    "4: a payment without its event": (
        "invariant 4: payment without exactly one PaymentCompleted outbox row: ({payment}, 0)",
        ["UPDATE outbox_events SET aggregate_id = aggregate_id + 1000000 WHERE aggregate_id = {payment}"],
        ["UPDATE outbox_events SET aggregate_id = aggregate_id - 1000000 WHERE aggregate_id = {payment} + 1000000"],
    ),
    "4: a payment announced twice": (
        "invariant 4: payment without exactly one PaymentCompleted outbox row: ({payment}, 2)",
        [
            "INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, topic, message_key, "
            "payload, status, created_at, published_at, retry_count) SELECT 'planted-duplicate', aggregate_type, "
            "aggregate_id, event_type, topic, message_key, payload, status, created_at, published_at, retry_count "
            "FROM outbox_events WHERE aggregate_id = {payment}"
        ],
        ["DELETE FROM outbox_events WHERE event_id = 'planted-duplicate'"],
    ),
    "4: an event the relay gave up on": (
        "invariant 4: outbox row FAILED (the relay gave up on it; never published): (",
        ["UPDATE outbox_events SET status = 'FAILED', published_at = NULL, retry_count = 50"],
        ["UPDATE outbox_events SET status = 'PUBLISHED', published_at = created_at, retry_count = 0"],
    ),
    "4: an event unpublished for an hour": (
        "invariant 4: outbox row PENDING past the publish deadline: (",
        ["UPDATE outbox_events SET status = 'PENDING', published_at = NULL, created_at = created_at - INTERVAL 1 HOUR"],
        ["UPDATE outbox_events SET status = 'PUBLISHED', created_at = created_at + INTERVAL 1 HOUR"],
    ),
}


def execute(statements: list[str], w: World) -> None:
    fields = {**w.__dict__, "payer_balance_plus_1": w.payer_balance + 1}
    with db.atomic():
        for sql in statements:
            db.execute_sql(sql.format(**fields))


def test_a_consistent_database_is_checked_clean_by_the_cli(world: World, mysql_url: str) -> None:
    checked = models_cli(mysql_url, "check")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "0 violation(s)"


@pytest.mark.parametrize("plant", list(PLANTS), ids=list(PLANTS))
def test_a_planted_violation_is_printed_and_exits_1_then_undone_the_database_is_clean(
    world: World, mysql_url: str, plant: str
) -> None:
    expected, planted, undo = PLANTS[plant]
    fields = {**world.__dict__, "payer_balance_plus_1": world.payer_balance + 1}
    assert check.violations() == []

    # When the violation is planted with raw SQL and the checker runs as its own process
    execute(planted, world)
    checked = models_cli(mysql_url, "check")

    # Then it names the violating row and exits 1
    print(f"\n{plant}:\n{checked.stdout}")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert expected.format(**fields) in checked.stdout, checked.stdout
    # And once the plant is undone the same database is clean again
    execute(undo, world)
    assert check.violations() == []


def test_a_pending_event_younger_than_the_deadline_is_in_flight_not_a_violation(world: World, mysql_url: str) -> None:
    # Given the paid event back to PENDING, 30 s old: the relay has not got to it yet
    execute(["UPDATE outbox_events SET status = 'PENDING', created_at = created_at - INTERVAL 30 SECOND"], world)

    # Then the default deadline (60 s) tolerates it, and a deadline of 10 s does not
    relaxed = models_cli(mysql_url, "check")
    strict = models_cli(mysql_url, "check", "--max-pending-age", "10")

    assert relaxed.returncode == 0, relaxed.stdout
    assert strict.returncode == 1, strict.stdout
    assert "invariant 4: outbox row PENDING past the publish deadline" in strict.stdout


def test_a_refund_as_written_by_models_refunds_and_as_planted_here_is_checked_clean(world: World) -> None:
    """Hidden failure: a new refund check that flags the refund's own correct state (or a plant
    base above that is itself a violation, so every refund plant would pass for the wrong reason)."""
    execute(REFUNDED_IN_FULL, world)
    assert check.violations() == []
    execute(UNDO_REFUND, world)
    assert check.violations() == []

    refunds.refund_payment(payment_id=world.payment, user_id=PAYER, job_id="refund-1", cutoff_s=0)

    assert check.violations() == []
