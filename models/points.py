"""Point wallets and their ledger: balance, charge (optimistic lock), history, debit."""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass

import peewee as pw

from models.db import MAX_ID, BaseModel, UtcDateTimeField, db, utcnow
from models.errors import ConcurrentUpdate, IdempotencyKeyReused, InsufficientPoints, LimitExceeded, ValidationError

CHARGE, USE, REFUND = "CHARGE", "USE", "REFUND"
CHARGE_ATTEMPTS = 5


class Wallet(BaseModel):
    """A user's point balance; `version` guards every change (compare-and-set)."""

    user_id = pw.BigIntegerField(primary_key=True)
    balance = pw.BigIntegerField(default=0)
    version = pw.IntegerField(default=0)
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "point_wallets"


class LedgerEntry(BaseModel):
    """One change of a wallet; the balance is always the sum of these."""

    id = pw.BigAutoField()
    user_id = pw.BigIntegerField()
    type = pw.CharField(max_length=16)
    amount = pw.BigIntegerField()
    balance_after = pw.BigIntegerField()
    reference = pw.CharField(max_length=64, null=True)
    created_at = UtcDateTimeField(default=utcnow)
    idempotency_key = pw.CharField(max_length=128, null=True)  # a charge's Idempotency-Key (migration 010)

    class Meta:
        table_name = "point_ledger"
        indexes = ((("user_id", "id"), False), (("user_id", "idempotency_key"), True))


@dataclass(frozen=True)
class Balance:
    """A user's balance."""

    user_id: int
    balance: int


@dataclass(frozen=True)
class HistoryEntry:
    """One ledger entry as the API shows it (amount signed: USE is negative)."""

    type: str
    amount: int
    balance_after: int
    created_at: dt.datetime
    reference: str | None


def check_user_id(user_id: int) -> int:
    """A user id is any positive 64-bit integer; anything else is a ValidationError."""
    if isinstance(user_id, bool) or not isinstance(user_id, int) or not 1 <= user_id <= MAX_ID:
        raise ValidationError("userId must be a positive 64-bit integer")
    return user_id


def get_balance(*, user_id: int) -> Balance:
    """The balance of a user (0 for a user who never charged)."""
    check_user_id(user_id)
    wallet = Wallet.get_or_none(Wallet.user_id == user_id)
    return Balance(user_id, wallet.balance if wallet else 0)


