"""The fair start's draw: when a concert opens, release its pre-queue in drawn order and publish the draw.

`run_due_draws` is the scheduler's one call (leader only, every second). For each concert whose
`saleOpensAt` has passed and whose draw is not stored yet it:

1. opens the gate, one short script (models/prequeue.py): the pre-queue already is the head of
   the queue in drawn order, so admission starts at once, drawn fans first; the same script
   freezes the entrant index as the draw's entrants;
2. computes the published order from the frozen entrants and the seed (short HSCAN slices while
   admission runs), writes it to `fair_draw_entrants` and sets `drawn_at`, which reveals the seed
   at `GET /concerts/{id}/fairness`.

Every step is idempotent, so a leader that dies mid-draw leaves work the next leader finishes
exactly once: the opening script freezes the entrants only the first time, and the copy
rewrites the concert's rows from position 1.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import peewee as pw

from models import fairness
from models.concerts import Concert
from models.db import BaseModel, db, iso, utcnow
from models.errors import NotFound, SaleNotOpen
from models.prequeue import PreQueue, PrequeuedToken

log = logging.getLogger("models.draws")
COPY_SLICE = 5_000


class FairDrawEntrant(BaseModel):
    """One entrant of a published draw, at its drawn position (1-based)."""

    concert_id = pw.BigIntegerField()
    position = pw.IntegerField()
    entrant = pw.CharField(max_length=64)

    class Meta:
        table_name = "fair_draw_entrants"
        primary_key = pw.CompositeKey("concert_id", "position")


@dataclass(frozen=True)
class FairStart:
    """A concert's fair-start facts a join needs (cached per process: they never change once set)."""

    concert_id: int
    opens_at: dt.datetime
    seed: bytes


@dataclass(frozen=True)
class DrawResult:
    """What one concert's draw did."""

    concert_id: int
    released: int
    seconds: float  # from the opening's tick to admission open (one script)
    published_s: float = 0.0  # from the opening's tick to the draw stored and the seed revealed


_FAIR_STARTS: dict[int, FairStart | None] = {}


def fair_start_of(*, concert_id: int) -> FairStart | None:
    """The concert's opening time and seed, or None for a concert without a fair start."""
    if concert_id not in _FAIR_STARTS:
        row = Concert.select(Concert.sale_opens_at, Concert.seed_hex).where(Concert.id == concert_id).tuples().first()
        if row is None:
            raise NotFound(f"concert {concert_id} does not exist")
        opens, seed = row
        _FAIR_STARTS[concert_id] = FairStart(concert_id, opens, bytes.fromhex(seed)) if opens and seed else None
    return _FAIR_STARTS[concert_id]


def forget_cached() -> None:
    """Drop the per-process memo (tests that recreate the schema)."""
    _FAIR_STARTS.clear()


def phase(start: FairStart, *, now: dt.datetime, window_s: int) -> str:
    """'early' (before the pre-queue window: SALE_NOT_OPEN), 'prequeue' or 'open'."""
    if now < start.opens_at - dt.timedelta(seconds=window_s):
        return "early"
    return "prequeue" if now < start.opens_at else "open"


def refuse_early(start: FairStart, *, window_s: int) -> SaleNotOpen:
    """The SALE_NOT_OPEN error for a join before the pre-queue window."""
    opens = iso(start.opens_at)
    window_opens = iso(start.opens_at - dt.timedelta(seconds=window_s))
    return SaleNotOpen(f"the sale opens at {opens}; the queue opens at {window_opens}")


RELEASE_GRACE = dt.timedelta(minutes=10)


def join_prequeue(
    prequeue: PreQueue, *, user_id: int, concert_id: int, window_s: int, now: dt.datetime | None = None
) -> PrequeuedToken | None:
    """Join through the fair start where it applies: SALE_NOT_OPEN before the window, PREQUEUED in it,
    and, for a while after the opening, the fan's own pre-queued token until the release reaches it.

    None means the ordinary queue applies (no fair start, or the concert is open). NotFound for an
    unknown concert.
    """
    start = fair_start_of(concert_id=concert_id)
    if start is None:
        return None
    now = now or utcnow()
    current = phase(start, now=now, window_s=window_s)
    if current == "early":
        raise refuse_early(start, window_s=window_s)
    if current == "prequeue":
        opens_ms = int(start.opens_at.replace(tzinfo=dt.UTC).timestamp() * 1000)
        return prequeue.join(user_id=user_id, concert_id=concert_id, seed=start.seed, opens_at_ms=opens_ms)
    if now < start.opens_at + RELEASE_GRACE:
        return prequeue.find(user_id=user_id, concert_id=concert_id)
    return None


