"""`python -m scheduler`: run the scheduler (one leader acts; others stand by and take over)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
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

    stop = Stopper(scheduler)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("scheduler").info("scheduler %s started (leader lease %s)", lease.identity, lease.key)
    try:
        scheduler.start()
    finally:
        stop.join()  # every running job has ended: only now may a standby act
        lease.release()
    return 0


class Stopper:
    """The SIGTERM/SIGINT handler: shut the scheduler down on a thread of its own, never in the handler.

    A signal handler runs in the main thread between two bytecodes, wherever that thread is. The
    BlockingScheduler's main thread hands jobs to a ThreadPoolExecutor, whose `submit` holds the
    executor's (non-reentrant) shutdown lock; a `scheduler.shutdown(wait=True)` run inside the
    handler at that moment waits for the very lock its own thread holds, and the process never
    exits. On a thread of its own the shutdown simply waits until `submit` returns.
    """

    def __init__(self, scheduler: BlockingScheduler) -> None:
        self.scheduler = scheduler
        self.thread: threading.Thread | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.thread is None:  # a second signal changes nothing: the shutdown is under way
            self.thread = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, name="shutdown")
            self.thread.start()

    def join(self) -> None:
        """Wait until the shutdown (and every job it waits for) has ended, if one was asked for."""
        if self.thread is not None:
            self.thread.join()


if __name__ == "__main__":
    sys.exit(main())