def charge(
    *,
    user_id: int,
    amount: int,
    max_charge: int,
    max_balance: int,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> Balance:
    """Add points: compare-and-set on the wallet version plus a CHARGE ledger row, in one transaction.

    With an Idempotency-Key the ledger row keeps it (UNIQUE per user): the same key again answers
    the first charge's balance and charges nothing, also when both arrive at once; another amount
    is IdempotencyKeyReused. Retries a few times when another writer wins the race, then raises
    ConcurrentUpdate.
    """
    check_user_id(user_id)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise ValidationError("amount must be a positive integer")
    if amount > max_charge:
        raise LimitExceeded(f"amount {amount} exceeds the per-charge limit {max_charge}")
    for attempt in range(CHARGE_ATTEMPTS):
        try:
            with db.atomic():
                first = _charged_with(user_id=user_id, key=idempotency_key, amount=amount)
                if first is not None:
                    return first
                balance = _try_change(user_id=user_id, delta=amount, max_balance=max_balance)
                if balance is not None:
                    LedgerEntry.create(
                        user_id=user_id,
                        type=CHARGE,
                        amount=amount,
                        balance_after=balance,
                        reference=reference,
                        idempotency_key=idempotency_key,
                    )
                    return Balance(user_id, balance)
        except pw.IntegrityError:
            if idempotency_key is None:
                raise
            continue  # a charge with this key committed first: the next attempt answers with it
        time.sleep(random.uniform(0.001, 0.005) * (attempt + 1))
    raise ConcurrentUpdate("the wallet changed concurrently; retry the charge", retry_after=1)


def _charged_with(*, user_id: int, key: str | None, amount: int) -> Balance | None:
    """The first answer of the charge this user's Idempotency-Key made, if any."""
    if key is None:
        return None
    entry = LedgerEntry.get_or_none((LedgerEntry.user_id == user_id) & (LedgerEntry.idempotency_key == key))
    if entry is None:
        return None
    if entry.amount != amount:
        raise IdempotencyKeyReused(f"this Idempotency-Key was used for a charge of {entry.amount}")
    return Balance(user_id, entry.balance_after)


def debit(*, user_id: int, amount: int, reference: str) -> int:
    """Take points inside the caller's transaction; return the new balance.

    Raises InsufficientPoints, or ConcurrentUpdate if the compare-and-set lost (the caller's
    transaction must then roll back and may retry).
    """
    wallet = Wallet.get_or_none(Wallet.user_id == user_id)
    if wallet is None or wallet.balance < amount:
        have = wallet.balance if wallet else 0
        raise InsufficientPoints(f"balance {have} is less than the price {amount}")
    changed = _compare_and_set(wallet, wallet.balance - amount)
    if not changed:
        raise ConcurrentUpdate("the wallet changed concurrently; retry", retry_after=1)
    LedgerEntry.create(
        user_id=user_id, type=USE, amount=-amount, balance_after=wallet.balance - amount, reference=reference
    )
    return wallet.balance - amount


def credit_refund(*, user_id: int, amount: int, reference: str) -> int:
    """Give points back inside the caller's transaction (a REFUND ledger row); return the new balance.

    No MAX_BALANCE check: a refund returns points the wallet held before, and must not be refused.
    Raises ConcurrentUpdate if the compare-and-set lost (the caller's transaction rolls back).
    """
    wallet = Wallet.get(Wallet.user_id == user_id)  # a payer has a wallet
    if not _compare_and_set(wallet, wallet.balance + amount):
        raise ConcurrentUpdate("the wallet changed concurrently; retry", retry_after=1)
    LedgerEntry.create(
        user_id=user_id, type=REFUND, amount=amount, balance_after=wallet.balance + amount, reference=reference
    )
    return wallet.balance + amount


def history(*, user_id: int, limit: int = 100) -> list[HistoryEntry]:
    """A user's ledger entries, newest first."""
    check_user_id(user_id)
    rows = (
        LedgerEntry.select()
        .where(LedgerEntry.user_id == user_id)
        .order_by(LedgerEntry.id.desc())
        .limit(max(1, min(limit, 1000)))
    )
    return [HistoryEntry(r.type, r.amount, r.balance_after, r.created_at, r.reference) for r in rows]


def _try_change(*, user_id: int, delta: int, max_balance: int) -> int | None:
    """One optimistic attempt: the new balance, or None when another writer won."""
    wallet = Wallet.get_or_none(Wallet.user_id == user_id)
    if wallet is None:
        if delta > max_balance:
            raise LimitExceeded(f"balance would exceed the limit {max_balance}")
        try:
            with db.atomic():  # savepoint: a lost insert race must not poison the transaction
                Wallet.insert(user_id=user_id, balance=delta, version=1, updated_at=utcnow()).execute()
        except pw.IntegrityError:
            return None
        return delta
    new_balance = wallet.balance + delta
    if new_balance > max_balance:
        raise LimitExceeded(f"balance would be {new_balance}, above the limit {max_balance}")
    return new_balance if _compare_and_set(wallet, new_balance) else None


def _compare_and_set(wallet: Wallet, new_balance: int) -> bool:
    """UPDATE ... WHERE version = seen; zero rows means a concurrent writer won."""
    rows = (
        Wallet.update(balance=new_balance, version=Wallet.version + 1, updated_at=utcnow())
        .where((Wallet.user_id == wallet.user_id) & (Wallet.version == wallet.version))
        .execute()
    )
    return rows == 1
