"""Locust users of the flash-sale benchmark (bench/flash_sale/ starts it; see its __init__.py for the run).

Each `Fan` is one person at a ticket opening, start to finish, once:
join the queue, poll until ACTIVE (every `estimatedWaitSeconds`, clamped to 1..5 s), read the seat map of a
random schedule (the other one if it has no free seat), hold a random free seat with `Prefer: wait=5`
(up to HOLD_ATTEMPTS tries, re-reading the map after a lost race), pay with an Idempotency-Key and
`Prefer: wait=5`, then stop. A fan who pays just stops: the PaymentCompleted event frees the slot (that is
what the consumer is for); a fan who finds no seat, or sees `soldOut` while waiting, leaves the queue
(DELETE /queue/token) so the slot goes to the next waiter. A fan who is done stays idle instead of ending
its greenlet: locust replaces users that end while it is still spawning, and every fan must come once.
When FLASH_USERS fans are done, the run ends (before --run-time).

Expected business answers (409 SEAT_NOT_AVAILABLE on a hold) are successes for locust's statistics and
counted as outcomes; anything unexpected (5xx, 429, 401/403 on an ACTIVE token, timeouts) is a failure.

Env: FLASH_CONCERT_ID, FLASH_SCHEDULES (comma-separated ids), FLASH_USERS (the fans, = locust -u),
FLASH_USER_BASE (first user id, default 1; fans are FLASH_USER_BASE .. +FLASH_USERS-1),
FLASH_MAX_WAIT (seconds a fan waits in the queue before giving up, default 120), FLASH_OUTCOMES (path of a
JSON file this process writes its outcome counts to at the end), FLASH_MODE=bare (GET /bare back to back
instead: the framework floor, same user count), FLASH_MODE=bare_once (each fan GETs /bare once, as its first
request on a new connection, then idles: the floor of a join, which is every fan's first request, at the same
arrival rate).
FLASH_BARE_HOST (the bare Flask app's gunicorn, same config, running beside the service for the whole sale):
every FLASH_BARE_EVERY-th fan (default 10; bench.flash_sale passes 1, every fan) also GETs /bare there with
each of its own requests (started just before it, on its own second connection), named
`/bare (beside <endpoint>)`: the bare route under the same load, in the same run, at the same moments as that
endpoint (the first one, beside the join, is that
connection's first request, as the join is the fan's). These requests are the sale's floor, not part of a
fan's journey.
FLASH_FLOOR_PATH (`/floor/bare`: the service's own gunicorn serving bench/bare_app.py beside the service,
bench/flash_sale/same_server.py): every FLASH_BARE_EVERY-th fan, counted from the middle (other fans than the
ones above), also GETs it with each of its own requests (same moment, on a second connection of its own to the
service), named `/floor/bare (same server, beside <endpoint>)`: the bare route waiting in the same workers,
threads and GIL as that endpoint, at the same moments.
FLASH_FLOOR_EVERY (default 10): the same for the same-server floor's fans (FLASH_BARE_EVERY can be 1, every
fan, for the bare route under the same load). FLASH_ARRIVALS=poisson with FLASH_RATE: each fan waits for its
own arrival (a Poisson process at FLASH_RATE a second) instead of starting with its second's burst.
FLASH_TRACE (a path prefix): every request's start, name and time, written at the end (bench/flash_sale/trace.py).
Every connection a fan's client opens is counted by port (`connections_opened:<port>`, bench/idle_socket.py).
Until 2026-12-03 08:05 UTC the floor request was sent right after the endpoint's answer: in a burst (the
sold-out leaves) it came after the burst the endpoint had waited through, and read low. Until 2026-12-04
21:50 UTC its greenlet was spawned and only started once every greenlet queued before it had run: in a burst
of joins, after the whole burst's joins had started (200-400 ms after its own), and it read low again. Each
pair's start gap is counted (`beside_pairs`, `beside_lag_ms_total`, `beside_lag_ms_max`).
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import os
import random
import time
import uuid
from typing import Any

import gevent
import gevent.event
from locust import FastHttpUser, constant, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.runners import Runner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from bench.idle_socket import install as keep_idle_connections

API = "/api/v1"
CONCERT_ID = int(os.environ.get("FLASH_CONCERT_ID", "1"))
SCHEDULES = [int(s) for s in os.environ.get("FLASH_SCHEDULES", "1").split(",") if s]
USER_BASE = int(os.environ.get("FLASH_USER_BASE", "1"))
USERS = int(os.environ.get("FLASH_USERS", "1"))
MAX_WAIT = float(os.environ.get("FLASH_MAX_WAIT", "120"))
OUTCOMES_FILE = os.environ.get("FLASH_OUTCOMES", "")
BARE = os.environ.get("FLASH_MODE", "") == "bare"
BARE_ONCE = os.environ.get("FLASH_MODE", "") == "bare_once"
HOLD_ATTEMPTS = 3
JOB_POLL = 0.5
JWT_SECRET = os.environ.get("AUTH_JWT_SECRET", "")
BARE_HOST = os.environ.get("FLASH_BARE_HOST", "")
BARE_EVERY = int(os.environ.get("FLASH_BARE_EVERY", "10"))
FLOOR_EVERY = int(os.environ.get("FLASH_FLOOR_EVERY", "10"))
FLOOR_PATH = os.environ.get("FLASH_FLOOR_PATH", "")
ARRIVALS = os.environ.get("FLASH_ARRIVALS", "burst")  # poisson: each fan waits for its own arrival time
RATE = float(os.environ.get("FLASH_RATE", "0"))  # fans a second (locust's -r)
TRACE_FILE = os.environ.get("FLASH_TRACE", "")  # every request's (start, name, ms), to <FLASH_TRACE>.<pid>


def sign(user_id: int) -> str:
    """The bearer token an upstream identity service would give this fan (HS256, 1 h)."""
    import jwt

    return str(jwt.encode({"sub": str(user_id), "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256"))


outcomes: collections.Counter[str] = collections.Counter()
_user_ids = itertools.count(USER_BASE)
_done = gevent.event.Event()
_in_journey = [0]  # fans between joining and stopping, right now


# geventhttpclient dropped every kept-alive connection past fd 1024 (bench/idle_socket.py); each connection
# opened is counted by the port it goes to (the service's, the bare route's)
keep_idle_connections(lambda port: outcomes.update({f"connections_opened:{port}": 1}))

_next_arrival = [0.0]  # time.time() of the next fan's arrival
_arrival_gaps = random.Random(int(os.environ.get("FLASH_SEED", "1")))


def wait_for_arrival() -> None:
    """With FLASH_ARRIVALS=poisson, hold this fan until its arrival: a Poisson process at RATE a second from
    the first fan's. Locust starts each second's RATE fans at once (90 % of them within 230-350 ms, then none for
    the rest of the second); fans spread over the second instead, as independent people do."""
    if ARRIVALS != "poisson" or RATE <= 0:
        return
    now = time.time()
    if not _next_arrival[0]:
        _next_arrival[0] = now
    else:
        _next_arrival[0] += _arrival_gaps.expovariate(RATE)
    if _next_arrival[0] > now:
        gevent.sleep(_next_arrival[0] - now)


class Failed(Exception):
    """An unexpected answer: the request is already marked failed; the fan gives up."""


def _problem_code(resp: Any) -> str:
    try:
        return str(resp.json().get("code", ""))
    except Exception:
        return ""


class Fan(FastHttpUser):
    """One fan's whole journey (a single task run, then idle until the run ends)."""

    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        self.user_id = next(_user_ids)
        self.token = ""
        self.auth = f"Bearer {sign(self.user_id)}"
        self.bare: FastHttpSession | None = None
        if BARE_HOST and not (BARE or BARE_ONCE) and self.user_id % BARE_EVERY == 0:
            self.bare = FastHttpSession(
                base_url=BARE_HOST,
                request_event=self.environment.events.request,
                user=self,
                network_timeout=self.network_timeout,
                connection_timeout=self.connection_timeout,
            )
        self.floor: FastHttpSession | None = None
        if FLOOR_PATH and not (BARE or BARE_ONCE) and self.user_id % FLOOR_EVERY == FLOOR_EVERY // 2:
            self.floor = FastHttpSession(
                base_url=self.host,
                request_event=self.environment.events.request,
                user=self,
                network_timeout=self.network_timeout,
                connection_timeout=self.connection_timeout,
            )

    def _floors_beside(self, name: str, started: list[float]) -> list[gevent.Greenlet]:
        """The same-run floors of the request `name` this fan is sending now (sampled fans): GET the bare
        route at the same moment, on a connection of their own; joined once the request is answered. Each
        floor appends the time it starts its GET to `started`."""

        def get(session: FastHttpSession, path: str, floor_name: str) -> None:
            started.append(time.time())
            session.get(path, name=floor_name)

        greenlets = []
        if self.bare is not None:
            greenlets.append(gevent.spawn(get, self.bare, "/bare", f"/bare (beside {name})"))
        if self.floor is not None:  # the same server's bare route
            greenlets.append(gevent.spawn(get, self.floor, FLOOR_PATH, f"/floor/bare (same server, beside {name})"))
        return greenlets

    # --- one request with an expected set of statuses ------------------------------------------
    def _call(self, method: str, path: str, name: str, ok: tuple[int, ...], **kw: Any) -> tuple[int, Any]:
        if not (BARE or BARE_ONCE):
            kw["headers"] = {"Authorization": self.auth, **(kw.get("headers") or {})}
        floor_starts: list[float] = []
        floors = self._floors_beside(name, floor_starts)
        if not (BARE or BARE_ONCE):
            # gevent.spawn only queues a floor's greenlet behind every greenlet already queued: in a burst,
            # the floor beside a join started after the whole second's joins, 200-400 ms after its own
            # (2026-12-04 21:44 trace). Yielding once starts the floors first and this request right after
            # them; every fan yields alike, sampled or not, so every fan's request starts the same way.
            gevent.sleep(0)
        sent = time.time()
        with self.client.request(method, path, name=name, catch_response=True, **kw) as resp:
            status = resp.status_code
            if status in ok:
                resp.success()
                try:
                    body = resp.json() if resp.content else None
                except Exception:
                    body = None
            else:
                # no answer at all (status 0): the client's own error says why (timeout, reset, refused)
                cause = _problem_code(resp) if status else f"{type(resp.error).__name__}: {resp.error}"[:120]
                resp.failure(f"{status} {cause}".strip())
        gevent.joinall(floors)
        for floor_start in floor_starts:  # how far from its endpoint's start each floor started, ms
            lag = abs(floor_start - sent) * 1000
            outcomes["beside_pairs"] += 1
            outcomes["beside_lag_ms_total"] += int(lag)
            outcomes["beside_lag_ms_max"] = max(outcomes["beside_lag_ms_max"], int(lag))
        if status in ok:
            return status, body
        outcomes[f"failed:{name}:{status}"] += 1
        raise Failed(name)

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"X-Queue-Token": self.token, **extra}

    def _wait_job(self, job_id: str) -> tuple[str, Any]:
        """Poll a job (after a `Prefer: wait` that came back 202) until it is terminal."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            gevent.sleep(JOB_POLL)
            _, job = self._call("GET", f"{API}/jobs/{job_id}", "/jobs/[id]", (200,))
            if job["status"] in ("SUCCEEDED", "FAILED"):
                return job["status"], job["result"] if job["status"] == "SUCCEEDED" else job["error"]
        outcomes["job_never_finished"] += 1
        raise Failed("job")

    # --- the journey -----------------------------------------------------------------------------
    @task
    def journey(self) -> None:
        if BARE:
            self.client.get("/bare", name="/bare")
            return
        wait_for_arrival()
        if BARE_ONCE:  # one first request per fan, then idle (as a fan waiting after its join)
            self.client.get("/bare", name="/bare (first request)")
            outcomes["done"] += 1
            if outcomes["done"] >= USERS:
                _done.set()
            gevent.sleep(86_400)
            return
        if self.user_id >= USER_BASE + USERS:  # never expected: locust spawned more than FLASH_USERS
            outcomes["surplus_user"] += 1
        else:
            _in_journey[0] += 1
            outcomes["max_fans_in_journey"] = max(outcomes["max_fans_in_journey"], _in_journey[0])
            try:
                self._journey()
            except Failed:
                outcomes["gave_up_after_failure"] += 1
            finally:
                _in_journey[0] -= 1
            outcomes["done"] += 1
            if outcomes["done"] >= USERS:
                _done.set()
        gevent.sleep(86_400)  # idle, not ended: an ended user is respawned while spawning goes on

    def _journey(self) -> None:
        _, tok = self._call(
            "POST",
            f"{API}/queue/tokens",
            "/queue/tokens",
            (200, 201),
            json={"userId": self.user_id, "concertId": CONCERT_ID},
        )
        self.token = tok["token"]
        outcomes["joined"] += 1
        outcomes["active_on_join" if tok["status"] == "ACTIVE" else "waiting_on_join"] += 1
        if tok["status"] == "PREQUEUED":  # a fair start's pre-queue (bench.flash_sale --fair-start)
            outcomes["prequeued_on_join"] += 1
        if tok["status"] != "ACTIVE":
            estimate = int(tok.get("estimatedWaitSeconds") or 0)
            outcomes["estimate_on_join_s_total"] += estimate
            outcomes["estimate_on_join_s_max"] = max(outcomes["estimate_on_join_s_max"], estimate)
        started, polls = time.monotonic(), 0
        while tok["status"] != "ACTIVE":
            if tok.get("soldOut"):
                outcomes["sold_out_while_waiting"] += 1
                self._leave()
                return
            if time.monotonic() - started > MAX_WAIT:
                outcomes["gave_up_waiting"] += 1
                self._leave()
                return
            gevent.sleep(int(tok.get("pollAfterMs") or 1000) / 1000)  # paced: the server says when
            status, body = self._call("GET", f"{API}/queue/token", "/queue/token", (200, 401), headers=self._headers())
            outcomes["polls"] += 1
            polls += 1
            if status == 401:  # dropped (not expected while polling as paced)
                outcomes["token_lost_while_waiting"] += 1
                return
            tok = body
        outcomes["admitted"] += 1
        waited = time.monotonic() - started
        outcomes["admitted_after_s_total_ms"] += int(waited * 1000)
        outcomes["polls_by_admitted"] += polls
        if waited > 0:  # what a fan polling every 1 s would have sent over the same wait
            outcomes["fixed_1s_polls_for_admitted"] += math.ceil(waited)
        held = self._hold()
        if held is None:
            self._leave()
            return
        self._pay(held)

    def _free_seats(self) -> tuple[int, list[int]]:
        """(schedule id, free seat ids): a random schedule first, the other one if it is full."""
        order = random.sample(SCHEDULES, len(SCHEDULES))
        for schedule_id in order:
            _, seat_map = self._call(
                "GET",
                f"{API}/schedules/{schedule_id}/seats?status=AVAILABLE",
                "/schedules/[id]/seats",
                (200,),
                headers=self._headers(),
            )
            free = [s["seatId"] for s in seat_map["seats"] if s["status"] == "AVAILABLE"]
            if free:
                return schedule_id, free
        return 0, []

    def _hold(self) -> dict[str, Any] | None:
        for _ in range(HOLD_ATTEMPTS):
            schedule_id, free = self._free_seats()
            if not free:
                outcomes["no_free_seat_seen"] += 1
                return None
            status, body = self._call(
                "POST",
                f"{API}/reservations",
                "/reservations",
                (201, 202, 409),
                json={"scheduleId": schedule_id, "seatId": random.choice(free)},
                headers=self._headers(Prefer="wait=5"),
            )
            if status == 202:
                outcomes["hold_answered_202"] += 1
                state, result = self._wait_job(body["jobId"])
                if state == "SUCCEEDED":
                    status, body = 201, result
                else:
                    status, body = int(result.get("status", 409)), result
            if status == 201:
                outcomes["held"] += 1
                return body  # type: ignore[no-any-return]
            code = body.get("code", "") if isinstance(body, dict) else ""
            outcomes[f"hold_lost:{code}"] += 1
            if code != "SEAT_NOT_AVAILABLE":
                return None
        outcomes["lost_every_attempt"] += 1
        return None

    def _pay(self, reservation: dict[str, Any]) -> None:
        status, body = self._call(
            "POST",
            f"{API}/payments",
            "/payments",
            (201, 202),
            json={"reservationId": reservation["reservationId"]},
            headers=self._headers(Prefer="wait=5", **{"Idempotency-Key": uuid.uuid4().hex}),
        )
        if status == 202:
            outcomes["pay_answered_202"] += 1
            state, body = self._wait_job(body["jobId"])
            if state != "SUCCEEDED":
                outcomes[f"pay_failed:{body.get('code', '')}"] += 1
                return
        outcomes["paid"] += 1

    def _leave(self) -> None:
        self._call("DELETE", f"{API}/queue/token", "/queue/token [DELETE]", (204, 401), headers=self._headers())
        outcomes["left"] += 1


# --- the run ends when every fan is done; outcomes are written at the end ---------------------------
@events.test_start.add_listener
def _quit_when_every_fan_is_done(environment: Any, **_: Any) -> None:
    if BARE or isinstance(environment.runner, WorkerRunner):
        return

    def watch(runner: Runner) -> None:
        _done.wait()
        # locust's CSV writer rewrites <prefix>_stats.csv once a second (CSV_STATS_INTERVAL_SEC) and not at
        # quit: the requests of the last second were missing (~470 polls and leaves in 4 of 11 runs on
        # 2026-12-04, the last wave of sold-out fans). Quit after its next pass.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)
        runner.quit()

    gevent.spawn(watch, environment.runner)


_trace: list[tuple[float, str, float]] = []


@events.request.add_listener
def _trace_request(name: str, response_time: float, start_time: float = 0.0, **_: Any) -> None:
    if TRACE_FILE:
        _trace.append((round(start_time, 4), name, round(response_time, 2)))


@events.quitting.add_listener
def _write_trace(environment: Any, **_: Any) -> None:
    if TRACE_FILE and _trace:
        with open(f"{TRACE_FILE}.{os.getpid()}", "w") as fh:
            json.dump(_trace, fh)


@events.quitting.add_listener
def _write_outcomes(environment: Any, **_: Any) -> None:
    if OUTCOMES_FILE and not BARE:
        with open(f"{OUTCOMES_FILE}.{os.getpid()}", "w") as fh:
            json.dump(dict(outcomes), fh)
