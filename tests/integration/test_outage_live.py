"""Dependencies going away for real: 503 UNAVAILABLE with Retry-After, quickly, and recovery without a restart.

* Redis: the test runs its own `redis-server` on a free port, kills it (-9) and starts it again on
  the same port.
* MariaDB: the shared server cannot be stopped, so the app reaches it through a TCP proxy the
  test controls (`TcpProxy`): `cut()` closes the listener and every connection (the database
  went away: connects are refused, pooled connections see EOF), `stall()` keeps everything open
  but forwards nothing (a frozen server or a dropped network path), `restore()` forwards again.
  Its connections are also `KILL`ed on the server (information_schema.processlist).

Figures printed with `-s` are the ones in docs/RELIABILITY.md ("Graceful behaviour").
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pymysql
import pytest
import redis
from flask.testing import FlaskClient

from config.bootstrap import make_redis
from config.settings import Settings
from models.db import db
from tests.support.env import sibling_database_url
from tests.support.helpers import active_token, make_app, problem_of, run_in_threads
from tests.support.redis_server import RedisServer, own_redis

pytestmark = pytest.mark.integration

GRACE_SUFFIX = "grace"
ANSWER_DEADLINE = 30.0  # seconds: a request against a dead dependency that is not answered by then hangs


class TcpProxy:
    """Forward 127.0.0.1:<port> to a target; cut, stall and restore the path on demand."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._forwarding = threading.Event()
        self.restore()

    def restore(self) -> None:
        """Listen (if cut) and forward again."""
        self._forwarding.set()
        if self._listener is None:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self._listener = listener
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """The server went away: the port refuses connections and every open one is closed."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for s in doomed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stall(self) -> None:
        """The server stops answering: connections stay open (and new ones are accepted), nothing moves."""
        self._forwarding.clear()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._sockets.add(client)
        self._forwarding.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.add(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                self._forwarding.wait()
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def grace_db_url(mysql_url: str, *, port: int | None = None) -> str:
    """This module's own database on the integration server, optionally through a proxy port."""
    return sibling_database_url(mysql_url, GRACE_SUFFIX, port=port)


def timed(fn: Callable[[], Any], deadline: float = ANSWER_DEADLINE) -> tuple[Any, float]:
    """Run fn in a thread and wait for it until `deadline`: its result (or the exception it raised,
    re-raised here) and how long it took, printed as a figure, never asserted against a threshold."""
    outcome: list[Any] = []
    started = time.monotonic()

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(deadline)
    assert outcome, f"no answer within {deadline:.0f} s: the call hangs"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value, time.monotonic() - started


def assert_unavailable(response: Any, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.get_data(as_text=True)}"
    assert problem_of(response)["code"] == "UNAVAILABLE", what
    assert int(response.headers["Retry-After"]) >= 1, what


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with own_redis() as server:
        yield server


@pytest.fixture
def proxy(mysql_url: str) -> Iterator[TcpProxy]:
    u = urlparse(mysql_url)
    p = TcpProxy((u.hostname or "127.0.0.1", u.port or 3306))
    yield p
    p.close()


def _seed(client: FlaskClient) -> tuple[int, int, int]:
    """The demo concert; returns (concert id, schedule id, seat id)."""
    from models.concerts import Seat
    from models.seed import seed_demo

    with db.connection_context():
        seed_demo()
        seat = Seat.select().order_by(Seat.id).first()
        return seat.schedule.concert_id, seat.schedule_id, seat.id


