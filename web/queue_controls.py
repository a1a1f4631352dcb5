"""Operator controls (ADMIN_TOKEN): read and change a concert's queue; the audit log of changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from pydantic import BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from spectree import Response as Resp

from models import concerts
from models.db import db
from models.errors import NotFound, ValidationError
from models.queue_controls import MAX_LIMIT, MAX_NOTICE, QueueControls, fingerprint
from web import metrics
from web.admin import admin_only
from web.api import parse_id, respond, settings, spec
from web.gate import waiting_room
from web.schemas import Body, Out, Problem, UtcDateTime, whole_number

bp = Blueprint("queue_controls", __name__)

# a zero fraction (2.0) is an integer to JSON Schema, as for every integer of the API (web/schemas)
Limit = Annotated[StrictInt, Field(ge=0, le=MAX_LIMIT), BeforeValidator(whole_number)]
Rate = Annotated[StrictInt, Field(ge=1, le=MAX_LIMIT), BeforeValidator(whole_number)]


class QueueControlsIn(Body):
    """Any of the controls, at least one; a field left out is unchanged, `null` restores the default."""

    model_config = ConfigDict(**Body.model_config, json_schema_extra={"minProperties": 1})

    paused: StrictBool | None = None
    activeLimit: Limit | None = None
    admitPerSecond: Rate | None = None
    notice: Annotated[StrictStr, Field(max_length=MAX_NOTICE)] | None = None


class QueueStateOut(Out):
    """A concert's queue now: counts from Redis, seats from the database, the controls in force."""

    concertId: int
    waiting: int
    prequeued: int
    active: int
    admittedTotal: int
    admittedPerMinute: int
    activeLimit: int
    admitPerSecond: int | None
    paused: bool
    soldOut: bool
    held: int
    sold: int
    available: int
    notice: str | None


class AuditEntryOut(Out):
    """One changed control."""

    concertId: int
    who: str
    at: UtcDateTime
    field: str
    before: Any
    after: Any


class AuditOut(Out):
    """Changes to the queue controls, newest first."""

    entries: list[AuditEntryOut]


def queue_controls() -> QueueControls:
    """The app's queue controls."""
    return current_app.extensions["queue_controls"]  # type: ignore[no-any-return]


def _state(concert_id: int) -> QueueStateOut:
    if not concerts.concert_exists(concert_id=concert_id):
        raise NotFound(f"concert {concert_id} does not exist")
    room, controls = waiting_room(), queue_controls().get(concert_id=concert_id)
    waiting, active = room.counts(concert_id=concert_id)
    seats = concerts.seat_counts(concert_id=concert_id)
    return QueueStateOut(
        concertId=concert_id,
        waiting=waiting,
        prequeued=current_app.extensions["prequeue"].waiting_in_prequeue(concert_id=concert_id),
        active=active,
        admittedTotal=room.admitted_total(concert_id=concert_id),
        admittedPerMinute=round(room.admission_rate(concert_id=concert_id) * 60),
        activeLimit=controls.limit(settings().active_limit),
        admitPerSecond=controls.admit_per_second,
        paused=controls.paused,
        soldOut=seats[concerts.AVAILABLE] + seats[concerts.HELD] == 0,
        held=seats[concerts.HELD],
        sold=seats[concerts.RESERVED],
        available=seats[concerts.AVAILABLE],
        notice=controls.notice,
    )


_RESP = {"HTTP_400": Problem, "HTTP_401": Problem, "HTTP_403": Problem, "HTTP_404": Problem}


@bp.get("/admin/concerts/<concert_id>/queue")
@admin_only
@spec.validate(resp=Resp(HTTP_200=QueueStateOut, **_RESP), tags=["admin"], security={"adminToken": []})
def get_queue(concert_id: str) -> Response:
    """The concert's queue, seats and controls now."""
    return respond(_state(parse_id(concert_id, "concert_id")))


@bp.patch("/admin/concerts/<concert_id>/queue")
@admin_only
@spec.validate(
    json=QueueControlsIn, resp=Resp(HTTP_200=QueueStateOut, **_RESP), tags=["admin"], security={"adminToken": []}
)
def patch_queue(concert_id: str, json: QueueControlsIn) -> Response:
    """Change controls; the admission pass applies them within a second in every process."""
    cid = parse_id(concert_id, "concert_id")
    given = {name: getattr(json, name) for name in json.model_fields_set}
    if not given:  # no body (spectree reads it as {}) or an empty object: nothing would change
        raise ValidationError("send at least one of paused, activeLimit, admitPerSecond, notice")
    if not concerts.concert_exists(concert_id=cid):
        raise NotFound(f"concert {cid} does not exist")
    queue_controls().change(concert_id=cid, who=fingerprint(settings().admin_token or ""), changes=given)
    return respond(_state(cid))


@bp.get("/admin/audit")
@admin_only
@spec.validate(
    resp=Resp(HTTP_200=AuditOut, HTTP_401=Problem, HTTP_403=Problem), tags=["admin"], security={"adminToken": []}
)
def audit() -> Response:
    """Who changed which control when, from what to what (newest first, at most 200)."""
    wanted = request.args.get("concertId")
    ids = [parse_id(wanted, "concertId")] if wanted else [c.concert_id for c in concerts.list_concerts()]
    entries = queue_controls().audit(concert_ids=ids, limit=200)
    out = [
        AuditEntryOut(concertId=e.concert_id, who=e.who, at=e.at, field=e.field, before=e.before, after=e.after)
        for e in entries
    ]
    return respond(AuditOut(entries=out))


class ControlsCollector:
    """Scrape-time gauges of each concert's controls (queue_control_paused, _active_limit, ...)."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.app is None:
            return
        names = ("paused", "active_limit", "admit_per_second", "notice_set")
        families = {
            n: GaugeMetricFamily(f"queue_control_{n}", f"Operator control {n}", labels=["concert"]) for n in names
        }
        try:
            with self.app.app_context(), db.connection_context():
                ids = [c.concert_id for c in concerts.list_concerts()]
                default = settings().active_limit
                for cid in ids:
                    c = queue_controls().get(concert_id=cid)
                    label = [str(cid)]
                    families["paused"].add_metric(label, float(c.paused))
                    families["active_limit"].add_metric(label, float(c.limit(default)))
                    families["admit_per_second"].add_metric(label, float(c.admit_per_second or 0))
                    families["notice_set"].add_metric(label, float(c.notice is not None))
        except Exception:  # a scrape must not fail because Redis or the database is down
            pass
        yield from families.values()


CONTROLS = ControlsCollector()
REGISTRY.register(CONTROLS)  # type: ignore[arg-type]
metrics.SCRAPE_TIME.append(CONTROLS)


def install(app: Flask) -> None:
    """Export the controls of this app's concerts at every scrape."""
    CONTROLS.app = app
