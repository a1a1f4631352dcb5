"""Run one partition message: find its actor, retry transient failures, never lose the job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import peewee as pw
from dramatiq.broker import MessageProxy

from config.bootstrap import current
from config.logs import job_context
from models.db import db
from models.errors import Unavailable, problem_of
from models.redis_support import ANY_REDIS_ERROR, REDIS_ERRORS
from workers import payments, refunds, reservations
from workers.broker import Actor
from workers.jobs import JobStore

log = logging.getLogger("workers.dispatch")
TRANSIENT: tuple[type[Exception], ...] = (pw.OperationalError, pw.InterfaceError, *REDIS_ERRORS)
BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)

# Every actor, by the name its messages carry: the one registry a message is dispatched through.
ACTORS: dict[str, Actor] = {
    a.name: a
    for a in (
        reservations.hold_seat,
        reservations.hold_seats,
        reservations.cancel_reservation,
        reservations.extend_hold,
        reservations.expire_hold,
        payments.pay,
        refunds.refund_payment,
    )
}


def actor_of(message: MessageProxy) -> Actor | None:
    """The actor that runs `message`, or None for a name no actor has."""
    return ACTORS.get(message.actor_name)


def handle(message: MessageProxy) -> None:
    """Run a message's actor with its own DB connection; after the retries, fail its job (never raise)."""
    fn = actor_of(message)
    if fn is None:
        log.error("dropping message %s for unknown actor %r", message.message_id, message.actor_name)
        return
    with job_context(message.kwargs.get("job_id"), message.options.get("request_id")):
        _handle(message, fn)


def _handle(message: MessageProxy, fn: Callable[..., Any]) -> None:
    for attempt, pause in enumerate((*BACKOFF, None)):
        try:
            with db.connection_context():
                fn(*message.args, **message.kwargs)
            return
        except TRANSIENT as exc:
            if pause is None:
                log.error("giving up on %s after %s attempts: %s", message.actor_name, attempt + 1, exc)
                break
            log.warning("transient failure in %s (attempt %s): %s", message.actor_name, attempt + 1, exc)
            _reset_db()
            time.sleep(pause)
        except Exception:
            log.exception("actor %s failed unexpectedly", message.actor_name)
            break
    job_id = message.kwargs.get("job_id")
    if job_id:
        try:
            lost = Unavailable("the job could not be processed; send it again")
            JobStore(current().redis).fail(job_id, problem_of(lost))
        except ANY_REDIS_ERROR:
            log.error("could not record the failure of job %s", job_id)


def _reset_db() -> None:
    try:
        if not db.is_closed():
            db.close()
    except Exception:
        pass
