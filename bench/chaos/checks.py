"""After the load: wait for the pipeline to settle, then read what every store says happened."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlparse

from bench.chaos import ROOT, Record
from bench.chaos.service import Service
from bench.common import connect


def job_states(service: Service, job_ids: list[str]) -> Counter[str]:
    """Status of each recorded job read from the JobStore (MISSING when the record is gone)."""
    from workers.jobs import job_key

    r = service.redis.client()
    pipe = r.pipeline(transaction=False)
    for j in job_ids:
        pipe.hget(job_key(j), "status")
    return Counter(s or "MISSING" for s in pipe.execute())


def failure_codes(service: Service, job_ids: list[str]) -> dict[str, int]:
    """The problem codes of the recorded jobs that FAILED."""
    from workers.jobs import job_key

    r = service.redis.client()
    pipe = r.pipeline(transaction=False)
    for j in job_ids:
        pipe.hget(job_key(j), "error")
    return dict(Counter(json.loads(e).get("code", "?") for e in pipe.execute() if e))


def event_state(service: Service) -> dict[str, int]:
    """Outbox rows by status, and PUBLISHED events whose consumption marker is missing (in all, and
    of them the PaymentRefunded ones)."""
    name = urlparse(service.db_url).path.lstrip("/")
    with connect(service.db_url, None) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT status, COUNT(*) FROM `{name}`.outbox_events GROUP BY status")
        by_status = dict(cur.fetchall())
        cur.execute(f"SELECT event_id, event_type FROM `{name}`.outbox_events WHERE status = 'PUBLISHED'")
        published = list(cur.fetchall())
    r = service.redis.client()
    pipe = r.pipeline()
    for e, _ in published:
        pipe.exists(f"events:done:{e}")
    consumed = pipe.execute()
    refunds = [bool(done) for (_, kind), done in zip(published, consumed, strict=True) if kind == "PaymentRefunded"]
    return {
        "pending": int(by_status.get("PENDING", 0)),
        "failed": int(by_status.get("FAILED", 0)),
        "published": int(by_status.get("PUBLISHED", 0)),
        "unconsumed": sum(1 for x in consumed if not x),
        "refunds_published": len(refunds),
        "refunds_consumed": sum(refunds),
    }


def settle(service: Service, rec: Record, timeout: float) -> dict[str, float | None]:
    """Wait until every recorded job is terminal and every event is published and consumed; return
    when each of the two held first (seconds after the load ended; None if it never did)."""
    started = time.monotonic()
    ids = list(rec.accepted)
    done: dict[str, float | None] = {"jobs_terminal_s": None, "events_consumed_s": None}
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            states = job_states(service, ids)
            ev = event_state(service)
            now = round(time.monotonic() - started, 1)
            if done["jobs_terminal_s"] is None and states["QUEUED"] + states["RUNNING"] == 0:
                done["jobs_terminal_s"] = now
            if done["events_consumed_s"] is None and ev["pending"] == 0 and ev["unconsumed"] == 0:
                done["events_consumed_s"] = now
            if None not in done.values():
                break
        time.sleep(0.5)
    return done


_COUNTS = {
    "oversold_db": "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations WHERE status = 'CONFIRMED' "
    "GROUP BY seat_id HAVING COUNT(*) > 1) x",
    "double_payments": "SELECT COUNT(*) FROM (SELECT reservation_id FROM payments GROUP BY reservation_id "
    "HAVING COUNT(*) > 1) x",
    "double_use": "SELECT COUNT(*) FROM (SELECT reference FROM point_ledger WHERE type = 'USE' "
    "GROUP BY reference HAVING COUNT(*) > 1) x",
    "double_refunds": "SELECT COUNT(*) FROM (SELECT reference FROM point_ledger WHERE type = 'REFUND' "
    "GROUP BY reference HAVING COUNT(*) > 1) x",
    # a refunded payment whose reservation is not REFUNDED, or whose REFUND entry is missing or wrong
    "refunds_unbooked": "SELECT COUNT(*) FROM payments p JOIN reservations r ON r.id = p.reservation_id "
    "LEFT JOIN point_ledger l ON l.type = 'REFUND' AND l.reference = CONCAT('refund:payment:', p.id) "
    "AND l.amount = p.amount AND l.user_id = p.user_id WHERE p.status = 'REFUNDED' "
    "AND (r.status <> 'REFUNDED' OR l.id IS NULL)",
    # a refunded seat that is neither AVAILABLE nor taken again by a later live reservation
    "refunded_seats_not_on_sale": "SELECT COUNT(*) FROM payments p JOIN reservations r ON r.id = p.reservation_id "
    "JOIN seats s ON s.id = r.seat_id WHERE p.status = 'REFUNDED' AND s.status <> 'AVAILABLE' AND NOT EXISTS "
    "(SELECT 1 FROM reservations later WHERE later.seat_id = r.seat_id AND later.id > r.id "
    "AND later.status IN ('HELD','CONFIRMED'))",
}
_WITHOUT_ONE_EVENT = (
    "SELECT COUNT(*) FROM payments p LEFT JOIN outbox_events o ON o.aggregate_type = 'payment' "
    "AND o.aggregate_id = p.id AND o.event_type = 'PaymentCompleted' AND o.status = 'PUBLISHED' "
    "GROUP BY p.id HAVING COUNT(o.id) <> 1"
)
_REFUNDS_WITHOUT_ONE_EVENT = (
    "SELECT COUNT(*) FROM payments p LEFT JOIN outbox_events o ON o.aggregate_type = 'payment' "
    "AND o.aggregate_id = p.id AND o.event_type = 'PaymentRefunded' AND o.status = 'PUBLISHED' "
    "WHERE p.status = 'REFUNDED' GROUP BY p.id HAVING COUNT(o.id) <> 1"
)
_WALLETS = (
    "SELECT w.user_id, w.balance, COALESCE(SUM(l.amount), 0), "
    "COALESCE(SUM(CASE WHEN l.type = 'REFUND' THEN l.amount ELSE 0 END), 0) "
    "FROM point_wallets w LEFT JOIN point_ledger l ON l.user_id = w.user_id GROUP BY w.user_id, w.balance"
)


def database_checks(service: Service, rec: Record) -> dict[str, Any]:
    """Oversold seats, double charges, wallets against their ledger and the client's record, event rows."""
    db = _database_figures(service)
    off = wallets_off(db["wallets"], db["db_paid"], rec)
    oversold_client = sum(1 for users_ in rec.seats_paid.values() if len(users_) > 1)
    refunds = refunds_off(db["refunded"], rec)
    return {
        "oversold": db["oversold_db"] + oversold_client,
        "double_charges": db["double_payments"] + db["double_use"] + db["double_refunds"],
        "refunds": len(db["refunded"]),
        "client_refunds": sum(len(v) for v in rec.refunded.values()),
        "refunds_requested": rec.refunds_requested,
        "refunds_unclear_to_client": len(rec.refund_unknown),
        "refunds_refused": dict(rec.refund_refused),
        "refunds_off": len(refunds) + db["refunds_unbooked"] + db["refunded_seats_not_on_sale"],
        "refunds_off_detail": {
            "db_vs_client": refunds[:20],
            "refunded_without_refunded_reservation_or_ledger_entry": db["refunds_unbooked"],
            "refunded_seats_not_on_sale": db["refunded_seats_not_on_sale"],
        },
        "refunds_without_one_published_event": db["refunds_without_one_published_event"],
        "wallets_off": len(off),
        "wallets_off_detail": off[:20],
        "wallets_checked": len(set(db["wallets"]) | set(rec.charged) | set(rec.paid)),
        "payments": db["payments"],
        "paid_total": db["paid_total"],
        "client_payments": sum(len(v) for v in rec.paid.values()),
        "payments_without_one_published_event": db["payments_without_one_published_event"],
    }


