"""Payment actor: an adapter from a partition message to models.payments.pay."""

from __future__ import annotations

from config.bootstrap import current
from models import outbox, payments, reservations
from workers.broker import actor
from workers.cache import write_through
from workers.jobs import JobStore, run_job


@actor("pay")
def pay(
    *,
    job_id: str,
    user_id: int,
    reservation_id: int,
    idempotency_key: str | None,
    enqueued_ms: int,
    token_fingerprint: str | None = None,
) -> None:
    """Pay a held reservation; the job's result is the payment. The seat turns RESERVED in the cache."""

    def work(redelivered: bool) -> dict[str, object]:
        payment = payments.pay(
            reservation_id=reservation_id,
            user_id=user_id,
            job_id=job_id,
            idempotency_key=idempotency_key,
            token_fingerprint=token_fingerprint,
        )
        outbox.wake(current().redis)  # committed: the relay publishes PaymentCompleted now, not at its tick
        write_through(reservations.get_reservation(reservation_id=reservation_id, user_id=user_id))
        return payments.payment_json(payment)

    run_job(
        JobStore(current().redis),
        job_id,
        enqueued_ms=enqueued_ms,
        stale_after_s=current().settings.job_stale_after,
        work=work,
        job_type="pay",
    )
