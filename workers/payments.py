"""Payment actor: an adapter from a partition message to models.payments.pay."""

from __future__ import annotations

from config.bootstrap import current
from models import payments
from workers.broker import actor
from workers.jobs import JobStore, run_job


@actor("pay")
def pay(*, job_id: str, user_id: int, reservation_id: int, idempotency_key: str | None, enqueued_ms: int) -> None:
    """Pay a held reservation; the job's result is the payment."""
    run_job(
        JobStore(current().redis),
        job_id,
        enqueued_ms=enqueued_ms,
        stale_after_s=current().settings.job_stale_after,
        work=lambda: payments.payment_json(
            payments.pay(reservation_id=reservation_id, user_id=user_id, job_id=job_id, idempotency_key=idempotency_key)
        ),
    )
