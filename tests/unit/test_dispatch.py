"""workers/dispatch.py: the one actor registry, transient retries, and a job never left unanswered."""

from __future__ import annotations

from typing import Any

import peewee as pw
import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from flask import Flask

import workers.payments
import workers.refunds
import workers.reservations
from config.bootstrap import current
from workers import dispatch
from workers.broker import Actor
from workers.dispatch import ACTORS, actor_of, handle
from workers.jobs import FAILED, QUEUED, SUCCEEDED, JobStore


def message(actor_name: str, **kwargs: Any) -> MessageProxy:
    return MessageProxy(Message(queue_name="seats.p0", actor_name=actor_name, args=(), kwargs=kwargs, options={}))


@pytest.fixture
def store(app: Flask, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    monkeypatch.setattr(dispatch, "BACKOFF", (0.0, 0.0))  # the retry policy, without its pauses
    return JobStore(current().redis)


def test_every_declared_actor_is_in_the_registry_under_its_own_name() -> None:
    declared = [
        value
        for module in (workers.reservations, workers.payments, workers.refunds)
        for value in vars(module).values()
        if isinstance(value, Actor)
    ]
    assert {a.name for a in declared} == {
        "hold_seat",
        "hold_seats",
        "cancel_reservation",
        "extend_hold",
        "expire_hold",
        "pay",
        "refund_payment",
    }
    for a in declared:
        assert ACTORS[a.name] is a
        assert actor_of(message(a.name)) is a


def test_a_message_for_an_unknown_actor_is_dropped_and_its_job_left_alone(store: JobStore) -> None:
    job = store.create(job_type="RESERVATION", user_id=1)
    handle(message("no_such_actor", job_id=job.job_id))
    assert store.get(job.job_id).status == QUEUED  # type: ignore[union-attr]


def test_a_transient_failure_is_retried_until_the_actor_succeeds(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = store.create(job_type="RESERVATION", user_id=1)
    calls: list[int] = []

    def flaky(*, job_id: str) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise pw.OperationalError("server has gone away")
        store.succeed(job_id, {"ok": True})

    monkeypatch.setitem(ACTORS, "flaky", Actor("flaky", flaky))
    handle(message("flaky", job_id=job.job_id))
    assert len(calls) == 3
    assert store.get(job.job_id).status == SUCCEEDED  # type: ignore[union-attr]


def test_after_the_last_retry_the_job_fails_as_unavailable_instead_of_staying_queued(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = store.create(job_type="RESERVATION", user_id=1)
    calls: list[int] = []

    def down(*, job_id: str) -> None:
        calls.append(1)
        raise pw.OperationalError("server has gone away")

    monkeypatch.setitem(ACTORS, "down", Actor("down", down))
    handle(message("down", job_id=job.job_id))
    assert len(calls) == len(dispatch.BACKOFF) + 1
    failed = store.get(job.job_id)
    assert failed is not None and failed.status == FAILED and failed.error["code"] == "UNAVAILABLE"  # type: ignore[index]


def test_an_unexpected_error_fails_the_job_at_once_without_retrying(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = store.create(job_type="RESERVATION", user_id=1)
    calls: list[int] = []

    def broken(*, job_id: str) -> None:
        calls.append(1)
        raise KeyError("bug")

    monkeypatch.setitem(ACTORS, "broken", Actor("broken", broken))
    handle(message("broken", job_id=job.job_id))
    assert calls == [1]
    assert store.get(job.job_id).status == FAILED  # type: ignore[union-attr]
