"""Operations endpoints: liveness, readiness of each dependency, metrics."""

from __future__ import annotations

import peewee as pw
import redis
from flask import Blueprint, Response
from spectree import Response as Resp

from models.db import db
from models.errors import Unavailable
from web import metrics
from web.api import respond, services, spec
from web.schemas import HealthOut, ReadyOut

bp = Blueprint("health", __name__)


def unavailable_error(error: BaseException) -> Unavailable | None:
    """Map a lost database/Redis connection to a 503 UNAVAILABLE problem (else None)."""
    if isinstance(error, (pw.OperationalError, pw.InterfaceError)):
        return Unavailable("the database is unavailable; retry shortly")
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return Unavailable("Redis is unavailable; retry shortly")
    return None


def _check(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
        return "ok"
    except Exception as exc:  # readiness reports any failure
        return f"error: {type(exc).__name__}: {str(exc)[:160]}"


@bp.get("/healthz")
@spec.validate(resp=Resp(HTTP_200=HealthOut), tags=["operations"])
def healthz() -> Response:
    """The process is up."""
    return respond(HealthOut(status="ok"))


@bp.get("/readyz")
@spec.validate(resp=Resp(HTTP_200=ReadyOut, HTTP_503=ReadyOut), tags=["operations"])
def readyz() -> Response:
    """Each dependency answers: database, Redis and the job broker."""
    svc = services()
    checks = {
        "database": _check(lambda: db.execute_sql("SELECT 1").fetchone()),
        "redis": _check(svc.redis.ping),
        "broker": _check(lambda: svc.broker.client.ping()),  # type: ignore[attr-defined]
    }
    ok = all(v == "ok" for v in checks.values())
    return respond(ReadyOut(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus text exposition."""
    return metrics.exposition()
