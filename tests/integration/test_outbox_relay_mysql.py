"""The outbox relay on MariaDB: a slow publish must not block new payments' outbox rows."""

from __future__ import annotations

import threading

import pytest
from flask import Flask

from models import outbox
from models.db import db

pytestmark = pytest.mark.integration


def _add(aggregate_id: int) -> None:
    with db.connection_context(), db.atomic():
        outbox.add_event(
            aggregate_type="payment",
            aggregate_id=aggregate_id,
            event_type=outbox.PAYMENT_COMPLETED,
            topic=outbox.PAYMENT_TOPIC,
            key=str(aggregate_id),
            payload={"paymentId": aggregate_id},
        )


def test_a_new_outbox_row_is_written_while_the_relay_is_still_publishing(live_app: Flask) -> None:
    """Found by the chaos run (bench/chaos/): with the broker hung, every payment waited for the relay's gap locks."""
    for i in range(1, 4):
        _add(i)
    publishing, release = threading.Event(), threading.Event()

    def slow_publish(rows: list[outbox.OutboxEvent]) -> list[Exception | None]:
        publishing.set()
        release.wait(15)  # a broker that does not answer
        return [None] * len(rows)

    results: list[outbox.RelayResult] = []

    def relay() -> None:
        with db.connection_context():
            results.append(outbox.relay_once(publish=slow_publish))

    relayer = threading.Thread(target=relay)
    relayer.start()
    inserter = threading.Thread(target=_add, args=(4,))
    try:
        assert publishing.wait(10)
        # a payment commits its outbox row while the relay is still publishing rows 1-3
        inserter.start()
        inserter.join(10)
        committed_while_publishing = not inserter.is_alive() and not release.is_set()
    finally:
        release.set()
        relayer.join(20)
        inserter.join(20)

    assert committed_while_publishing, "the insert waited for the relay's publish (its locks)"
    assert results and results[0].published == 3
    with db.connection_context():
        statuses = {e.aggregate_id: e.status for e in outbox.OutboxEvent.select()}
    assert statuses == {1: outbox.PUBLISHED, 2: outbox.PUBLISHED, 3: outbox.PUBLISHED, 4: outbox.PENDING}
