"""Refund actor: an adapter from a partition message to models.refunds.refund_payment.

It runs on the seat's partition, like holds and payments of that seat, so a refund never races
a hold of the seat it frees; the seat turns AVAILABLE in the cache after the commit.
"""

from __future__ import annotations

from config.bootstrap import current
from models import payments, refunds, reservations
from workers.broker import actor
from workers.cache import write_through
from workers.jobs import JobStore, run_job


@actor("refund_payment")
def refund_payment(*, job_id: str, user_id: int, payment_id: int, enqueued_ms: int) -> None:
    """Refund a user's payment; the job's result is the payment (REFUNDED)."""
    s = current().settings

    def work(redelivered: bool) -> dict[str, object]:
        payment = refunds.refund_payment(
            payment_id=payment_id, user_id=user_id, job_id=job_id, cutoff_s=s.refund_cutoff
        )
        write_through(reservations.get_reservation(reservation_id=payment.reservation_id, user_id=user_id))
        return payments.payment_json(payment)

    run_job(
        JobStore(current().redis),
        job_id,
        enqueued_ms=enqueued_ms,
        stale_after_s=s.job_stale_after,
        work=work,
        job_type="refund",
    )