# --- Redis -----------------------------------------------------------------------------------
def test_redis_killed_gives_fast_503s_and_the_app_recovers_when_it_returns(
    mysql_url: str, redis_server: RedisServer
) -> None:
    # Given an app on MariaDB and our own Redis, with an ACTIVE token and a seat to hold
    app = make_app(
        Settings().with_(database_url=grace_db_url(mysql_url), redis_url=redis_server.url, admin_token="t" * 16)
    )
    client = app.test_client()
    try:
        concert_id, schedule_id, seat_id = _seed(client)
        token = active_token(client, 1, concert_id)
        h = {"X-Queue-Token": token}
        assert client.get(f"/api/v1/schedules/{schedule_id}/seats", headers=h).status_code == 200

        # When Redis dies (and the seat map this process read is older than its 0.5 s local copy)
        redis_server.kill()
        time.sleep(0.6)

        # Then every route that needs it answers 503 UNAVAILABLE with Retry-After (no hang)
        redis_routes: list[tuple[str, Callable[[], Any]]] = [
            (
                "POST /queue/tokens",
                lambda: client.post("/api/v1/queue/tokens", json={"userId": 2, "concertId": concert_id}),
            ),
            ("GET /queue/token", lambda: client.get("/api/v1/queue/token", headers=h)),
            ("GET /schedules/{id}/seats", lambda: client.get(f"/api/v1/schedules/{schedule_id}/seats", headers=h)),
            (
                "POST /reservations",
                lambda: client.post(
                    "/api/v1/reservations", json={"scheduleId": schedule_id, "seatId": seat_id}, headers=h
                ),
            ),
            ("GET /jobs/{id}", lambda: client.get("/api/v1/jobs/" + "0" * 32)),
        ]
        slowest = 0.0
        for name, call in redis_routes:
            response, elapsed = timed(call)
            assert_unavailable(response, name)
            slowest = max(slowest, elapsed)
        print(f"\nRedis killed: {len(redis_routes)} routes answered 503 in <= {slowest * 1000:.0f} ms")

        # readiness names Redis and the broker; a database route keeps working
        ready = client.get("/api/v1/readyz")
        assert ready.status_code == 503
        checks = ready.get_json()["checks"]
        assert checks["database"] == "ok"
        assert checks["redis"].startswith("error") and checks["broker"] == "disabled"
        assert client.get("/api/v1/users/1/points").get_json() == {"userId": 1, "balance": 0}

        # When Redis is back on the same port (empty: this one keeps no data)
        redis_server.start()
        back = time.monotonic()

        # Then the same app serves again, without a restart: a new token, the seat map, a hold
        assert client.get("/api/v1/readyz").status_code == 200
        token = active_token(client, 1, concert_id)
        h = {"X-Queue-Token": token}
        assert client.get(f"/api/v1/schedules/{schedule_id}/seats", headers=h).status_code == 200
        accepted = client.post("/api/v1/reservations", json={"scheduleId": schedule_id, "seatId": seat_id}, headers=h)
        assert accepted.status_code == 202, accepted.get_data(as_text=True)
        assert client.get(accepted.headers["Location"]).get_json()["status"] == "QUEUED"
        print(f"Redis back: first request served {(time.monotonic() - back) * 1000:.0f} ms after the restart")
    finally:
        db.close()


def test_a_frozen_redis_is_given_up_on_after_the_read_timeout_not_later() -> None:
    # Given a "server" that accepts connections and never answers (a frozen Redis, a lost network path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    client = make_redis(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
    try:
        # Then a command and a short BLPOP each fail with a timeout (the socket's read timeout), not a hang
        for name, call in (("GET", lambda: client.get("k")), ("BLPOP 1 s", lambda: client.blpop(["k"], timeout=1))):
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                timed(call)
            print(f"\nfrozen Redis: {name} gave up after {time.monotonic() - started:.2f} s")
    finally:
        listener.close()
        for s in held:
            s.close()


# --- MariaDB ---------------------------------------------------------------------------------
@pytest.fixture
def db_app(mysql_url: str, redis_url: str, proxy: TcpProxy) -> Iterator[FlaskClient]:
    """An app whose database is reached through the proxy (Redis db 13 of the shared server)."""
    yield from _app_on(grace_db_url(mysql_url, port=proxy.port), redis_url)


