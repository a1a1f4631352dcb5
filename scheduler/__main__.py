"""`python -m scheduler`: run the scheduler (one leader acts; others stand by and take over)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
from types import FrameType

from apscheduler.schedulers.blocking import BlockingScheduler

from config import heartbeat
from config.bootstrap import bootstrap
from config.cli import require_shared_redis, start
from scheduler import jobs
from scheduler.leader import LeaderLease


def main(argv: list[str] | None = None) -> int:
    """Start the scheduler in the foreground until SIGTERM/SIGINT."""
    argparse.ArgumentParser(
        prog="python -m scheduler",
        description="Run the scheduler in the foreground: admission passes, hold expiry, the job sweeper and the "
        "outbox relay. One process holds the leader lease and acts; others stand by and take over within ~10 s. "
        "Uses DATABASE_URL, REDIS_URL and KAFKA_BOOTSTRAP_SERVERS; stops on SIGTERM/SIGINT.",
    ).parse_args(argv)
    settings = start(quiet=("kafka", "apscheduler"))
    require_shared_redis(settings, what="run a scheduler")
    services = bootstrap(settings)
    lease = LeaderLease(services.redis)
    scheduler = BlockingScheduler(timezone="UTC")
    jobs.install(scheduler, services, lease)
    scheduler.add_job(heartbeat.beat, "interval", seconds=5, id="heartbeat", next_run_time=dt.datetime.now(dt.UTC))

    def stop(signum: int, frame: FrameType | None) -> None:
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("scheduler").info("scheduler %s started (leader lease %s)", lease.identity, lease.key)
    try:
        scheduler.start()
    finally:
        lease.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
