"""Points routes: balance, charge, history."""

from __future__ import annotations

from flask import Blueprint, Response
from spectree import Response as Resp

from models import points
from web.api import parse_id, respond, settings, spec
from web.schemas import Problem
from web.schemas.points import BalanceOut, ChargeIn, HistoryOut, LedgerEntryOut

bp = Blueprint("points", __name__)


@bp.get("/users/<user_id>/points")
@spec.validate(resp=Resp(HTTP_200=BalanceOut, HTTP_400=Problem), tags=["points"])
def balance(user_id: str) -> Response:
    """A user's balance (0 if never charged)."""
    result = points.get_balance(user_id=parse_id(user_id, "userId"))
    return respond(BalanceOut(userId=result.user_id, balance=result.balance))


@bp.post("/users/<user_id>/points/charge")
@spec.validate(
    json=ChargeIn, resp=Resp(HTTP_200=BalanceOut, HTTP_400=Problem, HTTP_409=Problem, HTTP_422=Problem), tags=["points"]
)
def charge(user_id: str, json: ChargeIn) -> Response:
    """Add points to a wallet (created on first charge)."""
    s = settings()
    result = points.charge(
        user_id=parse_id(user_id, "userId"), amount=json.amount, max_charge=s.max_charge, max_balance=s.max_balance
    )
    return respond(BalanceOut(userId=result.user_id, balance=result.balance))


@bp.get("/users/<user_id>/points/history")
@spec.validate(resp=Resp(HTTP_200=HistoryOut, HTTP_400=Problem), tags=["points"])
def history(user_id: str) -> Response:
    """A user's ledger entries, newest first."""
    uid = parse_id(user_id, "userId")
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
