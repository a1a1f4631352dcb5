"""Web CPU per request, in-process, beside a bare Flask route in the same run; optionally where it goes.

The WSGI app is called directly (no HTTP server, so the CPU is the app's own: hooks, identity,
metrics, Redis client, serialization) against MariaDB and a real Redis, with
PROMETHEUS_MULTIPROC_DIR set as gunicorn sets it. --n requests of each kind:

  bare       a bare Flask JSON route (bench/bare_app.py)
  healthz    GET /api/v1/healthz
  seat_map   GET /api/v1/schedules/1/seats, one ACTIVE fan again and again
  seat_fans  the same, each request another of --n ACTIVE fans (none read it in the last 0.5 s)
  poll       GET /api/v1/queue/token, each request another WAITING fan, on time
  join       POST /api/v1/queue/tokens, each request a new fan joining (a flash sale's first request:
             the fan's JWT not verified before)
For seat_fans and poll each fan's JWT was verified once before (it is not the fan's first request).

Each kind also gets its Python opcodes per request (sys.settrace over a few requests), a count
the machine's load does not move. With --profile OP[,OP] it prints cProfile's top functions for
those kinds; with --before DIR it measures another checkout the same way in the same run (a
child process each), for before/after.

    .venv/bin/python -m bench.request_profile [--n 10000] [--profile seat_map] [--before DIR]

Env: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_profile, created if missing;
its tables are recreated), BENCH_REDIS_URL (default redis://127.0.0.1:6379/8; flushed).
Writes bench/results/request_profile.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "request_profile.json"
KINDS = ("bare", "healthz", "seat_map", "seat_fans", "poll", "join")
SECRET = "request-profile-jwt-secret-0123456789-0123456789-0123"


def _call(app: Any, environ: dict[str, Any]) -> str:
    status: list[str] = []
    body = app(environ, lambda s, h, e=None: status.append(s))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return status[0]


def measure(n: int, db_url: str, redis_url: str, profile: list[str]) -> dict[str, Any]:
    """Every kind's CPU µs per request in this checkout (run inside it, in its own process)."""
    import cProfile
    import pstats

    import jwt
    import redis
    from werkzeug.test import EnvironBuilder

    sys.path.insert(0, os.getcwd())
    from bench.bare_app import app as bare
    from config.settings import Settings
    from models import schema
    from models.seed import seed_demo
    from web import create_app

    settings = Settings().with_(
        database_url=db_url,
        redis_url=redis_url,
        admin_token="x",
        auth_jwt_secret=SECRET,
        active_limit=n + 1,
        rate_issue_ip="100000/second",  # one client address for every fan, as in the flash sale
    )
    app = create_app(settings)
    schema.drop_all()
    schema.migrate()
    concert = seed_demo()
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    room = app.extensions["waiting_room"]
    now = int(time.time())

    def bearer(user: int) -> str:
        return "Bearer " + jwt.encode({"sub": str(user), "exp": now + 3600}, SECRET, algorithm="HS256")

    active = [(u, room.issue(user_id=u, concert_id=concert, limit=n + 1).token) for u in range(1, n + 2)]
    waiting = [(u, room.issue(user_id=u, concert_id=concert, limit=0).token) for u in range(n + 2, 2 * n + 2)]
    verifier = app.extensions["auth_verifier"]
    fans = {u: bearer(u) for u, _ in active + waiting}
    for u, _ in active[1:] + waiting:
        verifier.user_id(fans[u][7:])  # not the fan's first request: its JWT was verified before
    server_ms = int(r.time()[0]) * 1000  # every fan polled "now" and is due "now": on-time polls
    for _, token in waiting:  # (the scripts read the server's clock)
        r.hset(f"wr:{{c:{concert}}}:t:{token}", "p", f"{server_ms}:{server_ms}")

    def env(path: str, headers: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        return EnvironBuilder(path=path, headers=headers or {}, **kw).get_environ()  # type: ignore[no-any-return]

    joiners = range(2 * n + 2, 3 * n + 7)  # new fans (their JWTs never verified); the last 5 for the opcodes
    join = [
        env(
            "/api/v1/queue/tokens",
            {"Authorization": bearer(u)},
            method="POST",
            json={"concertId": concert, "userId": u},
        )
        for u in joiners
    ]

    seats = "/api/v1/schedules/1/seats"
    one = {"X-Queue-Token": active[0][1], "Authorization": fans[active[0][0]]}
    batches = {
        "bare": (bare, [env("/bare") for _ in range(n)]),
        "healthz": (app, [env("/api/v1/healthz") for _ in range(n)]),
        "seat_map": (app, [env(seats, one) for _ in range(n)]),
        "seat_fans": (app, [env(seats, {"X-Queue-Token": t, "Authorization": fans[u]}) for u, t in active[1:]]),
        "poll": (app, [env("/api/v1/queue/token", {"X-Queue-Token": t, "Authorization": fans[u]}) for u, t in waiting]),
        "join": (app, join[:n]),
    }
    _call(app, env(seats, one))  # the seat map is rendered and cached in Redis from here on
    out: dict[str, Any] = {}
    for kind, (target, environs) in batches.items():
        profiler = cProfile.Profile() if kind in profile else None
        statuses: dict[str, int] = {}
        started = time.process_time()
        if profiler:
            profiler.enable()
        for environ in environs:
            s = _call(target, environ)
            statuses[s] = statuses.get(s, 0) + 1
        if profiler:
            profiler.disable()
        cpu = (time.process_time() - started) / len(environs) * 1e6
        fresh = join[n:] if kind == "join" else [dict(e) for e in environs[:5]]  # a body is read once
        out[kind] = {"web_cpu_us": round(cpu, 1), "statuses": statuses, "opcodes": _opcodes(target, fresh)}
        if profiler:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            out[kind]["profile"] = text.getvalue()
    return out


def _opcodes(app: Any, chosen: list[dict[str, Any]]) -> int:
    """Python bytecodes executed per request (sys.settrace, over a few requests like the batch's):
    a count that the machine's load does not move, for comparing kinds and checkouts.
    Time spent inside C (syscalls, Redis, hashing) is not in it."""
    count = [0]

    def trace(frame: Any, event: str, _: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            count[0] += 1
        return trace

    sys.settrace(trace)
    try:
        for environ in chosen:
            _call(app, environ)
    finally:
        sys.settrace(None)
    return count[0] // len(chosen)


def run_in(checkout: Path, n: int, db_url: str, redis_url: str, profile: list[str]) -> dict[str, Any]:
    """measure() inside a checkout, in a child process with its own imports and metrics directory."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        code = (
            f"import sys, json; sys.path.insert(0, {str(checkout)!r}); sys.path.append({str(ROOT / 'bench')!r});"
            f"import request_profile as rp; json.dump(rp.measure({n}, {db_url!r}, {redis_url!r}, {profile!r}),"
            f" open({out.name!r}, 'w'))"
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(checkout),
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="request-profile-"),  # as gunicorn sets it
        }
        subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(Path(out.name).read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="requests of each kind")
    parser.add_argument("--profile", default="", help="kinds to profile with cProfile, comma-separated")
    parser.add_argument("--before", type=Path, help="another checkout to measure in the same run")
    args = parser.parse_args()
    from bench.common import create_database, machine

    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_profile")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    create_database(db_url)
    profile = [k for k in args.profile.split(",") if k]
    load = [round(x, 2) for x in os.getloadavg()]
    before = run_in(args.before, args.n, db_url, redis_url, []) if args.before else None
    after = run_in(ROOT, args.n, db_url, redis_url, profile)
    result = {
        "machine": machine(),
        "loadavg_start_end": [load, [round(x, 2) for x in os.getloadavg()]],
        "n": args.n,
        "before": before,
        "after": after,
    }
    for kind in profile:
        print(f"--- {kind}\n{after[kind].pop('profile', '')}")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(table(after, before))
    print(f"\nwritten {RESULTS.relative_to(ROOT)}")


def table(after: dict[str, Any], before: dict[str, Any] | None) -> str:
    """A Markdown table: CPU µs per request and ÷ bare (before → after with --before)."""
    lines = ["| request | web CPU µs | ÷ bare Flask | Python opcodes | answers |", "|---|---|---|---|---|"]
    for kind in KINDS:
        a = after[kind]
        ratio = a["web_cpu_us"] / after["bare"]["web_cpu_us"]
        ops = f"{a.get('opcodes', 0):,}"
        if before and kind in before:
            b = before[kind]
            old = b["web_cpu_us"] / before["bare"]["web_cpu_us"]
            cpu, r = f"{b['web_cpu_us']:.0f} → {a['web_cpu_us']:.0f}", f"{old:.2f} → **{ratio:.2f}**"
            if "opcodes" in b:
                ops = f"{b['opcodes']:,} → {ops}"
        else:
            cpu, r = f"{a['web_cpu_us']:.0f}", f"**{ratio:.2f}**"
        answers = ", ".join(f"{k}: {v}" for k, v in a["statuses"].items())
        lines.append(f"| {kind} | {cpu} | {r} | {ops} | {answers} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
