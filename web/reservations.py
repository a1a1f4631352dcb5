"""Reservation routes: hold (a job on the seat's partition), read, cancel."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response
from spectree import Response as Resp

from models import concerts, groups, quick_refusal, reservations
from models.errors import LimitExceeded, SeatNotAvailable
from web.api import parse_id, respond, settings, spec
from web.auth import identity
from web.gate import own_reservation, require_active, require_active_with, waiting_room
from web.jobs import (
    MAX_WAIT,
    answer,
    create_and_enqueue,
    give_wait_slot,
    job_route_responses,
    job_store,
    new_job_id,
    prefer_wait,
    wait_slot,
)
from web.limits import job_key, limiter
from web.schemas import Problem
from web.schemas.reservations import (
    MyReservationsQuery,
    ReservationCreated,
    ReservationIn,
    ReservationList,
    ReservationOut,
)
from workers.broker import Actor
from workers.reservations import cancel_reservation, extend_hold, hold_seat, hold_seats

bp = Blueprint("reservations", __name__)
RESERVATION = "RESERVATION"


def _location(result: dict[str, Any]) -> str:
    first = result["reservations"][0] if "reservations" in result else result
    return f"/api/v1/reservations/{first['reservationId']}"


@bp.post("/reservations")
@limiter.shared_limit(lambda: settings().rate_jobs_user, scope="jobs", key_func=job_key)
@spec.validate(
    json=ReservationIn,
    resp=job_route_responses(HTTP_201=ReservationCreated),
    tags=["reservations"],
    security={"queueToken": []},
)
def create(json: ReservationIn) -> Response:
    """Queue a seat hold on the seat's partition; `Prefer: wait=N` answers with the outcome.

    A seat the pipeline saw taken less than a second ago is refused at once, with no job: its
    mark is read in the queue-token check's round trip (SPEC §3 quick refusal, models/quick_refusal.py).
    A seat whose first hold is still queued (a pending mark) is answered by that hold's end when the
    caller waits (`Prefer: wait=N`): 409 if it took the seat, else this hold is queued.
    `seatIds` or `quantity` hold a group, all or nothing (see `_create_group`).
    """
    if json.seatId is None:
        return _create_group(json)
    token, (mark,) = require_active_with(
        [quick_refusal.check_call(waiting_room().r, schedule_id=json.scheduleId, seat_id=json.seatId)],
        concerts.concert_id_of_schedule(schedule_id=json.scheduleId),
        claimed_user_id=json.userId,
    )
    refusal = quick_refusal.refusal_of(mark)
    if refusal is not None:
        raise refusal
    wait, job_id = prefer_wait(), new_job_id()
    started, waiting = time.monotonic(), wait_slot(wait)  # a pending seat's first hold may answer this one
    try:
        refusal = quick_refusal.claim_or_follow(
            waiting_room().r,
            job_store(),
            schedule_id=json.scheduleId,
            seat_id=json.seatId,
            job_id=job_id,
            mark=mark,
            wait=wait if waiting else 0.0,
        )
    finally:
        if waiting:
            give_wait_slot()
    if refusal is not None:
        raise refusal
    job = create_and_enqueue(
        hold_seat,
        job_type=RESERVATION,
        user_id=token.user_id,
        route_seat=json.seatId,
        job_id=job_id,
        schedule_id=json.scheduleId,
        seat_id=json.seatId,
    )
    return answer(job, location=_location, wait=max(0.0, wait - (time.monotonic() - started)), fresh=True)


def _create_group(json: ReservationIn) -> Response:
    """Queue a group hold: `seatIds` on the lowest requested seat's partition, `quantity` on the
    schedule's lowest seat's (docs/ARCHITECTURE.md "Group holds"); any requested seat marked taken
    is refused at once, like a single hold."""
    count = len(json.seatIds) if json.seatIds is not None else int(json.quantity or 0)
    if count > settings().max_holds_per_user:
        raise LimitExceeded(f"a group holds at most MAX_HOLDS_PER_USER = {settings().max_holds_per_user} seats")
    seat_ids = json.seatIds or []
    client = waiting_room().r
    calls = [quick_refusal.check_call(client, schedule_id=json.scheduleId, seat_id=i) for i in seat_ids]
    concert_id = concerts.concert_id_of_schedule(schedule_id=json.scheduleId)
    token, marks = require_active_with(calls, concert_id, claimed_user_id=json.userId)
    refusals = [r for r in map(quick_refusal.refusal_of, marks) if r is not None]
    if refusals:
        raise SeatNotAvailable("; ".join(r.detail for r in refusals))
    route = min(seat_ids) if seat_ids else groups.lowest_seat_id(schedule_id=json.scheduleId)
    job = create_and_enqueue(
        hold_seats,
        job_type=RESERVATION,
        user_id=token.user_id,
        route_seat=route,
        schedule_id=json.scheduleId,
        seat_ids=json.seatIds,
        quantity=json.quantity,
        together=json.together,
    )
    return answer(job, location=_location, fresh=True)


@bp.get("/reservations/<reservation_id>")
@spec.validate(
    resp=Resp(HTTP_200=ReservationOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_404=Problem),
    tags=["reservations"],
)
def get(reservation_id: str) -> Response:
    """The caller's reservation (the identity is enough: it stays readable after the queue token ends)."""
    view = own_reservation(None, parse_id(reservation_id, "reservationId"))
    return respond(ReservationOut.model_validate(reservations.reservation_json(view)))


