"""Operations endpoints: liveness, readiness of each dependency, metrics."""

from __future__ import annotations

import socket

import dramatiq.errors
import peewee as pw
import pymysql
from flask import Blueprint, Response
from playhouse.pool import MaxConnectionsExceeded
from spectree import Response as Resp

from models import redis_support
from models.db import db
from models.errors import Unavailable
from web import metrics
from web.api import described, ready_json, respond, services, spec
from web.schemas.health import HealthOut, ReadyOut

bp = Blueprint("health", __name__)


# Errors that mean "the database cannot be reached or answered no more": peewee wraps PyMySQL's
# (lost connection 2013, gone away 2006, refused 2003, read timeout...) in its own classes; the
# raw ones are listed for code paths peewee does not wrap (closing, pool checks). A full pool
# that stayed full for the pool's wait timeout is the same to a caller: try again shortly.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    pw.OperationalError,
    pw.InterfaceError,
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    MaxConnectionsExceeded,
)
# redis-py: ConnectionError covers refused/reset connections, BusyLoadingError (a restarted
# server still loading its AOF), MaxConnectionsError and the blocking pool's "No connection
# available" after its wait; TimeoutError a server that stopped answering; ReadOnlyError a
# replica answering during a failover; on a Redis Cluster also the cluster client's errors
# (models.redis_support). Dramatiq wraps the broker's connection errors in its own.
REDIS_ERRORS: tuple[type[BaseException], ...] = (*redis_support.REDIS_ERRORS, dramatiq.errors.BrokerConnectionError)


def unavailable_error(error: BaseException) -> Unavailable | None:
    """Map a lost database/Redis connection to a 503 UNAVAILABLE problem (else None).

    The error itself or the error it was raised from (`raise ... from`, a few levels deep)
    counts, so a connection error wrapped by a library on its way up is still recognised; an
    unrelated bug raised while handling one is not (it stays a logged 500).
    """
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, DATABASE_ERRORS):
            return Unavailable("the database is unavailable; retry shortly")
        if isinstance(seen, REDIS_ERRORS):
            return Unavailable("Redis is unavailable; retry shortly")
        seen = seen.__cause__
    return None


def redis_ready(client: object) -> None:
    """PING; on a Redis Cluster also CLUSTER INFO, which must say cluster_state:ok (every slot served)."""
    client.ping()  # type: ignore[attr-defined]
    if redis_support.is_cluster(client):
        state = client.cluster_info().get("cluster_state")  # type: ignore[attr-defined]
        if state != "ok":
            raise RuntimeError(f"cluster_state is {state}")


def _check(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
        return "ok"
    except Exception as exc:  # readiness reports any failure
        return f"error: {type(exc).__name__}: {str(exc)[:160]}"


_HEALTHY = HealthOut(status="ok").model_dump_json().encode()


@bp.get("/healthz")
@described(resp=Resp(HTTP_200=HealthOut), tags=["operations"])
def healthz() -> Response:
    """The process is up."""
    return ready_json(_HEALTHY)


def _event_broker(bootstrap_servers: str) -> str:
    """The Kafka-protocol broker: "disabled" when none is configured, "ok" when one accepts a connection."""
    if not bootstrap_servers:
        return "disabled"

    def connect() -> None:
        errors = []
        for server in bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                socket.create_connection((host or "localhost", int(port or 9092)), timeout=1.0).close()
                return
            except OSError as exc:
                errors.append(f"{server.strip()}: {exc}")
        raise ConnectionError("; ".join(errors))

    return _check(connect)


@bp.get("/readyz")
@spec.validate(resp=Resp(HTTP_200=ReadyOut, HTTP_503=ReadyOut), tags=["operations"])
def readyz() -> Response:
    """Each dependency answers: database, Redis (records, queues) and the event broker (`disabled` without one)."""
    svc = services()
    checks = {
        "database": _check(lambda: db.execute_sql("SELECT 1").fetchone()),
        "redis": _check(lambda: redis_ready(svc.redis)),
        "broker": _event_broker(svc.settings.kafka_bootstrap_servers),
    }
    ok = all(v in ("ok", "disabled") for v in checks.values())
    return respond(ReadyOut(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503)


@bp.get("/metrics")
@spec.validate(resp=Resp(HTTP_200=None), tags=["operations"])
def metrics_endpoint() -> Response:
    """Prometheus text exposition (also served at the root, `/metrics`, where Prometheus looks by default)."""
    return metrics.exposition()
