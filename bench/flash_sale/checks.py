"""After the sale: wait for the pipeline to settle, then the invariants and the server's own counters."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from typing import Any
from urllib.parse import urlparse

import redis

from bench.common import connect
from bench.flash_sale import ROOT


def settle(db_url: str, client: redis.Redis, timeout: float) -> dict[str, Any]:
    """Wait until every outbox row is PUBLISHED, every event consumed and no job is open; return the counts."""
    name = urlparse(db_url).path.lstrip("/")
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    with connect(db_url, name) as conn, conn.cursor() as cur:
        while True:
            cur.execute("SELECT COUNT(*) FROM payments")
            payments = int(cur.fetchone()[0])  # type: ignore[index]
            cur.execute("SELECT COUNT(*) FROM outbox_events WHERE status <> 'PUBLISHED'")
            unpublished = int(cur.fetchone()[0])  # type: ignore[index]
            consumed = int(client.hget("stats:consumer", "consumed_total") or 0)
            done_keys = sum(1 for _ in client.scan_iter("events:done:*", count=1000))
            open_jobs = int(client.zcard("jobs:open"))
            settled = unpublished == 0 and consumed >= payments and done_keys >= payments and open_jobs == 0
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        facts: dict[str, Any] = {
            "payments": payments,
            "outbox_unpublished": unpublished,
            "events_consumed": consumed,
            "events_handled": done_keys,
            "dead_lettered": int(client.hget("stats:consumer", "dead_lettered_total") or 0),
            "open_jobs": open_jobs,
            "settle_seconds": round(time.monotonic() - started, 1),
        }
        cur.execute(
            "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations WHERE status IN ('HELD','CONFIRMED') "
            "GROUP BY seat_id HAVING COUNT(*) > 1) x"
        )
        facts["oversold"] = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute(
            "SELECT COUNT(*) FROM (SELECT r.seat_id FROM payments p JOIN reservations r ON r.id = p.reservation_id "
            "GROUP BY r.seat_id HAVING COUNT(*) > 1) x"
        )
        facts["double_payments"] = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute("SELECT status, COUNT(*) FROM seats GROUP BY status")
        facts["seats_by_status"] = {str(k): int(v) for k, v in cur.fetchall()}
        cur.execute("SELECT status, COUNT(*) FROM reservations GROUP BY status")
        facts["reservations_by_status"] = {str(k): int(v) for k, v in cur.fetchall()}
        cur.execute(
            "SELECT p.user_id, s.concert_id FROM payments p JOIN concert_schedules s ON s.id = ("
            "SELECT r.schedule_id FROM reservations r WHERE r.id = p.reservation_id)"
        )
        payers = cur.fetchall()
        facts["payer_tokens_left"] = sum(int(client.exists(f"wr:{{c:{concert}}}:u:{user}")) for user, concert in payers)
        cur.execute("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'PaymentCompleted'")
        facts["payment_events"] = int(cur.fetchone()[0])  # type: ignore[index]
    return facts


def invariant_check(env: dict[str, str]) -> tuple[bool, list[str]]:
    """`python -m models check` against the benchmark database: (exit code 0, violation lines)."""
    done = subprocess.run(
        [sys.executable, "-m", "models", "check"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("invariant")]
    return done.returncode == 0, lines


def service_problems(facts: dict[str, Any], server_5xx: int) -> list[str]:
    """What the run saw beyond `models check`: oversell, double payment, events not published/consumed, stuck jobs."""
    found = []
    if facts["oversold"]:
        found.append(f"{facts['oversold']} seat(s) with more than one live reservation")
    if facts["double_payments"]:
        found.append(f"{facts['double_payments']} seat(s) paid more than once")
    if facts["outbox_unpublished"]:
        found.append(f"{facts['outbox_unpublished']} outbox row(s) not PUBLISHED")
    if facts["payment_events"] != facts["payments"]:
        found.append(f"{facts['payment_events']} PaymentCompleted row(s) for {facts['payments']} payment(s)")
    if facts["events_handled"] != facts["payments"]:
        found.append(f"{facts['events_handled']} event(s) handled by the consumer for {facts['payments']} payment(s)")
    if facts["dead_lettered"]:
        found.append(f"{facts['dead_lettered']} event(s) dead-lettered")
    if facts["payer_tokens_left"]:
        found.append(f"{facts['payer_tokens_left']} payer(s) still hold a queue token after the event")
    if facts["open_jobs"]:
        found.append(f"{facts['open_jobs']} job(s) still QUEUED/RUNNING")
    if server_5xx < 0:
        found.append("the web process's /metrics could not be read (5xx count unknown)")
    elif server_5xx:
        found.append(f"the web process answered {server_5xx} 5xx response(s)")
    return found


def server_metrics(port: int) -> tuple[int, dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    """From the web process's /metrics: 5xx answers counted (-1 if unreadable), seat-map cache events,
    and each route's latency histogram inside the app (`http_request_duration_seconds`, from the WSGI
    callable's start to its answer: no accept, no gunicorn queue, no network) as
    "METHOD path" -> {bucket upper bound "le": cumulative count}, and the waiting polls answered
    by source (`queue_poll_answers_total`: memo, memo_early, redis)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=10) as resp:
            lines = resp.read().decode().splitlines()
    except Exception:
        return -1, {}, {}, {}
    total = 0.0
    cache: dict[str, float] = {}
    latency: dict[str, dict[str, float]] = {}
    polls: dict[str, float] = {}
    prefix = 'cache_events_total{cache="seats",event="'
    for line in lines:
        if line.startswith("http_requests_total{") and re.search(r'status="5\d\d"', line):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith('queue_poll_answers_total{source="'):
            polls[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(prefix):
            cache[line[len(prefix) :].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("http_request_duration_seconds_bucket{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            route = f"{labels.get('method')} {labels.get('endpoint')}"
            latency.setdefault(route, {})[labels["le"]] = float(line.rsplit(" ", 1)[1])
    return int(total), cache, latency, polls


def in_app_p50_ms(buckets: dict[str, float]) -> float | None:
    """The upper bound (ms) of the histogram bucket that holds the median request (None: no request)."""
    ordered = sorted(((float(le), n) for le, n in buckets.items()), key=lambda x: x[0])
    if not ordered or ordered[-1][1] <= 0:
        return None
    half = ordered[-1][1] / 2
    return next(round(le * 1000, 1) for le, n in ordered if n >= half)
