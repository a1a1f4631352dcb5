"""Points routes: balance, charge, history of the signed-in user (`/users/{id}/...` or `/me/...`)."""

from __future__ import annotations

from flask import Blueprint, Response
from spectree import Response as Resp

from models import points
from models.errors import Forbidden
from web.api import idempotency_key_header, parse_id, respond, settings, spec
from web.auth import identity
from web.schemas import Problem
from web.schemas.points import BalanceOut, ChargeIn, HistoryOut, LedgerEntryOut

bp = Blueprint("points", __name__)
READ = Resp(HTTP_200=BalanceOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem)
CHARGE = Resp(HTTP_200=BalanceOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem, HTTP_409=Problem,
              HTTP_422=Problem)  # fmt: skip
HISTORY = Resp(HTTP_200=HistoryOut, HTTP_400=Problem, HTTP_401=Problem, HTTP_403=Problem)


def _own(user_id: str | None) -> int:
    """The signed-in user, who must be the path's user (403 otherwise)."""
    me = identity()
    if user_id is not None and parse_id(user_id, "userId") != me:
        raise Forbidden("a wallet can only be used by its own user")
    return me


def _balance(user_id: str | None) -> Response:
    result = points.get_balance(user_id=_own(user_id))
    return respond(BalanceOut(userId=result.user_id, balance=result.balance))


def _charge(user_id: str | None, body: ChargeIn) -> Response:
    s = settings()
    user = _own(user_id)
    result = points.charge(
        user_id=user,
        amount=body.amount,
        max_charge=s.max_charge,
        max_balance=s.max_balance,
        idempotency_key=idempotency_key_header(),
    )
    return respond(BalanceOut(userId=result.user_id, balance=result.balance))


def _history(user_id: str | None) -> Response:
    uid = _own(user_id)
    entries = [
        LedgerEntryOut.model_validate(
            {
                "type": h.type,
                "amount": h.amount,
                "balanceAfter": h.balance_after,
                "createdAt": h.created_at,
                "reference": h.reference,
            }
        )
        for h in points.history(user_id=uid)
    ]
    return respond(HistoryOut(userId=uid, entries=entries))


@bp.get("/users/<user_id>/points")
@spec.validate(resp=READ, tags=["points"])
def balance(user_id: str) -> Response:
    """The signed-in user's balance (0 if never charged); another user's is 403."""
    return _balance(user_id)


@bp.post("/users/<user_id>/points/charge")
@spec.validate(json=ChargeIn, resp=CHARGE, tags=["points"])
def charge(user_id: str, json: ChargeIn) -> Response:
    """Add points to the signed-in user's wallet (created on first charge); the same Idempotency-Key
    answers the first charge again and charges nothing."""
    return _charge(user_id, json)


@bp.get("/users/<user_id>/points/history")
@spec.validate(resp=HISTORY, tags=["points"])
def history(user_id: str) -> Response:
    """The signed-in user's ledger entries, newest first."""
    return _history(user_id)


@bp.get("/me/points")
@spec.validate(resp=READ, tags=["points"])
def my_balance() -> Response:
    """The caller's balance (0 if never charged)."""
    return _balance(None)


@bp.post("/me/points/charge")
@spec.validate(json=ChargeIn, resp=CHARGE, tags=["points"])
def my_charge(json: ChargeIn) -> Response:
    """Add points to the caller's wallet (created on first charge); the same Idempotency-Key answers
    the first charge again and charges nothing."""
    return _charge(None, json)


@bp.get("/me/points/history")
@spec.validate(resp=HISTORY, tags=["points"])
def my_history() -> Response:
    """The caller's ledger entries, newest first."""
    return _history(None)
