"""workers/jobs.py on fakeredis (Lua included): the job record's life, the sweep, and the actor adapter."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest

from models.errors import IdempotencyKeyReused, SeatNotAvailable
from workers.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore, run_job


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(decode_responses=True))


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_job_goes_queued_running_succeeded_and_a_terminal_job_never_changes_again(store: JobStore) -> None:
    job = store.create(job_type="RESERVATION", user_id=7)
    assert store.get(job.job_id).status == QUEUED  # type: ignore[union-attr]
    assert store.start(job.job_id) == QUEUED
    assert store.start(job.job_id) == RUNNING  # a redelivery sees the earlier attempt
    assert store.succeed(job.job_id, {"reservationId": 1}) is True

    assert store.fail(job.job_id, {"code": "UNAVAILABLE"}) is False
    done = store.get(job.job_id)
    assert done is not None and done.status == SUCCEEDED and done.result == {"reservationId": 1}
    assert done.attempts == 2 and done.user_id == 7
    assert store.start("unknown") == "MISSING"


def test_fail_if_queued_fails_only_a_job_nobody_started(store: JobStore) -> None:
    queued, running = store.create(job_type="R", user_id=1), store.create(job_type="R", user_id=1)
    store.start(running.job_id)
    pipe = store.r.pipeline(transaction=False)
    for job in (queued, running):
        store.fail_if_queued(job.job_id, {"code": "SEAT_NOT_AVAILABLE"}, pipe=pipe)
    assert [int(x) for x in pipe.execute()] == [1, 0]
    assert store.get(queued.job_id).status == FAILED  # type: ignore[union-attr]
    assert store.get(running.job_id).status == RUNNING  # type: ignore[union-attr]


def test_wait_returns_as_soon_as_the_job_ends(store: JobStore) -> None:
    job = store.create(job_type="R", user_id=1)
    threading.Timer(0.2, store.succeed, args=(job.job_id, {"ok": True})).start()
    started = time.monotonic()
    done = store.wait(job.job_id, 5, fresh=True)
    assert done is not None and done.status == SUCCEEDED
    assert time.monotonic() - started < 4


def test_the_sweep_fails_only_jobs_open_longer_than_the_cutoff(store: JobStore) -> None:
    old, new = store.create(job_type="R", user_id=1), store.create(job_type="R", user_id=1)
    store.r.zadd("jobs:open", {old.job_id: now_ms() - 120_000})
    assert store.sweep(older_than_s=60) == [old.job_id]
    lost = store.get(old.job_id)
    assert lost is not None and lost.status == FAILED and lost.error["code"] == "UNAVAILABLE"  # type: ignore[index]
    assert store.get(new.job_id).status == QUEUED  # type: ignore[union-attr]


def test_an_idempotency_key_answers_with_its_first_job_and_refuses_another_body(store: JobStore) -> None:
    first = store.create(job_type="PAYMENT", user_id=1)
    assert store.claim_idempotency_key(user_id=1, key="k", request={"r": 1}, job=first) == first
    again = store.create(job_type="PAYMENT", user_id=1)
    assert store.claim_idempotency_key(user_id=1, key="k", request={"r": 1}, job=again).job_id == first.job_id
    assert store.get(again.job_id) is None  # the duplicate's record is discarded
    with pytest.raises(IdempotencyKeyReused):
        store.claim_idempotency_key(user_id=1, key="k", request={"r": 2}, job=store.create(job_type="P", user_id=1))


def test_a_key_whose_first_job_record_expired_is_bound_to_the_new_job(store: JobStore) -> None:
    """web/payments.py has already looked for the payment that key made: none, so the first job
    changed nothing and the new one runs (before: 422 "job expired" for the rest of the 24 h)."""
    first = store.create(job_type="PAYMENT", user_id=1)
    store.claim_idempotency_key(user_id=1, key="k", request={"r": 1}, job=first)
    store.discard(first.job_id)  # its record expired
    assert store.idempotent_job(user_id=1, key="k", request={"r": 1}) is None

    again = store.create(job_type="PAYMENT", user_id=1)
    assert store.claim_idempotency_key(user_id=1, key="k", request={"r": 1}, job=again) == again
    assert store.idempotent_job(user_id=1, key="k", request={"r": 1}) == again
    with pytest.raises(IdempotencyKeyReused):
        store.idempotent_job(user_id=1, key="k", request={"r": 2})


def test_run_job_records_results_and_domain_errors_and_drops_stale_messages(store: JobStore) -> None:
    ok, taken, stale = (store.create(job_type="R", user_id=1) for _ in range(3))
    seen: list[bool] = []

    def work(redelivered: bool) -> dict[str, int]:
        seen.append(redelivered)
        return {"id": 1}

    def refuse(redelivered: bool) -> None:
        raise SeatNotAvailable("seat 3 is held")

    run_job(store, ok.job_id, enqueued_ms=now_ms(), stale_after_s=30, work=work)
    run_job(store, taken.job_id, enqueued_ms=now_ms(), stale_after_s=30, work=refuse)
    run_job(store, stale.job_id, enqueued_ms=now_ms() - 60_000, stale_after_s=30, work=work)
    run_job(store, ok.job_id, enqueued_ms=now_ms(), stale_after_s=30, work=work)  # redelivered after success

    assert seen == [False]  # ran once; the stale and the finished job never ran
    assert store.get(ok.job_id).result == {"id": 1}  # type: ignore[union-attr]
    assert store.get(taken.job_id).error["code"] == "SEAT_NOT_AVAILABLE"  # type: ignore[index, union-attr]
    dropped = store.get(stale.job_id)
    assert dropped is not None and dropped.error["code"] == "UNAVAILABLE"  # type: ignore[index]
    assert "waited more than 30 s" in dropped.error["detail"]  # type: ignore[index]


def test_the_creator_and_a_second_waiter_get_the_outcome_in_one_round_trip_each(store: JobStore) -> None:
    """The end of a job carries its final record: a waiter blocked on it reads nothing more.

    Hidden ways it fails: the waiter reads the record after the wake-up (a second round trip),
    pops the element so a second waiter of the same job (same Idempotency-Key) blocks until its
    timeout, or gets a record without the result."""
    job = store.create(job_type="R", user_id=1)
    trips: list[str] = []
    original = store.r.connection_pool.get_connection

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        trips.append(threading.current_thread().name)
        return original(*args, **kwargs)

    threading.Timer(0.2, store.succeed, args=(job.job_id, {"reservationId": 9})).start()
    store.r.connection_pool.get_connection = counting  # type: ignore[method-assign]
    done = store.wait(job.job_id, 5, fresh=True)
    mine = [t for t in trips if t == threading.current_thread().name]
    assert done is not None and done.status == SUCCEEDED and done.result == {"reservationId": 9}
    assert done.finished_ms is not None and done.user_id == 1
    assert len(mine) == 1

    started = time.monotonic()
    again = store._wait_done(job.job_id, 3)  # another waiter of the same job, after the first
    assert again is not None and again.result == {"reservationId": 9}
    assert time.monotonic() - started < 1
