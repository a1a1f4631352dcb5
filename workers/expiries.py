"""Group commit for expiries: a partition's run of `expire_hold` messages expires in one transaction.

When holds lapse they lapse together (a wave of fans admitted at once who never pay), and the
scheduler sends one `expire_hold` per reservation to its seat's partition. One by one, each cost
a DB checkout, five statements and a commit, then a seat read and a Redis round trip for the
write-through. `ExpiryRuns` sits in front of the partition's batch (workers/batch.py): every run
of two or more consecutive expiries in a batch is expired by `models.reservations.expire_holds`
(one transaction, each row still compare-and-set) and written through in one round trip; the
other messages go to the batch in their places, so the queue order of a partition is kept (an
expiry and a hold of the same seat are decided in the order they were sent).

If the group cannot run (a database error, a deadlock victim), each of its messages takes the
serial path (`workers.dispatch.handle`, with its retries): an expiry is a compare-and-set, so
running it again after a rollback is safe. The batch is acknowledged after all of it ran, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from dramatiq.broker import MessageProxy

from models import reservations
from models.db import db
from workers.cache import write_through_many

log = logging.getLogger("workers.expiries")

ACTOR = "expire_hold"


class ExpiryRuns:
    """Call `batch` for a partition's messages, expiring runs of consecutive expiries as a group."""

    def __init__(
        self, batch: Callable[[Sequence[MessageProxy]], None], handler: Callable[[MessageProxy], None]
    ) -> None:
        self.batch = batch
        self.handler = handler  # the serial path, for a group that could not run
        self.grouped = 0  # expiries decided in groups (for tests and metrics); one thread per partition adds

    @property
    def rejected(self) -> int:
        """Holds the inner batch answered in bulk (SeatBatch.rejected), for tests and metrics."""
        return int(getattr(self.batch, "rejected", 0))

    def __call__(self, messages: Sequence[MessageProxy]) -> None:
        if sum(1 for m in messages if m.actor_name == ACTOR) < 2:
            self.batch(messages)
            return
        segment: list[MessageProxy] = []
        expiries: list[MessageProxy] = []
        for message in messages:
            if message.actor_name == ACTOR:
                expiries.append(message)
                continue
            if expiries:
                self._flush(segment)
                self._expire(expiries)
                segment, expiries = [], []
            segment.append(message)
        self._flush(segment)
        self._expire(expiries)

    def _flush(self, segment: list[MessageProxy]) -> None:
        if segment:
            self.batch(segment)

    def _expire(self, expiries: list[MessageProxy]) -> None:
        if len(expiries) < 2:
            self._flush(expiries)
            return
        ids = [int(m.kwargs["reservation_id"]) for m in expiries]
        try:
            with db.connection_context():
                views = reservations.expire_holds(reservation_ids=ids)
        except Exception as exc:  # any failure: the serial path decides each one, with its retries
            log.warning("group expiry of %d holds failed (%s); expiring them one by one", len(ids), exc)
            for message in expiries:
                self.handler(message)
            return
        try:
            with db.connection_context():
                write_through_many(views)
        except Exception as exc:  # committed: the caches' TTLs bound how long a missed write-through shows
            log.warning("write-through after the group expiry of %d holds failed: %s", len(ids), exc)
        self.grouped += len(ids)
        for view in views:
            log.info(
                "hold expired: reservationId=%s seatId=%s userId=%s", view.reservation_id, view.seat_id, view.user_id
            )
