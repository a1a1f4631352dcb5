"""The outbox relay wakes on a payment's commit (models.outbox.wake) instead of waiting for its tick."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from flask import Flask

from config import bootstrap
from models import outbox
from scheduler.jobs import one_at_a_time, start_wake_listener


@dataclass
class Lease:
    is_leader: bool = True


def test_a_wake_signal_runs_the_relay_within_a_second_and_a_running_relay_skips_the_tick(live_app: Flask) -> None:
    services = bootstrap.current()  # the relay runs with the database connection opened around it
    client = services.redis
    client.delete(outbox.WAKE_KEY)
    ran = threading.Event()
    runs: list[float] = []

    def relay() -> None:
        runs.append(time.monotonic())
        ran.set()
        time.sleep(0.3)

    guarded = one_at_a_time(relay)
    start_wake_listener(services, Lease(), guarded)  # type: ignore[arg-type]
    time.sleep(0.2)

    # When a commit signals (three times: the list keeps one item)
    signalled = time.monotonic()
    for _ in range(3):
        outbox.wake(client)
    assert client.llen(outbox.WAKE_KEY) <= 1

    # Then the relay runs well before the 1 s tick would, and a tick during the pass is skipped
    assert ran.wait(5), "the relay did not run after a wake-up"
    assert runs[0] - signalled < 0.5
    guarded()  # a tick while the woken pass runs: skipped, not queued behind it
    assert len(runs) == 1
