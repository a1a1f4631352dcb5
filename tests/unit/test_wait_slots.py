"""`Prefer: wait` takes at most PREFER_WAIT_SLOTS threads of a web process (web/jobs.py _WaitSlots)."""

from __future__ import annotations

import time
from typing import Any

from models.concerts import Schedule, Seat
from models.seed import seed_demo
from tests.support.helpers import make_app, queue_headers, worker_thread

API = "/api/v1"


def test_past_the_wait_slots_a_hold_is_202_at_once_and_its_job_still_answers_right(unit_settings: Any) -> None:
    """With every wait slot taken, `Prefer: wait=5` is declined: 202 with the job's Location at once
    (no thread blocked for up to 5 s), and the job still ends with the reservation; once a slot is
    free the same preference is honoured again (201 directly). Hidden ways it fails: the declined
    request blocking anyway, a lost job, or a slot never given back (every later wait declined)."""
    from web.jobs import _WAITS

    app = make_app(unit_settings.with_(wait_slots=1))
    client = app.test_client()
    concert = seed_demo()
    assert concert is not None
    schedule = Schedule.select().where(Schedule.concert == concert).order_by(Schedule.id).first()
    seats = list(Seat.select().where(Seat.schedule == schedule.id).order_by(Seat.number).limit(2))
    first, second = queue_headers(client, 1, concert), queue_headers(client, 2, concert)

    def hold(headers: dict[str, str], seat: Seat) -> Any:
        body = {"scheduleId": schedule.id, "seatId": seat.id}
        return client.post(f"{API}/reservations", json=body, headers={**headers, "Prefer": "wait=5"})

    with worker_thread():
        assert _WAITS.take(1)  # another request is waiting: the only slot is taken
        try:
            started = time.monotonic()
            declined = hold(first, seats[0])
            answered_in = time.monotonic() - started
        finally:
            _WAITS.give()
        job_url = declined.headers["Location"]
        deadline = time.monotonic() + 10
        while (job := client.get(job_url, headers=first).get_json())["status"] not in ("SUCCEEDED", "FAILED"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        honoured = hold(second, seats[1])

    assert (declined.status_code, declined.get_json()["status"]) == (202, "QUEUED")
    assert answered_in < 1.0
    assert job["status"] == "SUCCEEDED" and job["result"]["seatId"] == seats[0].id
    assert honoured.status_code == 201 and honoured.get_json()["seatId"] == seats[1].id
    assert _WAITS.busy == 0