def _database_figures(service: Service) -> dict[str, Any]:
    """The counts, payments and wallets (balance, ledger sum, refunds) as the database has them."""
    name = urlparse(service.db_url).path.lstrip("/")
    out: dict[str, Any] = {}
    with connect(service.db_url, name) as conn, conn.cursor() as cur:
        for key, sql in _COUNTS.items():
            cur.execute(sql)
            out[key] = int(cur.fetchone()[0])
        cur.execute(_WITHOUT_ONE_EVENT)
        out["payments_without_one_published_event"] = len(cur.fetchall())
        cur.execute(_REFUNDS_WITHOUT_ONE_EVENT)
        out["refunds_without_one_published_event"] = len(cur.fetchall())
        cur.execute("SELECT id, user_id, amount FROM payments WHERE status = 'REFUNDED'")
        out["refunded"] = {int(p): (int(u), int(a)) for p, u, a in cur.fetchall()}
        cur.execute("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM payments")
        out["payments"], out["paid_total"] = (int(x) for x in cur.fetchone())
        cur.execute(_WALLETS)
        out["wallets"] = {int(u): (int(b), int(s), int(rf)) for u, b, s, rf in cur.fetchall()}
        cur.execute("SELECT user_id, COUNT(*), COALESCE(SUM(amount), 0) FROM payments GROUP BY user_id")
        out["db_paid"] = {int(u): (int(n), int(a)) for u, n, a in cur.fetchall()}
    return out