def prequeued_status(
    prequeue: PreQueue, *, token: str, concert_id: int, now: dt.datetime | None = None
) -> PrequeuedToken | None:
    """The token if it is PREQUEUED (asked only around a fair start's opening, so other polls pay nothing)."""
    start = fair_start_of(concert_id=concert_id)
    if start is None or (now or utcnow()) >= start.opens_at + RELEASE_GRACE:
        return None
    return prequeue.status(token=token, concert_id=concert_id)


def run_due_draws(*, prequeue: PreQueue, now: dt.datetime | None = None) -> list[DrawResult]:
    """Release and publish every due draw; hold admission for concerts that have not opened yet."""
    now = now or utcnow()
    undrawn = list(
        Concert.select(Concert.id, Concert.sale_opens_at)
        .where(Concert.sale_opens_at.is_null(False), Concert.drawn_at.is_null())
        .tuples()
    )
    results = []
    for concert_id, opens_at in undrawn:
        if opens_at > now:
            prequeue.close_gate(concert_id=concert_id)
        else:
            results.append(draw(prequeue=prequeue, concert_id=concert_id))
    return results


def draw(*, prequeue: PreQueue, concert_id: int) -> DrawResult:
    """Open admission in drawn order (O(1)), then store the draw and reveal the seed."""
    started = time.perf_counter()
    released = prequeue.open_gate(concert_id=concert_id)
    opened = time.perf_counter() - started
    start = fair_start_of(concert_id=concert_id)
    entrants = prequeue.drawn_order(concert_id=concert_id, seed=start.seed) if start else []
    _store(concert_id, entrants)
    prequeue.finish(concert_id=concert_id)
    published_s = time.perf_counter() - started
    log.info(
        "fair-start draw of concert %s: %s entrants, admission open after %.3f s, published after %.2f s",
        concert_id,
        released,
        opened,
        published_s,
    )
    return DrawResult(concert_id, released, opened, published_s)


def _store(concert_id: int, entrants: list[str]) -> None:
    """The draw's rows (rewritten from position 1), then `drawn_at`, which reveals the seed."""
    FairDrawEntrant.delete().where(FairDrawEntrant.concert_id == concert_id).execute()
    for start in range(0, len(entrants), COPY_SLICE):
        rows = [(concert_id, start + i + 1, e) for i, e in enumerate(entrants[start : start + COPY_SLICE])]
        with db.atomic():
            FairDrawEntrant.insert_many(
                rows, fields=[FairDrawEntrant.concert_id, FairDrawEntrant.position, FairDrawEntrant.entrant]
            ).execute()
    Concert.update(drawn_at=utcnow()).where(Concert.id == concert_id, Concert.drawn_at.is_null()).execute()


@dataclass(frozen=True)
class PublishedDraw:
    """What `GET /concerts/{id}/fairness` shows: everything needed to recompute the order."""

    concert_id: int
    sale_opens_at: dt.datetime | None
    seed_commitment: str | None
    seed: str | None
    drawn_at: dt.datetime | None
    entrants: list[str]
    algorithm: str = fairness.ALGORITHM


def published(*, concert_id: int) -> PublishedDraw:
    """A concert's public draw record; the seed and entrants only once the draw is stored."""
    concert = Concert.get_or_none(Concert.id == concert_id)
    if concert is None:
        raise NotFound(f"concert {concert_id} does not exist")
    drawn = concert.drawn_at is not None
    entrants: list[str] = []
    if drawn:
        query = (
            FairDrawEntrant.select(FairDrawEntrant.entrant)
            .where(FairDrawEntrant.concert_id == concert_id)
            .order_by(FairDrawEntrant.position)
            .tuples()
        )
        entrants = [row[0] for row in query]
    return PublishedDraw(
        concert_id,
        concert.sale_opens_at,
        concert.seed_commitment,
        concert.seed_hex if drawn else None,
        concert.drawn_at,
        entrants,
    )


def verify_published(*, concert_id: int) -> fairness.Verdict:
    """Recompute a concert's published draw from its public record alone."""
    record = published(concert_id=concert_id)
    if record.seed_commitment is None:
        return fairness.Verdict(False, (f"concert {concert_id} has no fair start",))
    return fairness.verify(seed_hex=record.seed, commitment=record.seed_commitment, entrants=record.entrants)