@pytest.fixture
def direct_app(mysql_url: str, redis_url: str) -> Iterator[FlaskClient]:
    """An app connected straight to the database (Redis db 13 of the shared server)."""
    yield from _app_on(grace_db_url(mysql_url), redis_url)


def _app_on(url: str, redis_url: str) -> Iterator[FlaskClient]:
    redis_db13 = redis_url.rsplit("/", 1)[0] + "/13"
    app = make_app(Settings().with_(database_url=url, redis_url=redis_db13, admin_token="t" * 16))
    redis.Redis.from_url(redis_db13).flushdb()
    yield app.test_client()
    db.close()


DB_ROUTES: list[tuple[str, Callable[[FlaskClient], Any]]] = [
    ("GET /concerts", lambda c: c.get("/api/v1/concerts")),
    ("GET /users/{id}/points", lambda c: c.get("/api/v1/users/7/points")),
    ("POST /users/{id}/points/charge", lambda c: c.post("/api/v1/users/7/points/charge", json={"amount": 10})),
    ("GET /users/{id}/points/history", lambda c: c.get("/api/v1/users/7/points/history")),
]


def _warm_pool(client: FlaskClient, threads: int = 6) -> None:
    """Leave several connections in the pool (concurrent requests each check one out)."""
    clients = [client.application.test_client() for _ in range(threads)]
    statuses = run_in_threads([lambda c=c: c.get("/api/v1/users/7/points").status_code for c in clients])
    assert statuses == [200] * threads


def test_database_cut_gives_fast_503s_and_the_first_request_after_it_returns_succeeds(
    db_app: FlaskClient, proxy: TcpProxy
) -> None:
    client = db_app
    _seed(client)
    _warm_pool(client)
    assert client.post("/api/v1/users/7/points/charge", json={"amount": 100}).status_code == 200

    # When the database goes away (port refused, every pooled connection closed)
    proxy.cut()

    # Then each database route answers 503 UNAVAILABLE with Retry-After, fast
    slowest = 0.0
    for name, call in DB_ROUTES:
        response, elapsed = timed(lambda call=call: call(client))  # type: ignore[misc]
        assert_unavailable(response, name)
        slowest = max(slowest, elapsed)
    print(f"\ndatabase cut: {len(DB_ROUTES)} routes answered 503 in <= {slowest * 1000:.0f} ms")
    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"].startswith("error")
    assert ready.get_json()["checks"]["redis"] == "ok"

    # When it returns: the very first request succeeds, and nothing was charged by the refused charge
    proxy.restore()
    first, elapsed = timed(lambda: client.get("/api/v1/users/7/points"))
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.get_json() == {"userId": 7, "balance": 100}
    print(f"database back: first request 200 in {elapsed * 1000:.0f} ms")
    assert client.get("/api/v1/readyz").status_code == 200
    for name, call in DB_ROUTES:
        assert call(client).status_code == 200, name


def test_killed_database_connections_are_replaced_without_a_single_failed_request(
    direct_app: FlaskClient, mysql_url: str
) -> None:
    client = direct_app
    _seed(client)
    _warm_pool(client)
    u = urlparse(mysql_url)
    admin = pymysql.connect(
        host=u.hostname, port=u.port or 3306, user=u.username or "root", password=u.password or "", autocommit=True
    )
    try:
        with admin.cursor() as cur:
            # When every connection of the app is KILLed on the server (as the chaos run does)
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE db=%s AND id<>CONNECTION_ID()",
                (urlparse(grace_db_url(mysql_url)).path.lstrip("/"),),
            )
            victims = [row[0] for row in cur.fetchall()]
            assert len(victims) >= 2, victims  # the pool held several connections
            for thread_id in victims:
                cur.execute(f"KILL {int(thread_id)}")
            deadline = time.monotonic() + 5
            while True:  # KILL returns before the server thread has closed its socket
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE id IN ({})".format(
                        ",".join(str(int(v)) for v in victims)
                    )
                )
                if (cur.fetchone() or (0,))[0] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)

        # Then the next requests, inside the window where the pool skips its ping, all succeed:
        # the dead connections are noticed at checkout (their sockets read EOF) and replaced
        answers = [call(client).status_code for _, call in DB_ROUTES * 3]
        assert answers == [200] * len(DB_ROUTES) * 3
        print(f"\nKILLed {len(victims)} pooled connections: next {len(answers)} requests all 200")
    finally:
        admin.close()


