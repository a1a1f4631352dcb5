"""The scheduler's jobs: each decides only *when*; the body is one call into models/."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

from apscheduler.schedulers.base import BaseScheduler

from config.bootstrap import Services
from config.settings import EMBEDDED
from models import admission, concerts, draws, outbox
from models.db import db
from models.prequeue import PreQueue
from models.queue_controls import QueueControls
from scheduler.leader import LeaderLease
from workers import jobs as job_records
from workers import reservations as reservation_jobs
from workers.events import publisher

log = logging.getLogger("scheduler")


def leader_only(lease: LeaderLease, job: Callable[[], object]) -> Callable[[], None]:
    """Run `job` only while this process holds the lease; open/close the DB connection around it."""

    def run() -> None:
        if not lease.is_leader:
            return
        try:
            with db.connection_context():
                job()
        except Exception:  # a failed tick is logged and retried on the next tick
            log.exception("scheduler job %s failed", getattr(job, "__name__", job))

    return run


def install(scheduler: BaseScheduler, services: Services, lease: LeaderLease) -> None:
    """Add every job to an APScheduler instance."""
    s = services.settings
    admit = admission_pass(services)
    scheduler.add_job(
        lease.tick, "interval", seconds=2, id="leader-lease", max_instances=1, coalesce=True, next_run_time=_now()
    )
    scheduler.add_job(
        leader_only(lease, admit), "interval", seconds=s.admit_interval, id="admit", max_instances=1, coalesce=True
    )
    every(scheduler, lease, reservation_jobs.enqueue_expiries, seconds=1.0, job_id="expire-holds")
    every(scheduler, lease, job_records.sweep_jobs, seconds=10.0, job_id="sweep-jobs")
    relay = one_at_a_time(publisher.relay_outbox)
    every(scheduler, lease, relay, seconds=s.outbox_interval, job_id="outbox-relay")
    if s.redis_url != EMBEDDED:  # fakeredis cannot block: embedded mode keeps the tick alone
        start_wake_listener(services, lease, relay)
    prequeue = PreQueue(services.redis, waiting_ttl=s.waiting_ttl)
    every(scheduler, lease, functools.partial(draws.run_due_draws, prequeue=prequeue), seconds=1.0, job_id="draws")


def admission_pass(services: Services) -> Callable[[], None]:
    """The admit job: one pass over every concert with waiters, under the operator controls and
    (ADMIT_MODE=stock) sized to the unsold stock; one log line when anyone moved."""
    s = services.settings
    room = services.waiting_room()

    controls = QueueControls(services.redis)

    stocks: dict[int, admission.Stock] = {}  # this pass's stock per concert (stock mode reads it once)

    def sold_out(concert_id: int) -> bool:
        if s.admit_mode != admission.STOCK:
            return concerts.is_sold_out(concert_id=concert_id)
        admitted = room.admitted_total(concert_id=concert_id)
        stocks[concert_id] = admission.stock_of(concert_id=concert_id, admitted=admitted)
        return stocks[concert_id].sold_out

    def operator(concert_id: int) -> tuple[int, int | None]:
        """The operator's limit and per-pass cap, read fresh every pass (a PATCH acts within one pass),
        sized to the stock under ADMIT_MODE=stock."""
        c = controls.get(concert_id=concert_id)
        limit = admission.pass_limit(
            mode=s.admit_mode, limit=c.limit(s.active_limit), stock=stocks.get(concert_id), factor=s.admit_factor
        )
        return limit, c.per_pass(s.admit_interval)

    def admit() -> None:
        stocks.clear()
        passes = room.admit_all(is_sold_out=sold_out, controls=operator)
        moved = [a for a in passes if a.admitted or a.dropped]
        if moved:  # one line per pass, and none while nothing moves (an idle service stays quiet)
            log.info(
                "admission: %s",
                "; ".join(
                    f"concert {a.concert_id} admitted {a.admitted}, dropped {a.dropped}, "
                    f"waiting {a.waiting}, active {a.active}"
                    for a in moved
                ),
            )

    return admit


def one_at_a_time(job: Callable[[], object]) -> Callable[[], None]:
    """`job` behind a lock: a tick that finds it running is skipped; a wake-up waits for the lock."""
    lock = threading.Lock()

    def run(wait: bool = False) -> None:
        if lock.acquire(blocking=wait):
            try:
                job()
            finally:
                lock.release()

    run.__name__ = getattr(job, "__name__", "job")
    return run


def start_wake_listener(services: Services, lease: LeaderLease, relay: Callable[..., None]) -> threading.Thread:
    """Run the outbox relay as soon as a payment's commit signals it (models.outbox.wake).

    The scheduler decides *when*: a BLPOP on the wake key (1 s timeout) on a daemon thread; the
    relay's tick stays the fallback for a lost signal. Rows committed while a pass runs signal
    again, so the next pass starts as soon as this one ends.
    """

    def listen() -> None:
        client = services.redis
        while True:
            try:
                woken = client.blpop([outbox.WAKE_KEY], timeout=1)
            except Exception:  # Redis down: the tick relays when it is back
                time.sleep(1)
                continue
            if woken and lease.is_leader:
                leader_only(lease, lambda: relay(wait=True))()

    thread = threading.Thread(target=listen, name="outbox-wake", daemon=True)
    thread.start()
    return thread


def every(
    scheduler: BaseScheduler, lease: LeaderLease, job: Callable[[], object], *, seconds: float, job_id: str
) -> None:
    """Run `job` every `seconds` on the leader (never two runs of one job at once)."""
    scheduler.add_job(leader_only(lease, job), "interval", seconds=seconds, id=job_id, max_instances=1, coalesce=True)


def _now():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.now(dt.UTC)