def wallets_off(
    wallets: dict[int, tuple[int, int, int]], db_paid: dict[int, tuple[int, int]], rec: Record
) -> list[dict[str, Any]]:
    """Users whose balance differs from their ledger sum or from what the client saw (charged - paid +
    refunded, each as the client saw it; a charge or refund whose answer never came may or may not count)."""
    off: list[dict[str, Any]] = []
    unclear_refunds: dict[int, int] = defaultdict(int)
    for user, amount in rec.refund_unknown.values():
        unclear_refunds[user] += amount
    for u in sorted(set(wallets) | set(rec.charged) | set(rec.paid)):
        balance, ledger, refunded = wallets.get(u, (0, 0, 0))
        expected = (
            rec.charged.get(u, 0) - sum(a for _, a in rec.paid.get(u, [])) + sum(a for _, a in rec.refunded.get(u, []))
        )
        unclear = (rec.charge_unknown.get(u, 0), unclear_refunds.get(u, 0))
        allowed = {expected, expected + unclear[0], expected + unclear[1], expected + sum(unclear)}
        if balance != ledger or balance not in allowed:
            off.append(
                {
                    "user": u,
                    "balance": balance,
                    "ledger": ledger,
                    "expected": expected,
                    "db_payments": db_paid.get(u),
                    "db_refunded": refunded,
                }
            )
    return off


def refunds_off(db_refunded: dict[int, tuple[int, int]], rec: Record) -> list[dict[str, Any]]:
    """Payments refunded in the database but not as the client saw it, or the other way round
    (payments whose refund answer never reached the client are left out)."""
    client = {p: (u, a) for u, refunds in rec.refunded.items() for p, a in refunds}
    differ = (set(db_refunded) ^ set(client)) - set(rec.refund_unknown)
    differ |= {p for p in set(db_refunded) & set(client) if db_refunded[p] != client[p]}
    return [{"payment": p, "db": db_refunded.get(p), "client": client.get(p)} for p in sorted(differ)]


def payment_times(service: Service, t0_wall: float) -> list[float]:
    """When each payment committed, in seconds since the load started, in order."""
    name = urlparse(service.db_url).path.lstrip("/")
    with connect(service.db_url, name) as conn, conn.cursor() as cur:
        cur.execute("SELECT created_at FROM payments ORDER BY created_at")
        return [created.replace(tzinfo=dt.UTC).timestamp() - t0_wall for (created,) in cur.fetchall()]


def per_bucket(times: list[float], seconds: float, bucket: int = 10) -> list[int]:
    """Payments committed in each `bucket`-second window of the load (shows the dips around faults)."""
    counts = [0] * (int(seconds // bucket) + 1)
    for at in times:
        counts[min(len(counts) - 1, max(0, int(at // bucket)))] += 1
    return counts


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] in which no payment committed."""
    inside = [start, *(t for t in times if start <= t <= end), end]
    return round(max(b - a for a, b in itertools.pairwise(inside)), 1)


FAULT_WINDOW = 20.0  # seconds after a fault's start in which its effect on payments is measured


def payment_gaps(times: list[float], events: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    """Per fault: the longest time without a committed payment in the FAULT_WINDOW after it; and the
    same figure for the stretches of the run that no fault touched (the baseline)."""
    for e in events:
        e["longest_payment_gap_s"] = longest_gap(times, e["at_s"], min(load_s, e["at_s"] + FAULT_WINDOW))
    quiet, cursor = [], 3.0  # the first seconds are the queue filling up
    for e in sorted(events, key=lambda e: e["at_s"]):
        if e["at_s"] - cursor >= 5:
            quiet.append(longest_gap(times, cursor, e["at_s"]))
        cursor = max(cursor, e["at_s"] + FAULT_WINDOW)
    if load_s - cursor >= 5:
        quiet.append(longest_gap(times, cursor, load_s))
    return {"baseline_longest_gap_s": max(quiet) if quiet else None}


def models_check(service: Service) -> tuple[int, str]:
    """`python -m models check`: (violations, its output)."""
    done = subprocess.run(
        [sys.executable, "-m", "models", "check"], cwd=ROOT, env=service.env(), capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    count = int(lines[-1].split()[0]) if lines and lines[-1].endswith("violation(s)") else -1
    return count, done.stdout + done.stderr
