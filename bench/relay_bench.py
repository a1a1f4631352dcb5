"""Outbox relay drain rate (events/s) to a Kafka-protocol broker: the old relay beside the new one.

    .venv/bin/python -m bench.relay_bench --events 20000

Same run, same database and broker (Tansu, started here), `--events` PENDING PaymentCompleted
rows each time:
1. before: the relay as it was until 2026-12-02: one pass of at most 200 rows per scheduler tick
   (OUTBOX_INTERVAL 1 s), timed over `--before-seconds` ticks;
2. after: `workers.events.publisher.relay_outbox` (a pass publishes batch after batch until
   drained) with OUTBOX_RELAYS = 1 and = 4 (shards by aggregate id), timed until every row is
   PUBLISHED.

Environment: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_relay, created if
missing), BENCH_REDIS_URL (default redis://127.0.0.1:6379/12). Writes bench/results/relay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from bench.common import create_database, write
from config.bootstrap import bootstrap
from config.settings import Settings
from models import outbox, schema
from models.db import db, utcnow
from tests.support.kafka_broker import tansu
from workers.events import publisher


def fill(events: int) -> None:
    """Empty the outbox, then insert `events` PENDING rows (one reservation each) in bulk."""
    outbox.OutboxEvent.delete().execute()
    now = utcnow()
    rows = [
        {
            "aggregate_type": "reservation",
            "aggregate_id": i,
            "event_type": "PaymentCompleted",
            "topic": outbox.PAYMENT_TOPIC,
            "message_key": str(i),
            "event_id": f"bench-{time.time_ns()}-{i}",
            "payload": json.dumps({"eventId": f"bench-{i}", "userId": i, "concertId": 1, "reservationId": i}),
            "status": outbox.PENDING,
            "created_at": now,
        }
        for i in range(1, events + 1)
    ]
    with db.atomic():
        for start in range(0, len(rows), 1000):
            outbox.OutboxEvent.insert_many(rows[start : start + 1000]).execute()


def published() -> int:
    return int(outbox.OutboxEvent.select().where(outbox.OutboxEvent.status == outbox.PUBLISHED).count())


def before(seconds: float) -> dict[str, Any]:
    """One pass of 200 rows per 1 s tick, as the scheduler ran the relay before."""
    pub = publisher.publisher(publisher.current())
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        outbox.relay_once(publish=pub, batch=200, transient=publisher.is_transient)
        ticks += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    elapsed = time.monotonic() - started
    done = published()
    return {"published": done, "seconds": round(elapsed, 2), "events_per_s": round(done / elapsed, 1), "ticks": ticks}


def after(events: int) -> dict[str, Any]:
    """relay_outbox passes until every row is PUBLISHED."""
    started = time.monotonic()
    passes = 0
    while published() < events:
        publisher.relay_outbox()
        passes += 1
        if time.monotonic() - started > 300:
            raise SystemExit("the relay did not drain the outbox within 300 s")
    elapsed = time.monotonic() - started
    return {
        "published": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed, 1),
        "passes": passes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--before-seconds", type=float, default=5.0)
    args = parser.parse_args()
    database_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_relay")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    create_database(database_url)
    results: dict[str, Any] = {"events": args.events}
    with tansu() as broker:
        for name, relays in (("before", 1), ("after_1_relay", 1), ("after_4_relays", 4)):
            settings = Settings().with_(
                database_url=database_url,
                redis_url=redis_url,
                kafka_bootstrap_servers=broker.bootstrap,
                outbox_relays=relays,
            )
            bootstrap(settings, force=True)
            publisher._publisher = None  # a producer for this broker
            with db.connection_context():
                schema.migrate()
                fill(args.events)
                results[name] = before(args.before_seconds) if name == "before" else after(args.events)
            print(name, results[name], flush=True)
    results["ratio_after_4_vs_before"] = round(
        results["after_4_relays"]["events_per_s"] / results["before"]["events_per_s"], 1
    )
    print(write("relay", results))


if __name__ == "__main__":
    main()
