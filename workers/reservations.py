"""Reservation actors: adapters from partition messages to models/reservations.py.

Each actor commits through the domain function, then writes the seat's new state through to
the catalogue cache (after the commit: the cache never shows a state the database rolled back).
"""

from __future__ import annotations

import logging

from config.bootstrap import current
from models import extensions, groups, quick_refusal, reservations
from models.errors import SeatNotAvailable
from workers.broker import actor, send
from workers.cache import mark_seat, write_through
from workers.jobs import JobStore, run_job

log = logging.getLogger("workers.reservations")


def _store() -> JobStore:
    return JobStore(current().redis)


@actor("hold_seat")
def hold_seat(*, job_id: str, user_id: int, schedule_id: int, seat_id: int, enqueued_ms: int) -> None:
    """Hold a seat for a user; the job's result is the reservation."""
    s = current().settings

    def work(redelivered: bool) -> dict[str, object]:
        read_at = quick_refusal.now_ms()
        try:
            view = reservations.hold_seat(
                user_id=user_id,
                schedule_id=schedule_id,
                seat_id=seat_id,
                job_id=job_id,
                hold_ttl=s.hold_ttl,
                max_holds=s.max_holds_per_user,
                redelivered=redelivered,
                max_extensions=s.hold_max_extensions,
            )
        except SeatNotAvailable as exc:  # seen taken after read_at: the edge may refuse for a moment
            mark_seat(current().redis, schedule_id=schedule_id, seat_id=seat_id, refusal=exc.detail, read_at_ms=read_at)
            raise
        write_through(view)
        return reservations.reservation_json(view)

    run_job(_store(), job_id, enqueued_ms=enqueued_ms, stale_after_s=s.job_stale_after, work=work, job_type="hold")


@actor("hold_seats")
def hold_seats(
    *,
    job_id: str,
    user_id: int,
    schedule_id: int,
    enqueued_ms: int,
    seat_ids: list[int] | None = None,
    quantity: int | None = None,
    together: bool = False,
) -> None:
    """Hold several seats (given, or the best available) all or nothing; the result is `{"reservations":[...]}`."""
    s = current().settings

    def work(redelivered: bool) -> dict[str, object]:
        read_at = quick_refusal.now_ms()
        try:
            views = groups.hold_seats(
                user_id=user_id,
                schedule_id=schedule_id,
                job_id=job_id,
                hold_ttl=s.hold_ttl,
                max_holds=s.max_holds_per_user,
                seat_ids=seat_ids,
                quantity=quantity,
                together=together,
                max_extensions=s.hold_max_extensions,
            )
        except SeatNotAvailable as exc:  # seats read taken after read_at: the edge may refuse them for a moment
            for seat_id, refusal in exc.extra.get("taken", ()):
                mark_seat(
                    current().redis, schedule_id=schedule_id, seat_id=seat_id, refusal=refusal, read_at_ms=read_at
                )
            raise
        for view in views:
            write_through(view)
        return {"reservations": [reservations.reservation_json(v) for v in views]}

    run_job(_store(), job_id, enqueued_ms=enqueued_ms, stale_after_s=s.job_stale_after, work=work, job_type="hold")


@actor("cancel_reservation")
def cancel_reservation(*, job_id: str, user_id: int, reservation_id: int, enqueued_ms: int) -> None:
    """Cancel a user's held reservation; the job's result is the reservation (CANCELLED)."""

    def work(redelivered: bool) -> dict[str, object]:
        view = reservations.cancel_reservation(reservation_id=reservation_id, user_id=user_id)
        write_through(view)
        return reservations.reservation_json(view)

    stale = current().settings.job_stale_after
    run_job(_store(), job_id, enqueued_ms=enqueued_ms, stale_after_s=stale, work=work, job_type="cancel")


@actor("extend_hold")
def extend_hold(*, job_id: str, user_id: int, reservation_id: int, enqueued_ms: int) -> None:
    """Extend a user's held reservation by HOLD_TTL; the job's result is the reservation (new expiresAt)."""
    s = current().settings

    def work(redelivered: bool) -> dict[str, object]:
        view = extensions.extend_hold(reservation_id=reservation_id, user_id=user_id, hold_ttl=s.hold_ttl)
        return reservations.reservation_json(view)

    run_job(_store(), job_id, enqueued_ms=enqueued_ms, stale_after_s=s.job_stale_after, work=work, job_type="extend")


@actor("expire_hold")
def expire_hold(*, reservation_id: int) -> None:
    """Expire one hold past its time (sent by the scheduler; idempotent)."""
    view = reservations.expire_hold(reservation_id=reservation_id)
    if view is not None:
        write_through(view)
        log.info("hold expired: reservationId=%s seatId=%s userId=%s", view.reservation_id, view.seat_id, view.user_id)


def enqueue_expiries(*, limit: int = 500) -> int:
    """Send an expire message to the seat's partition for each hold past its time; return how many.

    A short Redis marker per reservation keeps a slow partition from receiving the same expiry
    every tick; a duplicate would be harmless anyway (expire_hold is a compare-and-set).
    """
    services = current()
    sent = 0
    for reservation_id, seat_id in reservations.find_expired(limit=limit):
        if not services.redis.set(f"expiring:{reservation_id}", 1, nx=True, ex=30):
            continue
        send(
            services.broker,
            expire_hold,
            route_seat=seat_id,
            partitions=services.settings.partitions,
            reservation_id=reservation_id,
        )
        sent += 1
    return sent
