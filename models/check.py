"""The invariant checker (SPEC §5, 1-4): reads a live database and lists every violation.

"Every outbox row is published at least once" is a promise about the future, so on a live
system it is checked against a deadline: a row the relay gave up on (FAILED) is a violation at
once; a PENDING row is in flight while it is younger than `max_pending_age_s` (default 60 s,
sixty relay intervals of OUTBOX_INTERVAL=1 s) and a violation after that. A broker outage longer
than the deadline therefore shows up here, which is the point: the events are late. The relay
keeps such rows PENDING and publishes them when the broker is back; `outbox.retry_failed()` puts
FAILED rows back in line.
"""

from __future__ import annotations

import datetime as dt

from models.db import db, is_mysql, utcnow

MAX_PENDING_AGE_S = 60.0

CHECKS: list[tuple[str, str]] = [
    (
        "1: seat with more than one HELD/CONFIRMED reservation",
        "SELECT seat_id, COUNT(*) FROM reservations WHERE status IN ('HELD','CONFIRMED') "
        "GROUP BY seat_id HAVING COUNT(*) > 1",
    ),
    (
        "1: live reservation whose live_seat_id is not its seat",
        "SELECT id, seat_id FROM reservations WHERE status IN ('HELD','CONFIRMED') "
        "AND (live_seat_id IS NULL OR live_seat_id <> seat_id)",
    ),
    (
        "2: RESERVED seat without exactly one CONFIRMED reservation with one payment that is not refunded",
        "SELECT s.id, COUNT(DISTINCT r.id), COUNT(p.id) FROM seats s "
        "LEFT JOIN reservations r ON r.seat_id = s.id AND r.status = 'CONFIRMED' "
        "LEFT JOIN payments p ON p.reservation_id = r.id AND p.status = 'PAID' "
        "WHERE s.status = 'RESERVED' GROUP BY s.id HAVING COUNT(DISTINCT r.id) <> 1 OR COUNT(p.id) <> 1",
    ),
    (
        "2: CONFIRMED reservation whose seat is not RESERVED",
        "SELECT r.id, s.status FROM reservations r JOIN seats s ON s.id = r.seat_id "
        "WHERE r.status = 'CONFIRMED' AND s.status <> 'RESERVED'",
    ),
    (
        "2: payment whose reservation is not CONFIRMED",
        "SELECT p.id, r.status FROM payments p JOIN reservations r ON r.id = p.reservation_id "
        "WHERE p.status = 'PAID' AND r.status <> 'CONFIRMED'",
    ),
    (
        "2: refunded payment whose reservation is not REFUNDED",
        "SELECT p.id, r.status FROM payments p JOIN reservations r ON r.id = p.reservation_id "
        "WHERE p.status = 'REFUNDED' AND r.status <> 'REFUNDED'",
    ),
    (
        "2: refunded reservation still holding its seat's live key",
        "SELECT id, seat_id FROM reservations WHERE status = 'REFUNDED' AND live_seat_id IS NOT NULL",
    ),
    (
        "2: refunded seat not on sale again (neither AVAILABLE nor taken by a later live reservation)",
        "SELECT r.id, s.id, s.status FROM payments p JOIN reservations r ON r.id = p.reservation_id "
        "JOIN seats s ON s.id = r.seat_id WHERE p.status = 'REFUNDED' AND s.status <> 'AVAILABLE' "
        "AND NOT EXISTS (SELECT 1 FROM reservations later WHERE later.seat_id = r.seat_id "
        "AND later.id > r.id AND later.status IN ('HELD','CONFIRMED'))",
    ),
    (
        "3: refunded payment without exactly one REFUND ledger entry of its amount",
        "SELECT p.id, COUNT(l.id) FROM payments p LEFT JOIN point_ledger l ON l.user_id = p.user_id "
        "AND l.type = 'REFUND' AND l.reference = {refund_reference} AND l.amount = p.amount "
        "WHERE p.status = 'REFUNDED' GROUP BY p.id HAVING COUNT(l.id) <> 1",
    ),
    (
        "3: wallet balance differs from its ledger sum",
        "SELECT w.user_id, w.balance, COALESCE(SUM(l.amount), 0) FROM point_wallets w "
        "LEFT JOIN point_ledger l ON l.user_id = w.user_id GROUP BY w.user_id, w.balance "
        "HAVING w.balance <> COALESCE(SUM(l.amount), 0)",
    ),
    ("3: negative wallet balance", "SELECT user_id, balance FROM point_wallets WHERE balance < 0"),
    (
        "3: ledger entries for a user without a wallet",
        "SELECT l.user_id, COUNT(*) FROM point_ledger l LEFT JOIN point_wallets w ON w.user_id = l.user_id "
        "WHERE w.user_id IS NULL GROUP BY l.user_id",
    ),
    (
        "4: payment without exactly one PaymentCompleted outbox row",
        "SELECT p.id, COUNT(o.id) FROM payments p LEFT JOIN outbox_events o "
        "ON o.aggregate_type = 'payment' AND o.aggregate_id = p.id AND o.event_type = 'PaymentCompleted' "
        "GROUP BY p.id HAVING COUNT(o.id) <> 1",
    ),
    (
        "4: refunded payment without exactly one PaymentRefunded outbox row",
        "SELECT p.id, COUNT(o.id) FROM payments p LEFT JOIN outbox_events o "
        "ON o.aggregate_type = 'payment' AND o.aggregate_id = p.id AND o.event_type = 'PaymentRefunded' "
        "WHERE p.status = 'REFUNDED' GROUP BY p.id HAVING COUNT(o.id) <> 1",
    ),
    (
        "4: PaymentRefunded outbox row of a payment that is not refunded",
        "SELECT o.id, o.aggregate_id FROM outbox_events o LEFT JOIN payments p ON p.id = o.aggregate_id "
        "WHERE o.event_type = 'PaymentRefunded' AND (p.id IS NULL OR p.status <> 'REFUNDED')",
    ),
    (
        "4: outbox row FAILED (the relay gave up on it; never published)",
        "SELECT id, event_type, retry_count FROM outbox_events WHERE status = 'FAILED'",
    ),
]

# Formatted with the oldest created_at a PENDING row may have (the publish deadline).
OVERDUE_CHECK = (
    "4: outbox row PENDING past the publish deadline",
    "SELECT id, event_type, created_at FROM outbox_events WHERE status = 'PENDING' AND created_at < '{cutoff}'",
)


def violations(limit: int = 20, max_pending_age_s: float = MAX_PENDING_AGE_S) -> list[str]:
    """Run every check; return one line per violating row (at most `limit` per check)."""
    cutoff = (utcnow() - dt.timedelta(seconds=max_pending_age_s)).strftime("%Y-%m-%d %H:%M:%S.%f")
    overdue = (OVERDUE_CHECK[0], OVERDUE_CHECK[1].format(cutoff=cutoff))
    found: list[str] = []
    # the ledger reference of a refund, "refund:payment:<id>" (models/refunds.py), in this dialect
    reference = "CONCAT('refund:payment:', p.id)" if is_mysql() else "('refund:payment:' || p.id)"
    for name, sql in [*CHECKS, overdue]:
        sql = sql.replace("{refund_reference}", reference)
        rows = db.execute_sql(f"{sql} LIMIT {int(limit)}").fetchall()
        found.extend(f"invariant {name}: {tuple(row)}" for row in rows)
    return found
