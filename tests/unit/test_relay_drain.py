"""The outbox relay drains a backlog in one scheduler tick, and N relay shards split it without overlap."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from config.settings import Settings
from models import outbox
from models.db import db
from tests.support.helpers import make_app
from workers.events import publisher

BACKLOG = 1_234  # more than two DRAIN_BATCHes: the old relay took 7 ticks (200 rows each)


def backlog(n: int) -> None:
    for i in range(1, n + 1):
        outbox.add_event(
            aggregate_type="reservation",
            aggregate_id=i,
            event_type="PaymentCompleted",
            topic=outbox.PAYMENT_TOPIC,
            key=str(i),
            payload={"eventId": f"e{i}", "userId": i, "concertId": 1},
        )


@pytest.mark.parametrize("relays", [1, 3])
def test_one_relay_pass_publishes_the_whole_backlog_each_row_once(
    unit_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relays: int
) -> None:
    make_app(unit_settings.with_(outbox_relays=relays))
    sent: Counter[int] = Counter()

    def publish(rows: list[outbox.OutboxEvent]) -> list[Exception | None]:
        sent.update(int(r.aggregate_id) for r in rows)
        return [None] * len(rows)

    monkeypatch.setattr(publisher, "publisher", lambda services: publish)
    with db.connection_context():
        backlog(BACKLOG)

    assert publisher.relay_outbox() == BACKLOG

    assert sorted(sent) == list(range(1, BACKLOG + 1)) and set(sent.values()) == {1}
    with db.connection_context():
        assert outbox.stats().pending == 0


def test_shards_split_rows_by_aggregate_id_so_one_reservations_events_stay_with_one_relay(app: object) -> None:
    with db.connection_context():
        backlog(30)
        taken = [
            {
                int(r.aggregate_id)
                for r in outbox.OutboxEvent.select().where(outbox.OutboxEvent.status == outbox.PENDING)
            }
        ]
        shards = []
        for k in range(3):
            result = outbox.relay_once(publish=lambda rows: [None] * len(rows), batch=100, shard=(k, 3))
            shards.append(result.published)
    assert shards == [10, 10, 10] and taken[0] == set(range(1, 31))
