"""The load: client threads playing fans through charge, queue, hold, pay or cancel."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from typing import Any

import requests

from bench.chaos import Plan, Record
from bench.chaos.service import Service
from tests.support.identity import sign


class Fan:
    """One user going through the flash sale on one thread."""

    def __init__(
        self,
        base: str,
        user_id: int,
        rec: Record,
        service: Service,
        rng: random.Random,
        cancel_rate: float,
        refund_rate: float = 0.0,
    ) -> None:
        self.base = base
        self.cancel_rate = cancel_rate
        self.refund_rate = refund_rate
        self.user = user_id
        self.rec = rec
        self.service = service
        self.rng = rng
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {sign(user_id, ttl=6 * 3600)}"  # the fan is signed in
        self.token: str | None = None

    # HTTP with the client's own retry rules --------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One request: (status, JSON body); status 0 when the connection failed or timed out."""
        hdrs = dict(headers or {})
        if self.token:
            hdrs.setdefault("X-Queue-Token", self.token)
        try:
            resp = self.http.request(method, self.base + path, json=body, headers=hdrs, timeout=10)
        except requests.RequestException as exc:
            self.rec.count(0, f"{method} {path}", str(exc))
            return 0, None
        text = resp.text
        self.rec.count(resp.status_code, f"{method} {path}", text)
        try:
            data = resp.json() if text else None
        except ValueError:
            data = text
        if resp.status_code == 429:
            time.sleep(float(resp.headers.get("Retry-After", "1") or 1))
        return resp.status_code, data

    def retrying(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, tries: int = 12
    ) -> tuple[int, Any]:
        """Repeat while the answer is a connection error, 5xx or 429 (the request must be safe to repeat)."""
        status, data = 0, None
        for attempt in range(tries):
            status, data = self.call(method, path, body, headers)
            if status != 0 and status < 500 and status != 429:
                return status, data
            time.sleep(min(2.0, 0.2 * (attempt + 1)))
        return status, data

    # the flow ---------------------------------------------------------------------------------
    def run(self, deadline: float) -> None:
        with self.rec.lock:
            self.rec.users += 1
        amount = 100_000
        t = time.monotonic()
        if not self.charge(amount):
            return self.give_up("charge")
        self.rec.timed("charge", t)
        t = time.monotonic()
        if not self.join_and_wait(deadline):
            return self.give_up("queue")
        self.rec.timed("queue", t)
        t = time.monotonic()
        reservation = self.hold(deadline)
        if reservation is None:
            self.leave()
            return self.give_up("hold")
        self.rec.timed("hold", t)
        t = time.monotonic()
        if self.rng.random() < self.cancel_rate:
            self.cancel(reservation["reservationId"])
            self.leave()
            self.rec.timed("cancel", t)
            return None
        self.pay(reservation, deadline)
        self.rec.timed("pay", t)
        return None

    def give_up(self, stage: str) -> None:
        with self.rec.lock:
            self.rec.gave_up[stage] += 1

    def charge(self, amount: int) -> bool:
        """Charge once; after an unclear answer, read the balance to learn whether it applied."""
        for _ in range(10):
            status, _ = self.call("POST", f"/users/{self.user}/points/charge", {"amount": amount})
            if status == 200:
                with self.rec.lock:
                    self.rec.charged[self.user] += amount
                return True
            if status not in (0, 429) and status < 500:
                return False
            time.sleep(0.5)
            st, body = self.retrying("GET", f"/users/{self.user}/points")
            if st == 200 and body["balance"] == amount:  # the unclear charge did apply
                with self.rec.lock:
                    self.rec.charged[self.user] += amount
                return True
            if st != 200:  # cannot tell: the wallet check allows exactly this amount either way
                with self.rec.lock:
                    self.rec.charge_unknown[self.user] += amount
                return False
        return False

    def join_and_wait(self, deadline: float) -> bool:
        """Join the queue (again if the token is lost) and poll until ACTIVE."""
        give_up_at = min(deadline + 20, time.monotonic() + 90)
        while time.monotonic() < give_up_at:
            if self.token is None:
                self.token = None
                status, body = self.retrying(
                    "POST", "/queue/tokens", {"userId": self.user, "concertId": self.service.concert_id}
                )
                if status not in (200, 201):
                    return False
                self.token = body["token"]
                if body["status"] == "ACTIVE":
                    return True
                if body.get("soldOut"):
                    return False
            time.sleep(0.4)
            status, body = self.retrying("GET", "/queue/token")
            if status == 401:
                self.token = None  # expired or lost: join again
            elif status == 200:
                if body["status"] == "ACTIVE":
                    return True
                if body.get("soldOut"):
                    self.leave()
                    return False
        self.leave()
        return False

    def leave(self) -> None:
        if self.token:
            self.retrying("DELETE", "/queue/token", tries=3)
            self.token = None

    def wait_job(self, job_id: str, timeout: float = 45.0) -> dict[str, Any] | None:
        """Poll GET /jobs/{id} until terminal; None if it is still open after `timeout`."""
        end = time.monotonic() + timeout
        misses = 0
        while time.monotonic() < end:
            status, body = self.call("GET", f"/jobs/{job_id}")
            if status == 200 and body["status"] in ("SUCCEEDED", "FAILED"):
                return dict(body)
            if status == 404:
                misses += 1
                if misses >= 20:
                    with self.rec.lock:
                        self.rec.job_404.add(job_id)
                    return None
            time.sleep(0.25)
        return None

    def accept(self, job_id: str, kind: str) -> None:
        with self.rec.lock:
            self.rec.accepted[job_id] = kind

    def hold(self, deadline: float) -> dict[str, Any] | None:
        """Hold a random free seat: up to 5 tries (taken seats, unavailable jobs)."""
        sid = self.service.schedule_id
        for _ in range(5):
            if time.monotonic() > deadline + 20:
                return None
            status, body = self.retrying("GET", f"/schedules/{sid}/seats?status=AVAILABLE")
            if status == 401 or status == 403:
                self.token = None
                if not self.join_and_wait(deadline):
                    return None
                continue
            if status != 200 or not body["seats"]:
                return None
            seat = self.rng.choice(body["seats"])
            status, body = self.retrying("POST", "/reservations", {"scheduleId": sid, "seatId": seat["seatId"]})
            if status != 202:
                if status in (401, 403):
                    self.token = None
                    if not self.join_and_wait(deadline):
                        return None
                continue
            self.accept(body["jobId"], "RESERVATION")
            job = self.wait_job(body["jobId"])
            if job and job["status"] == "SUCCEEDED":
                with self.rec.lock:
                    self.rec.holds += 1
                return dict(job["result"])
        return None

    def cancel(self, reservation_id: int) -> None:
        status, body = self.retrying("DELETE", f"/reservations/{reservation_id}")
        if isinstance(body, dict) and body.get("jobId") and status == 202:
            self.accept(body["jobId"], "RESERVATION")
            self.wait_job(body["jobId"])
        elif status == 200 or (isinstance(body, dict) and body.get("jobId")):
            with self.rec.lock:
                self.rec.answered_terminal += 1
        with self.rec.lock:
            self.rec.cancels += 1

    def pay(self, reservation: dict[str, Any], deadline: float) -> None:
        """Pay; every retry of one attempt reuses its Idempotency-Key (a new key only after a FAILED job)."""
        rid = reservation["reservationId"]
        for _attempt in range(3):
            key = f"chaos-{self.user}-{uuid.uuid4().hex}"
            job_id = None
            for _ in range(25):
                status, body = self.call("POST", "/payments", {"reservationId": rid}, {"Idempotency-Key": key})
                if status == 202:
                    job_id = body["jobId"]
                    break
                if status == 401:  # token gone (e.g. the payment went through and freed the slot): join again
                    self.token = None
                    if not self.join_and_wait(deadline + 30):
                        break
                    continue
                if status == 0 or status >= 500 or status == 429:
                    time.sleep(0.5)
                    continue
                if isinstance(body, dict) and body.get("code") == "ALREADY_PAID":
                    self.paid_now(rid, reservation, None)
                    with self.rec.lock:
                        self.rec.already_paid_answers += 1
                    return self.leave()
                return self.leave()  # expired hold, not held, ...: nothing charged
            if job_id is None:
                return self.leave()
            self.accept(job_id, "PAYMENT")
            job = self.wait_job(job_id)
            if job is None:
                return self.leave()
            if job["status"] == "SUCCEEDED":
                self.paid_now(rid, reservation, job["result"])
                self.token = None  # the consumer expires it
                if self.rng.random() < self.refund_rate:
                    self.refund(int(job["result"]["paymentId"]), int(job["result"]["amount"]), reservation)
                return None
            code = (job.get("error") or {}).get("code")
            if code == "ALREADY_PAID":
                self.paid_now(rid, reservation, None)
                with self.rec.lock:
                    self.rec.already_paid_answers += 1
                return self.leave()
            if code != "UNAVAILABLE":
                return self.leave()
        return self.leave()

    def refund(self, payment_id: int, amount: int, reservation: dict[str, Any]) -> None:
        """Refund a paid seat (identity only); after unclear answers, read the payment to learn the outcome."""
        with self.rec.lock:
            self.rec.refunds_requested += 1
        path = f"/payments/{payment_id}/refund"
        outcome: str | None = None
        for _ in range(12):
            status, body = self.call("POST", path)
            if status == 202:
                self.accept(body["jobId"], "REFUND")
                job = self.wait_job(body["jobId"])
                if job is None:
                    break
                if job["status"] == "SUCCEEDED":
                    outcome = "REFUNDED"
                    break
                outcome = (job.get("error") or {}).get("code")
                if outcome in ("UNAVAILABLE", "CONCURRENT_UPDATE"):
                    outcome = None
                    time.sleep(0.5)
                    continue
                break
            if status == 0 or status >= 500 or status == 429:
                time.sleep(0.5)
                continue
            if status == 200 or (isinstance(body, dict) and body.get("jobId")):
                with self.rec.lock:
                    self.rec.answered_terminal += 1  # the route waited for the job and answered its outcome
            outcome = "REFUNDED" if status == 200 else (body or {}).get("code", str(status))
            break
        if outcome != "REFUNDED":  # an earlier attempt whose answer was lost may have refunded it
            status, body = self.retrying("GET", f"/payments/{payment_id}")
            if status == 200 and body["status"] == "REFUNDED":
                outcome = "REFUNDED"
            elif status != 200:
                outcome = None
        with self.rec.lock:
            if outcome == "REFUNDED":
                self.rec.refunded[self.user].append((payment_id, amount))
            elif outcome is None:
                self.rec.refund_unknown[payment_id] = (self.user, amount)
            else:
                self.rec.refund_refused[outcome] += 1
            if outcome in ("REFUNDED", None):  # the seat is on sale again (or may be: then not counted)
                with contextlib.suppress(ValueError):
                    self.rec.seats_paid[int(reservation["seatId"])].remove(self.user)

    def paid_now(self, rid: int, reservation: dict[str, Any], result: dict[str, Any] | None) -> None:
        amount = int(result["amount"]) if result else int(reservation["price"])
        with self.rec.lock:
            if all(r != rid for r, _ in self.rec.paid[self.user]):
                self.rec.paid[self.user].append((rid, amount))
                self.rec.seats_paid[int(reservation["seatId"])].append(self.user)


def load(service: Service, plan: Plan, rec: Record, seed: int, stop_at: float) -> list[threading.Thread]:
    """Start the client threads; each plays one fan after another until `stop_at`."""
    next_user = iter(range(1, 10**9))
    lock = threading.Lock()

    def run(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < stop_at:
            with lock:
                user = next(next_user)
            fan = Fan(service.base, user, rec, service, rng, plan.cancel_rate, plan.refund_rate)
            try:
                fan.run(stop_at)
            except Exception as exc:  # a client bug must not stop the run; it shows in the numbers
                rec.count(-1, "client", repr(exc))

    threads = [threading.Thread(target=run, args=(n,), name=f"fan-{n}", daemon=True) for n in range(plan.threads)]
    for t in threads:
        t.start()
    return threads