@bp.get("/me/reservations")
@spec.validate(
    query=MyReservationsQuery,
    resp=Resp(HTTP_200=ReservationList, HTTP_400=Problem, HTTP_401=Problem),
    tags=["reservations"],
)
def mine(query: MyReservationsQuery) -> Response:
    """The caller's reservations, newest first (`?status=`, paged with `?limit=&before=<reservationId>`)."""
    views = reservations.list_reservations(
        user_id=identity(), status=query.status, limit=query.limit, before=query.before
    )
    items = [ReservationOut.model_validate(reservations.reservation_json(v)) for v in views]
    return respond(ReservationList(reservations=items))


@bp.delete("/reservations/<reservation_id>")
@limiter.shared_limit(lambda: settings().rate_jobs_user, scope="jobs", key_func=job_key)
@spec.validate(
    resp=job_route_responses((400, 401, 403, 404, 409, 429), HTTP_200=ReservationOut),
    tags=["reservations"],
    security={"queueToken": []},
)
def cancel(reservation_id: str) -> Response:
    """Cancel the caller's held reservation through the seat's partition; the seat is free at once."""
    return _own_reservation_job(cancel_reservation, reservation_id)


@bp.post("/reservations/<reservation_id>/extend")
@limiter.shared_limit(lambda: settings().rate_jobs_user, scope="jobs", key_func=job_key)
@spec.validate(
    resp=job_route_responses((400, 401, 403, 404, 409, 429), HTTP_200=ReservationOut),
    tags=["reservations"],
    security={"queueToken": []},
)
def extend(reservation_id: str) -> Response:
    """Extend the caller's held reservation to now + HOLD_TTL, HOLD_MAX_EXTENSIONS times, on the seat's partition."""
    return _own_reservation_job(extend_hold, reservation_id)


def _own_reservation_job(job_actor: Actor, reservation_id: str) -> Response:
    """A job on the caller's own reservation (cancel, extend) through its seat's partition; 200 with the result."""
    token = require_active()
    view = own_reservation(token, parse_id(reservation_id, "reservationId"))
    job = create_and_enqueue(
        job_actor,
        job_type=RESERVATION,
        user_id=token.user_id,
        route_seat=view.seat_id,
        reservation_id=view.reservation_id,
    )
    return answer(job, location=_location, wait=MAX_WAIT, success_status=200, fresh=True)
