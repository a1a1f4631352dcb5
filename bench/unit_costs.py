"""The cost of one fan: Redis round trips, Redis server time and web CPU per operation.

Measured in-process (the WSGI app called directly, no HTTP server, so the web CPU is the app's
own) against a real Redis (BENCH_REDIS_URL) and a SQLite file, for: join (issue), a waiting poll,
an early poll, the cached seat map, /healthz and a bare Flask route in the same run. A waiting
poll ("poll", "early_poll") is Redis's (its fans are near the front, or the poll memo is off);
"memo_poll" is a far-back fan's on-time poll answered by the web process's poll memo
(models/poll_memo.py; POLL_MEMO, on by default; not in checkouts before it).

  Redis round trips   the Redis client's socket writes (a pipeline is one), counted in-process
  Redis commands      commands MONITOR shows from clients (commands a Lua script runs are not counted)
  Redis server µs     INFO commandstats usec delta (CONFIG RESETSTAT before each operation)
  web CPU µs          time.process_time() per request over --n requests (includes the Redis client)

Then on MariaDB (BENCH_DATABASE_URL, default mysql://root@127.0.0.1:3306/bench_unit_costs, its
tables recreated): the SQL statements (the session's `Questions` and `Com_*` deltas) and the ms
of a hold and of a payment as the worker's actors run them, over --db-n of each.

With --before DIR it runs the same measurement on another checkout (e.g. `git archive <commit> |
tar -x -C DIR`) in a child process, and prints both side by side: same machine, same run.

    .venv/bin/python -m bench.unit_costs [--n 10000] [--db-n 500] [--before /tmp/old-main --before-name 9110c11]

A checkout from before swagger-ui-py (e.g. 9110c11) imports `swagger_ui_bundle`, no longer installed:
put a one-line `swagger_ui_bundle.py` (`swagger_ui_path = "/tmp"`) in its root; the docs route is not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "unit_costs.json"
OPS = ("bare", "healthz", "issue", "poll", "early_poll", "memo_poll", "seat_map")


def _environ(path: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None) -> Any:
    from werkzeug.test import EnvironBuilder

    return EnvironBuilder(path=path, method=method, headers=headers or {}, json=body).get_environ()


# the app's AUTH_JWT_SECRET (kept here, not imported: --before runs this module in an older checkout)
BENCH_JWT_SECRET = "bench-jwt-secret-for-local-benchmarks-0123456789"


def bearer(user_id: int) -> dict[str, str]:
    """The `Authorization` header of a signed-in fan (HS256 with BENCH_JWT_SECRET)."""
    import jwt

    claims = {"sub": str(user_id), "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, BENCH_JWT_SECRET, algorithm='HS256')}"}


def _call(app: Any, environ: Any) -> str:
    status: list[str] = []
    body = app(environ, lambda s, h, e=None: status.append(s))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return status[0]


def _cpu_us(app: Any, environs: list[Any]) -> tuple[float, dict[str, int]]:
    """Mean process CPU µs per request, and the statuses seen."""
    statuses: dict[str, int] = {}
    started = time.process_time()
    for env in environs:
        s = _call(app, env)
        statuses[s] = statuses.get(s, 0) + 1
    return (time.process_time() - started) / len(environs) * 1e6, statuses


class Monitor:
    """Counts the commands Redis receives from clients (not those a script runs)."""

    def __init__(self, url: str) -> None:
        import redis

        self.lines: list[dict[str, Any]] = []
        self._mon = redis.Redis.from_url(url).monitor()
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.3)

    def _read(self) -> None:
        import redis

        with contextlib.suppress(redis.ConnectionError), self._mon as m:  # closed by the bench when done
            for cmd in m.listen():
                self.lines.append(cmd)

    def count(self, run: Any) -> tuple[int, int, list[str]]:
        """(round trips: the client's socket writes, a pipeline being one; commands; the commands)."""
        from redis.connection import AbstractConnection

        sends = [0]
        original = AbstractConnection.send_packed_command

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            sends[0] += 1
            original(conn, command, check_health)

        time.sleep(0.2)
        self.lines.clear()
        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        try:
            run()
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
        time.sleep(0.3)
        calls = [c for c in self.lines if c.get("client_type") != "lua"]
        return sends[0], len(calls), [str(c["command"])[:80] for c in calls]


def measure(n: int, redis_url: str) -> dict[str, Any]:
    """Every figure of this checkout (run inside it)."""
    import redis

    sys.path.insert(0, os.getcwd())
    from bench.bare_app import app as bare
    from config.settings import Settings
    from web import create_app

    db_file = Path(tempfile.mkdtemp()) / "costs.db"
    settings = Settings().with_(
        database_url=f"sqlite:///{db_file}",
        redis_url=redis_url,
        admin_token="x",
        rate_issue_ip="1000000/second",
        rate_issue_user="1000000/second",  # each fan joins once, but older checkouts count per body userId
    )
    with contextlib.suppress(TypeError):  # checkouts before the identity have no such setting
        settings = settings.with_(auth_jwt_secret=BENCH_JWT_SECRET)
    app = create_app(settings)
    try:
        from tests.support.helpers import fresh_schema
    except ImportError:  # older checkouts
        from tests.conftest import fresh_schema  # type: ignore[no-redef]
    fresh_schema()
    from models.seed import seed_demo

    concert = seed_demo()
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    room = app.extensions["waiting_room"]
    k = 20  # requests per operation under MONITOR
    tokens = [room.issue(user_id=u, concert_id=concert).token for u in range(1, n + k + 101)]
    active, on_time, watched = tokens[0], tokens[100 : 100 + n], tokens[100 + n :]
    # every fan polled "now" and is due "now" (the scripts read the server's clock): on-time polls
    server_ms = int(r.time()[0]) * 1000
    for token in tokens[100:]:
        r.hset(f"wr:{{c:{concert}}}:t:{token}", "p", f"{server_ms}:{server_ms}")
    poll, seats = "/api/v1/queue/token", "/api/v1/schedules/1/seats"

    users = {t: u for u, t in enumerate(tokens, start=1)}  # each fan is signed in as its token's user
    memo = getattr(room, "memo", None)  # the poll memo: off for "poll" and "early_poll" (Redis's polls)
    far: list[str] = []  # fans far enough back for the memo (ranks n + k + 1 on)
    if memo is not None:  # remembered as they join, as a web process remembers its fans
        first = len(tokens) + 1
        far = [room.issue(user_id=u, concert_id=concert).token for u in range(first, first + n + k)]
        users.update({t: u for u, t in enumerate(far, start=first)})
        for fan in memo._fans.values():  # every remembered fan is due now (its pollAfterMs passed)
            fan.last = fan.due = time.monotonic() - 1
        room.memo = None

    def envs(op: str, fans: list[str], first_user: int) -> list[Any]:
        if op in ("poll", "early_poll", "memo_poll"):  # early_poll: the same tokens again, right after `poll`
            return [_environ(poll, headers={"X-Queue-Token": t, **bearer(users[t])}) for t in fans]
        if op == "issue":
            ids = [10**9 + first_user + i for i in range(len(fans))]
            # the body's userId (the signed-in user's own) is what checkouts before the JWT read
            return [
                _environ("/api/v1/queue/tokens", "POST", bearer(u), {"concertId": concert, "userId": u}) for u in ids
            ]
        path = {"bare": "/bare", "healthz": "/api/v1/healthz", "seat_map": seats}[op]
        return [_environ(path, headers={"X-Queue-Token": active, **bearer(1)}) for _ in fans]

    target = {op: bare if op == "bare" else app for op in OPS}
    watched_for = {"memo_poll": far[:k]}
    timed_for = {"memo_poll": far[k:]}
    _call(app, envs("seat_map", [active], 0)[0])  # the seat map is cached from here on
    # one poll first (an ACTIVE token: nothing written): the connection it takes is open before counting,
    # as in a serving process (a connection's HELLO/SELECT/CLIENT SETINFO are once per connection)
    _call(app, envs("poll", [active], 0)[0])
    out: dict[str, Any] = {}
    mon = Monitor(redis_url)
    for op in OPS:
        if op == "memo_poll" and memo is None:
            continue
        room.memo = memo if op == "memo_poll" else None
        batch = envs(op, watched_for.get(op, watched), 0)
        trips, calls, sample = mon.count(lambda batch=batch, op=op: [_call(target[op], e) for e in batch])
        out[op] = {"redis_round_trips": trips / k, "redis_commands": calls / k, "sample_commands": sample[:8]}
    mon._mon.connection.disconnect()  # MONITOR slows the server: off for the timed pass
    time.sleep(0.3)
    for op in OPS:
        if op == "memo_poll" and memo is None:
            continue
        room.memo = memo if op == "memo_poll" else None
        batch = envs(op, timed_for.get(op, on_time), k)
        r.config_resetstat()
        cpu, statuses = _cpu_us(target[op], batch)
        if op == "memo_poll":  # the keep-alive of these polls (the flush thread wrote some already)
            started = time.process_time()
            memo.flush()
            cpu += (time.process_time() - started) / len(batch) * 1e6
        stats = r.info("commandstats")
        usec = sum(v["usec"] for key, v in stats.items() if key not in ("cmdstat_config", "cmdstat_info"))
        out[op].update(web_cpu_us=round(cpu, 1), redis_server_us=round(usec / n, 2), statuses=statuses)
    room.memo = memo
    return out


COUNTED = ("Questions", "Com_select", "Com_insert", "Com_update", "Com_delete", "Com_commit", "Com_rollback")


def _session_status() -> dict[str, int]:
    from models.db import db

    names = ", ".join(f"'{n}'" for n in COUNTED)
    rows = db.execute_sql(f"SHOW SESSION STATUS WHERE Variable_name IN ({names})").fetchall()
    return {name: int(value) for name, value in rows}


def db_costs(n: int, db_url: str) -> dict[str, Any]:
    """Statements and ms per hold and per payment on MariaDB, as the worker's actors run them.

    A hold is reservations.hold_seat on its first attempt (redelivered=False); a payment is
    payments.pay plus the reservation read the actor makes for the cache write-through.
    Statements are the session's `Questions` delta (every statement the client sent, COMMIT
    included), minus what reading the counters itself costs; by kind from the `Com_*` deltas.
    """
    import datetime as dt
    import uuid

    from models import payments, points, reservations, schema
    from models.concerts import NewSchedule, Seat, create_concert
    from models.db import db, init_database, utcnow

    init_database(db_url)
    schema.drop_all()
    schema.migrate()
    day = utcnow() + dt.timedelta(days=30)
    _, [view] = create_concert(title="Costs", venue="Hall", schedules=[NewSchedule(day, n, 1_000)])
    seats = [s.id for s in Seat.select(Seat.id).where(Seat.schedule == view.schedule_id).order_by(Seat.id)]
    users = range(1, n + 1)
    for user in users:
        points.charge(user_id=user, amount=10_000, max_charge=10**9, max_balance=10**12)
    db.connect(reuse_if_open=True)
    baseline = [_session_status(), _session_status()]
    overhead = {k: baseline[1][k] - baseline[0][k] for k in COUNTED}

    def measured(op: Any) -> tuple[dict[str, int], float]:
        before = _session_status()
        started = time.perf_counter()
        op()
        ms = (time.perf_counter() - started) * 1000
        after = _session_status()
        return {k: after[k] - before[k] - overhead[k] for k in COUNTED}, ms

    out: dict[str, Any] = {}
    held: list[int] = []
    for kind in ("hold", "payment"):
        totals = dict.fromkeys(COUNTED, 0)
        times: list[float] = []
        for i, user in enumerate(users):
            if kind == "hold":

                def op(user: int = user, seat: int = seats[i]) -> None:
                    held.append(
                        reservations.hold_seat(
                            user_id=user,
                            schedule_id=view.schedule_id,
                            seat_id=seat,
                            job_id=uuid.uuid4().hex,
                            hold_ttl=600,
                            max_holds=4,
                            redelivered=False,
                        ).reservation_id
                    )
            else:

                def op(user: int = user, rid: int = held[i]) -> None:
                    payments.pay(reservation_id=rid, user_id=user, job_id=uuid.uuid4().hex)
                    reservations.get_reservation(reservation_id=rid, user_id=user)  # the write-through's read

            counts, ms = measured(op)
            times.append(ms)
            for key in COUNTED:
                totals[key] += counts[key]
        ordered = sorted(times)
        out[kind] = {
            "statements": round(totals["Questions"] / n, 2),
            "by_kind": {k.removeprefix("Com_"): round(totals[k] / n, 2) for k in COUNTED[1:] if totals[k]},
            "ms_p50": round(ordered[len(ordered) // 2], 2),
            "ms_mean": round(sum(times) / n, 2),
        }
    db.close()
    return out


def journey(n: int, redis_url: str, db_url: str) -> dict[str, Any]:
    """Redis round trips of whole fan journeys, as the flash sale's fans make them, on MariaDB.

    Each of `n` fans joins while admission is closed (WAITING), polls once on time, is admitted
    by one admission pass for all of them, reads the cached seat map, holds a seat and pays, both
    with `Prefer: wait=5` (the job's outcome in the answer), and is let go as the PaymentCompleted
    consumer lets it go (`expire_user`). Requests go through the app in-process; the jobs run on
    the partition worker in a thread of this process (tests/support/helpers.worker_thread). Round
    trips are socket writes of this process's Redis clients, per phase; the worker's share is
    what its thread sent during the fans' jobs minus what it sends idle over the same time
    (measured just before). Kafka and the outbox relay are not in it.
    """
    import datetime as dt
    import uuid

    import redis
    from werkzeug.test import EnvironBuilder

    from config.settings import Settings
    from models import points, schema
    from models.concerts import NewSchedule, create_concert
    from models.db import utcnow
    from models.queue_tokens import fingerprint
    from tests.support.helpers import worker_thread
    from web import create_app

    settings = Settings().with_(
        database_url=db_url,
        redis_url=redis_url,
        admin_token="x",
        active_limit=n + 1,
        rate_issue_ip="1000000/second",
        rate_issue_user="1000000/second",
        auth_jwt_secret=BENCH_JWT_SECRET,
    )
    app = create_app(settings)
    schema.drop_all()
    schema.migrate()
    redis.Redis.from_url(redis_url).flushdb()
    concert, [view] = create_concert(
        title="Journey", venue="Hall", schedules=[NewSchedule(utcnow() + dt.timedelta(days=30), n, 1_000)]
    )
    users = list(range(1, n + 1))
    for user in users:
        points.charge(user_id=user, amount=10_000, max_charge=10**9, max_balance=10**12)
    room, controls = app.extensions["waiting_room"], app.extensions["queue_controls"]
    auth = {u: bearer(u)["Authorization"] for u in users}

    def call(path: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None) -> Any:
        environ = EnvironBuilder(path=path, method=method, headers=headers or {}, json=body).get_environ()
        out: list[str] = []
        chunks = app(environ, lambda s, h, e=None: out.append(s))
        data = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
        return int(out[0][:3]), json.loads(data) if data else None

    from redis.connection import AbstractConnection

    sends: dict[str, int] = {}
    original = AbstractConnection.send_packed_command

    def counted(conn: Any, command: Any, check_health: bool = True) -> None:
        name = threading.current_thread().name
        sends[name] = sends.get(name, 0) + 1
        original(conn, command, check_health)

    def trips() -> tuple[int, int]:
        """(this thread's socket writes, every other thread's) so far."""
        mine = sends.get(threading.current_thread().name, 0)
        return mine, sum(sends.values()) - mine

    phases: dict[str, list[int]] = {}

    def phase(name: str, before: tuple[int, int]) -> None:
        phases.setdefault(name, []).append(trips()[0] - before[0])

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        with worker_thread():
            controls.change(concert_id=concert, who="bench", changes={"paused": True})  # no admission on join
            tokens: dict[int, str] = {}
            for u in users:  # joins while admission waits: every fan is WAITING
                before = trips()
                status, body = call("/api/v1/queue/tokens", "POST", {"Authorization": auth[u]}, {"concertId": concert})
                phase("join", before)
                assert status in (200, 201), body
                tokens[u] = body["token"]
            server_ms = int(room.r.time()[0]) * 1000
            for u in users:  # due now: on-time polls
                room.r.hset(f"wr:{{c:{concert}}}:t:{tokens[u]}", "p", f"{server_ms}:{server_ms}")
            for u in users:
                before = trips()
                status, body = call(
                    "/api/v1/queue/token", headers={"X-Queue-Token": tokens[u], "Authorization": auth[u]}
                )
                phase("poll", before)
            before = trips()
            controls.change(concert_id=concert, who="bench", changes={"paused": False})
            admitted = room.admit(concert_id=concert, limit=n).admitted
            phases["admission"] = [trips()[0] - before[0]]
            time.sleep(1.0)
            idle_started, idle_before = time.perf_counter(), trips()[1]
            time.sleep(3.0)
            idle_rate = (trips()[1] - idle_before) / (time.perf_counter() - idle_started)
            jobs_started, jobs_before = time.perf_counter(), trips()[1]
            seats = [
                s["seatId"]
                for s in call(
                    f"/api/v1/schedules/{view.schedule_id}/seats",
                    headers={"X-Queue-Token": tokens[users[0]], "Authorization": auth[users[0]]},
                )[1]["seats"]
            ]
            outcomes: dict[str, int] = {}
            for i, u in enumerate(users):
                head = {"X-Queue-Token": tokens[u], "Authorization": auth[u]}
                before = trips()
                call(f"/api/v1/schedules/{view.schedule_id}/seats", headers=head)
                phase("seat_map", before)
                before = trips()
                status, held = call(
                    "/api/v1/reservations",
                    "POST",
                    {**head, "Prefer": "wait=5"},
                    {"scheduleId": view.schedule_id, "seatId": seats[i]},
                )
                phase("hold", before)
                outcomes[f"hold {status}"] = outcomes.get(f"hold {status}", 0) + 1
                before = trips()
                status, _ = call(
                    "/api/v1/payments",
                    "POST",
                    {**head, "Prefer": "wait=5", "Idempotency-Key": uuid.uuid4().hex},
                    {"reservationId": held["reservationId"]},
                )
                phase("pay", before)
                outcomes[f"pay {status}"] = outcomes.get(f"pay {status}", 0) + 1
                before = trips()
                room.expire_user(user_id=u, concert_id=concert, token_fingerprint=fingerprint(tokens[u]))
                phase("let_go", before)
            elapsed = time.perf_counter() - jobs_started
            worker = trips()[1] - jobs_before - idle_rate * elapsed
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    mean = {
        name: round(sum(v) / max(1, len(v)) if name != "admission" else v[0] / max(1, admitted), 2)
        for name, v in phases.items()
    }
    web = sum(mean[k] for k in ("join", "admission", "seat_map", "hold", "pay", "let_go"))
    jobs = round(worker / n, 2)
    return {
        "n": n,
        "admitted": admitted,
        "outcomes": outcomes,
        "per_phase": mean,
        "worker_jobs": jobs,
        "worker_idle_per_s": round(idle_rate, 1),
        "fixed": round(web + jobs, 1),
        "per_poll": mean["poll"],
    }


def journey_line(j: dict[str, Any]) -> str:
    """One fan's journey in Redis round trips: fixed part + per poll, and the phases."""
    p = j["per_phase"]
    phases = ", ".join(f"{k} {v:g}" for k, v in p.items() if k != "poll")
    return (
        f"per fan journey: {j['fixed']:g} + {j['per_poll']:g} x polls Redis round trips "
        f"(web: {phases}; the hold and payment jobs on the worker {j['worker_jobs']:g}; {j['n']} journeys)"
    )


def run_in(checkout: Path, n: int, redis_url: str) -> dict[str, Any]:
    """measure() inside another checkout, in a child process (its own imports)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        code = (
            f"import sys, json; sys.path.insert(0, {str(checkout)!r}); sys.path.append({str(ROOT / 'bench')!r});"
            f"import unit_costs; json.dump(unit_costs.measure({n}, {redis_url!r}), open({out.name!r}, 'w'))"
        )
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(Path(out.name).read_text())  # type: ignore[no-any-return]


def table(after: dict[str, Any], before: dict[str, Any] | None) -> str:
    """A Markdown table of the figures (before → after when both exist)."""
    lines = [
        "| operation | Redis round trips | Redis commands | Redis server µs | web CPU µs | web CPU ÷ bare |",
        "|---|---|---|---|---|---|",
    ]
    for op in OPS:
        a = after.get(op)
        if a is None:
            continue
        b = (before or {}).get(op)

        def cell(key: str, fmt: str = "{:.1f}", a: Any = a, b: Any = b) -> str:
            now = fmt.format(a[key])
            return f"{fmt.format(b[key])} → {now}" if b and key in b else now

        ratio = a["web_cpu_us"] / after["bare"]["web_cpu_us"]
        old = f"{b['web_cpu_us'] / before['bare']['web_cpu_us']:.2f} → " if b and before else ""
        lines.append(
            f"| {op} | {cell('redis_round_trips')} | {cell('redis_commands')} | {cell('redis_server_us')} "
            f"| {cell('web_cpu_us', '{:.0f}')} "
            f"| {old}{ratio:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="requests per operation for the CPU figures")
    parser.add_argument("--before", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--before-name", help="what --before is, for the results (e.g. a commit); default its path")
    parser.add_argument("--db-n", type=int, default=500, help="holds and payments for the database figures")
    parser.add_argument("--journeys", type=int, default=200, help="whole fan journeys for the per-journey round trips")
    args = parser.parse_args()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    from bench.common import create_database, machine

    before = run_in(args.before, args.n, redis_url) if args.before else None
    after = run_in(ROOT, args.n, redis_url)
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_unit_costs")
    create_database(db_url)
    database = db_costs(args.db_n, db_url)
    journeys = journey(args.journeys, redis_url, db_url)
    result = {
        "machine": machine(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "n": args.n,
        "before": before,
        "before_name": (args.before_name or str(args.before)) if args.before else None,
        "after": after,
        "database": {"n": args.db_n, **database},
        "journey": journeys,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(table(after, before))
    print("\n| on MariaDB | statements | by kind | ms p50 | ms mean |\n|---|---|---|---|---|")
    for kind in ("hold", "payment"):
        d = database[kind]
        kinds = ", ".join(f"{k} {v:g}" for k, v in d["by_kind"].items())
        print(f"| {kind} | {d['statements']:g} | {kinds} | {d['ms_p50']} | {d['ms_mean']} |")
    print(f"\n{journey_line(journeys)}")
    print(f"\nwritten {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