def test_a_frozen_database_is_answered_503_within_the_ping_and_handshake_timeouts(
    db_app: FlaskClient, proxy: TcpProxy
) -> None:
    client = db_app
    _seed(client)
    assert client.get("/api/v1/users/7/points").status_code == 200

    # When the database stops answering, with connections left open (a frozen server, a dropped path)
    proxy.stall()
    try:
        # a query on a connection used a moment ago waits for the query read timeout (10 s), then 503
        in_flight, in_flight_s = timed(lambda: client.get("/api/v1/users/7/points"))
        assert in_flight.status_code == 503
        # a pooled connection idle for 2 s fails its ping within 2 s; a new connection its handshake within 3 s
        time.sleep(2.1)
        answers = [timed(lambda: client.get("/api/v1/users/7/points")) for _ in range(3)]
        for response, _ in answers:
            assert response.status_code == 503
            assert problem_of(response)["code"] == "UNAVAILABLE"
        print(
            f"\nfrozen database: in-flight query 503 after {in_flight_s:.2f} s; next requests 503 after "
            + ", ".join(f"{e:.2f}" for _, e in answers)
            + " s"
        )
    finally:
        proxy.restore()

    # When it answers again, the app serves without a restart
    deadline = time.monotonic() + 10
    while (status := client.get("/api/v1/users/7/points").status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200


# --- pipeline processes ----------------------------------------------------------------------
def test_worker_and_scheduler_survive_a_redis_restart_and_a_database_cut_and_then_finish_every_job(
    mysql_url: str, proxy: TcpProxy, redis_server: RedisServer
) -> None:
    from config.bootstrap import bootstrap
    from models import check
    from models.reservations import Reservation
    from tests.support.pipeline import enqueue_holds, wait_terminal
    from tests.support.procs import cluster, wait_for_leases
    from workers.jobs import SUCCEEDED

    url = grace_db_url(mysql_url, port=proxy.port)
    services = bootstrap(Settings().with_(database_url=url, redis_url=redis_server.url, partitions=16))
    try:
        from models.concerts import Seat
        from models.seed import seed_demo
        from tests.support.helpers import fresh_schema

        fresh_schema()
        seed_demo()
        seats = list(Seat.select().order_by(Seat.id))
        db.close()
        with cluster(url, redis_server.url) as c:
            worker = c.start_worker()
            scheduler = c.start_scheduler()
            wait_for_leases(services.redis, c)

            # When Redis dies for 3 s and comes back empty, then the database is cut for 3 s
            redis_server.kill()
            time.sleep(3)
            redis_server.start()
            proxy.cut()
            time.sleep(3)
            proxy.restore()

            # Then both processes are still running and hold their leases again
            assert worker.alive() and scheduler.alive(), c.logs()
            wait_for_leases(services.redis, c, timeout=30)

            # and 40 holds over 20 seats (two users each) end with exactly 20 reservations
            requests = [(user, seats[user % 20]) for user in range(1, 41)]
            ids = enqueue_holds(services, requests, threads=8)
            records = wait_terminal(services, ids, 60, c)
            assert sum(r["status"] == SUCCEEDED for r in records) == 20
            with db.connection_context():
                live = Reservation.select().where(Reservation.status == "HELD").count()
                assert live == 20
                assert check.violations() == []
            assert worker.alive() and scheduler.alive(), c.logs()
    finally:
        db.close()
