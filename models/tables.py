"""Every table, in creation order (migrations, tests and the checker use this list)."""

from __future__ import annotations

from models.concerts import Concert, Schedule, Seat
from models.draws import FairDrawEntrant
from models.outbox import OutboxEvent
from models.payments import Payment
from models.points import LedgerEntry, Wallet
from models.reservations import Reservation

ALL_TABLES = [Concert, Schedule, Seat, Wallet, LedgerEntry, Reservation, Payment, OutboxEvent, FairDrawEntrant]
