"""Commit → published delay of outbox rows at a steady payment rate: the relay's 1 s tick alone
against the wake-up signal a payment's commit sends (models.outbox.wake), in the same run.

Rows are written the way a payment writes its PaymentCompleted row (models.outbox.add_event in a
transaction), at --rate per second for --seconds, into MariaDB (TEST_DATABASE_URL's server, own
database); the relay is the scheduler's (scheduler/jobs.py: one_at_a_time + the interval tick,
plus start_wake_listener in the wake run) publishing to a Tansu Kafka-protocol broker. The delay
is the row's published_at − created_at.

    .venv/bin/python -m bench.relay_wake_bench [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import create_database, machine, pct

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "relay_wake.json"


class AlwaysLeader:
    """The lease of a lone scheduler."""

    is_leader = True


def run(mode: str, rate: int, seconds: int, interval: float) -> dict[str, Any]:
    """Write rows at `rate`/s with the tick (and the wake listener when mode == 'wake'); delays in ms."""
    from config.bootstrap import current
    from models import outbox
    from models.db import db
    from scheduler.jobs import one_at_a_time, start_wake_listener
    from workers.events import publisher

    services = current()
    db.connect(reuse_if_open=True)
    outbox.OutboxEvent.delete().execute()
    services.redis.delete(outbox.WAKE_KEY)
    relay = one_at_a_time(publisher.relay_outbox)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval):
            with db.connection_context():
                relay()

    threading.Thread(target=tick, daemon=True).start()
    if mode == "wake":
        start_wake_listener(services, AlwaysLeader(), relay)  # type: ignore[arg-type]
    started = time.monotonic()
    for i in range(rate * seconds):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        with db.atomic():
            outbox.add_event(
                aggregate_type="Payment",
                aggregate_id=i + 1,
                event_type="PaymentCompleted",
                topic="payment-completed",
                key=str(i),
                payload={"paymentId": i + 1},
            )
        if mode == "wake":
            outbox.wake(services.redis)
    deadline = time.monotonic() + 30
    while outbox.stats().pending and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    rows = list(outbox.OutboxEvent.select().where(outbox.OutboxEvent.status == outbox.PUBLISHED))
    delays = [(r.published_at - r.created_at).total_seconds() * 1000 for r in rows]
    return {
        "rows": rate * seconds,
        "published": len(rows),
        "p50_ms": round(pct(delays, 0.5), 1),
        "p99_ms": round(pct(delays, 0.99), 1),
        "max_ms": round(max(delays), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    from config.bootstrap import bootstrap
    from config.settings import Settings
    from models import schema
    from workers.localbroker import TansuBroker

    url = os.environ.get("TEST_DATABASE_URL", "mysql://root:@127.0.0.1:3306/test").rsplit("/", 1)[0] + "/bench_relay"
    create_database(url)
    broker = TansuBroker()
    broker.start()
    try:
        settings = Settings().with_(
            database_url=url,
            redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"),
            kafka_bootstrap_servers=broker.bootstrap,
        )
        bootstrap(settings)
        schema.migrate()
        result: dict[str, Any] = {"machine": machine(), "rate": args.rate, "seconds": args.seconds}
        for mode in ("tick", "wake"):
            result[mode] = run(mode, args.rate, args.seconds, settings.outbox_interval)
            print(mode, result[mode])
    finally:
        broker.close()
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
