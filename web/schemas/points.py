"""Request and response schemas of points wallets (web/points.py)."""

from __future__ import annotations

from typing import Literal

from web.schemas import Amount, Body, Out, UtcDateTime


class ChargeIn(Body):
    """A points charge: a positive whole number (limits in MAX_CHARGE / MAX_BALANCE)."""

    amount: Amount


class BalanceOut(Out):
    """A user's balance."""

    userId: int
    balance: int


class LedgerEntryOut(Out):
    """One ledger entry; USE amounts are negative."""

    type: Literal["CHARGE", "USE", "REFUND"]
    amount: int
    balanceAfter: int
    createdAt: UtcDateTime
    reference: str | None


class HistoryOut(Out):
    """A user's ledger, newest first."""

    userId: int
    entries: list[LedgerEntryOut]
