"""scheduler/ on the unit tier: the leader lease, leader-only jobs, and the job table."""

from __future__ import annotations

import fakeredis
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from config.bootstrap import current
from scheduler import jobs
from scheduler.leader import LeaderLease
from tests.support.helpers import wait_for


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def lease(server: fakeredis.FakeServer, ttl: float = 10.0) -> LeaderLease:
    return LeaderLease(fakeredis.FakeRedis(server=server), ttl=ttl)


def test_exactly_one_scheduler_leads_and_a_released_lease_passes_to_the_standby_at_once(server) -> None:  # type: ignore[no-untyped-def]
    first, second = lease(server), lease(server)
    assert first.tick() is True and first.is_leader
    assert second.tick() is False and not second.is_leader
    assert first.tick() is True  # renewed, still the leader

    first.release()
    assert not first.is_leader
    assert second.tick() is True


def test_a_leader_that_stops_ticking_is_replaced_after_the_ttl_and_not_before(server) -> None:  # type: ignore[no-untyped-def]
    first, second = lease(server, ttl=0.3), lease(server, ttl=0.3)
    assert first.tick()
    assert not second.tick()
    assert wait_for(second.tick, 10) is not None  # once the 0.3 s lapsed
    assert first.tick() is False  # the old leader learns it lost on its next tick


def test_a_scheduler_that_cannot_reach_redis_stands_down(server) -> None:  # type: ignore[no-untyped-def]
    only = lease(server)
    assert only.tick()
    server.connected = False
    assert only.tick() is False and not only.is_leader


def test_leader_only_jobs_run_on_the_leader_and_a_failing_tick_does_not_raise(app: Flask, server) -> None:  # type: ignore[no-untyped-def]
    leader, standby = lease(server), lease(server)
    leader.tick()
    standby.tick()
    runs: list[str] = []

    def job() -> None:
        runs.append("ran")
        raise RuntimeError("a bad tick")

    jobs.leader_only(standby, job)()
    assert runs == []
    jobs.leader_only(leader, job)()  # logged, not raised: the next tick runs again
    assert runs == ["ran"]


def test_install_schedules_every_job_once(app: Flask) -> None:
    scheduler = BackgroundScheduler(timezone="UTC")
    jobs.install(scheduler, current(), LeaderLease(current().redis))
    ids = sorted(job.id for job in scheduler.get_jobs())
    assert ids == sorted(["leader-lease", "admit", "expire-holds", "sweep-jobs", "outbox-relay", "draws"])


def test_a_stop_signal_that_lands_while_the_main_thread_hands_a_job_to_the_pool_still_stops_it() -> None:
    """SIGTERM's handler runs in the main thread wherever it is, e.g. inside the executor's `submit`,
    which holds the pool's non-reentrant shutdown lock. A shutdown run inside the handler then
    waits on its own thread's lock and the scheduler never exits (the old handler did exactly that)."""
    import threading
    import time

    from apscheduler.schedulers.blocking import BlockingScheduler

    from scheduler.__main__ import Stopper

    scheduler = BlockingScheduler(timezone="UTC")
    scheduler.add_job(lambda: None, "interval", seconds=60, id="noop")
    runner = threading.Thread(target=scheduler.start, daemon=True)  # stands in for the main thread
    runner.start()
    assert wait_for(lambda: scheduler.running, 5)
    pool = scheduler._lookup_executor("default")._pool  # concurrent.futures.ThreadPoolExecutor
    stop = Stopper(scheduler)

    def signal_inside_submit() -> None:  # the moment the signal lands: this thread holds the lock
        with pool._shutdown_lock:
            stop(15, None)

    signalled = threading.Thread(target=signal_inside_submit, daemon=True)
    signalled.start()
    signalled.join(5)
    assert not signalled.is_alive(), "the signal handler hung on the lock its own thread holds"
    started = time.monotonic()
    stop.join()
    runner.join(5)
    assert not runner.is_alive() and not scheduler.running
    assert time.monotonic() - started < 5
