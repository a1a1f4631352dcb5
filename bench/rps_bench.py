"""Requests/s of /healthz, the cached seat map and a waiting poll beside a bare Flask route, under
wrk, all served by gunicorn with the project's config (config/gunicorn.py: WEB_CONCURRENCY=2,
8 threads, multiprocess metrics, rate limits on) against MariaDB and Redis. Every server is up
for the whole run. Each target's wrk run comes right after a wrk run of the bare route, and its
ratio is taken against that one (the machine is shared: its load moves within seconds); the
targets take turns for --rounds rounds and the median ratio of each counts.

Targets (each request signed in with the fan's own bearer JWT, as the real clients do):
  bare            a bare Flask JSON route (bench/bare_app.py), the floor
  healthz         GET /api/v1/healthz
  seat_map        GET /api/v1/schedules/1/seats with one ACTIVE fan's token (one fan refreshing)
  seat_map_fans   the same, each request a different one of --active ACTIVE fans (wrk Lua script)
  poll            GET /api/v1/queue/token, each request a different one of --waiting WAITING fans,
                  on time (POLL_MAX_INTERVAL=1 and each fan polled seconds apart): 200, one Redis
                  round trip and one small write each
  join            POST /api/v1/queue/tokens, each request a new fan joining (each run its own fresh
                  fans, so every JWT is seen for the first time), on keep-alive connections: the
                  joins per second the server itself can answer (RATE_LIMIT_ISSUE_IP raised, as in
                  the flash sale: every fan comes from 127.0.0.1)

With --before DIR (another checkout, e.g. `git archive <commit> | tar -x -C DIR`) the same app
targets are also served from DIR by a second gunicorn on the same database and Redis, in the
same rounds: before/after ratios from one run.

    .venv/bin/python -m bench.rps_bench [--seconds 4] [--connections 32] [--rounds 5] [--before DIR] [--port P]
        [--targets healthz,seat_map] [--out NAME]

Env: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_rps, created if missing),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/8; its database is flushed). Writes
bench/results/rps.json (--out NAME: NAME.json) with the load average before and after each round, and
each target's median ratio with the middle half of its pairs (how far one pair moves on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import redis

from bench.cache_bench import serve, stop
from bench.common import BENCH_JWT_SECRET, create_database, machine, sign

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "rps.json"
SEATS = "/api/v1/schedules/1/seats"
POLL = "/api/v1/queue/token"
TARGETS = ("healthz", "seat_map", "seat_map_fans", "poll", "join")
JOIN_FANS_PER_RUN = 12000

# Each wrk thread walks its own part of the fans file, one fan per request.
ROTATE_LUA = """
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  fans = {}
  for line in io.lines(args[1]) do
    local q, j = line:match("([^ ]+) ([^ ]+)")
    fans[#fans + 1] = {q, "Bearer " .. j}
  end
  local threads = tonumber(args[2])
  i = math.floor(#fans * (id or 0) / threads)
end
function request()
  i = i % #fans + 1
  local fan = fans[i]
  if args_join then
    return wrk.format("POST", nil, {["Authorization"] = fan[2], ["Content-Type"] = "application/json"},
      '{"concertId":1,"userId":' .. fan[1] .. '}')
  end
  return wrk.format("GET", nil, {["X-Queue-Token"] = fan[1], ["Authorization"] = fan[2]})
end
"""
# The same walk, each request a fan joining (the fans file holds "<user id> <JWT>" lines).
JOIN_LUA = "args_join = true\n" + ROTATE_LUA


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str], fans: Path | None) -> dict[str, Any]:
    """One wrk run (2 threads): requests/s, p50 latency and the non-2xx/3xx count."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    if fans is not None:
        script = fans.with_suffix(".lua")
        script.write_text(JOIN_LUA if fans.name.startswith("join") else ROTATE_LUA)
        cmd += ["-s", str(script), url, "--", str(fans), "2"]
    else:
        cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": round(float(p50.group(1)) * scale[p50.group(2)], 2) if p50 else None,
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def prepare(env: dict[str, str], active: int, waiting: int, tmp: Path) -> tuple[dict[str, str], Path, Path]:
    """Schema, the demo concert, and the fans: (one ACTIVE fan's headers, ACTIVE fans file, WAITING fans file)."""
    from models.waiting_room import ACTIVE, WAITING, WaitingRoom

    py = str(ROOT / ".venv/bin/python")
    subprocess.run([py, "-m", "models", "migrate"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([py, "-m", "models", "demo"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    r = redis.Redis.from_url(env["REDIS_URL"])
    r.flushdb()  # the bench's own Redis database: an empty queue
    room = WaitingRoom(r, active_limit=active, active_ttl=3600, waiting_ttl=3600, poll_max_interval=1.0)

    def fans(first: int, n: int, limit: int, status: str, path: Path) -> list[tuple[str, str]]:
        rows = []
        for user in range(first, first + n):
            token = room.issue(user_id=user, concert_id=1, limit=limit)
            assert token.status == status, f"fan {user} is {token.status}, not {status}"
            rows.append((token.token, sign(user)))
        path.write_text("".join(f"{q} {j}\n" for q, j in rows))
        return rows

    actives = fans(1, active, active, ACTIVE, tmp / "active.txt")
    fans(active + 1, waiting, 0, WAITING, tmp / "waiting.txt")
    one = {"X-Queue-Token": actives[0][0], "Authorization": f"Bearer {actives[0][1]}"}
    return one, tmp / "active.txt", tmp / "waiting.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median ratio counts")
    parser.add_argument("--active", type=int, default=1000, help="ACTIVE fans reading the seat map")
    parser.add_argument("--waiting", type=int, default=20000, help="WAITING fans polling")
    parser.add_argument("--before", type=Path, help="another checkout served beside this one, same run")
    parser.add_argument("--port", type=int, help="the bare route's port; the app gets the next, --before the one after")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"app targets to measure, comma-separated (default all: {','.join(TARGETS)}); fewer targets, more rounds",
    )
    parser.add_argument("--out", default="rps", help="results file bench/results/OUT.json (default rps)")
    args = parser.parse_args()
    results = RESULTS.with_name(f"{args.out}.json")
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_rps")
    create_database(db_url)
    base_env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"),
        "AUTH_JWT_SECRET": BENCH_JWT_SECRET,
        "ADMIN_TOKEN": "bench-admin-token",
        "WEB_CONCURRENCY": "2",
        "HOST": "127.0.0.1",
        "ACTIVE_LIMIT": str(args.active),
        "POLL_MAX_INTERVAL": "1",
        "RATE_LIMIT_ISSUE_IP": "100000/second",  # the join target: every fan from 127.0.0.1
    }
    for name in ("WEB_THREADS", "RATE_LIMIT_ENABLED", "ACCESS_LOG", "PROMETHEUS_MULTIPROC_DIR"):
        base_env.pop(name, None)  # the config's defaults, for every server
    tmp = Path(tempfile.mkdtemp(prefix="rps-bench-"))
    one, active_fans, waiting_fans = prepare(base_env, args.active, args.waiting, tmp)
    result: dict[str, Any] = {
        "machine": machine(),
        "seconds": args.seconds,
        "connections": args.connections,
        "active_fans": args.active,
        "waiting_fans": args.waiting,
        "before": str(args.before) if args.before else None,
    }

    def env_for(label: str) -> dict[str, str]:
        return {**base_env, "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix=f"rps-{label}-metrics-")}

    def port(i: int) -> int | None:
        return args.port + i if args.port else None

    servers = [serve("bench.bare_app:app", env_for("bare"), "/bare", port=port(0))]
    try:
        servers.append(serve("web:create_app()", env_for("after"), "/api/v1/healthz", port=port(1)))
        if args.before:
            servers.append(
                serve("web:create_app()", env_for("before"), "/api/v1/healthz", cwd=args.before, port=port(2))
            )
        bare_base, app_bases = servers[0][1], {"": servers[1][1]}
        if args.before:
            app_bases["before_"] = servers[2][1]
        targets: dict[str, tuple[str, dict[str, str], Path | None]] = {"bare": (f"{bare_base}/bare", {}, None)}
        wanted = [t for t in args.targets.split(",") if t]
        unknown = set(wanted) - set(TARGETS)
        if unknown:
            raise SystemExit(f"unknown --targets: {', '.join(sorted(unknown))}")
        for prefix, base in app_bases.items():
            each = {
                "healthz": (f"{base}/api/v1/healthz", {}, None),
                "seat_map": (f"{base}{SEATS}", one, None),
                "seat_map_fans": (f"{base}{SEATS}", {}, active_fans),
                "poll": (f"{base}{POLL}", {}, waiting_fans),
                "join": (f"{base}/api/v1/queue/tokens", {}, tmp / "join.txt"),  # a fresh file each run
            }
            for name in wanted:
                targets[f"{prefix}{name}"] = each[name]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        ratios: dict[str, list[float]] = {name: [] for name in targets if name != "bare"}
        bare_url = targets["bare"][0]
        loads = []
        next_joiner = [args.active + args.waiting + 1]  # user ids never seen before
        for _ in range(args.rounds):
            loads.append(loadavg())
            for name, (url, headers, fans) in targets.items():
                if name == "bare":
                    continue
                if fans is not None and fans.name == "join.txt":  # new fans for every join run
                    first = next_joiner[0]
                    fans.write_text("".join(f"{u} {sign(u)}\n" for u in range(first, first + JOIN_FANS_PER_RUN)))
                    next_joiner[0] += JOIN_FANS_PER_RUN
                floor = wrk(bare_url, args.seconds, args.connections, {}, None)  # right before: the same moment
                runs["bare"].append(floor)
                runs[name].append(wrk(url, args.seconds, args.connections, headers, fans))
                ratios[name].append(round(runs[name][-1]["rps"] / floor["rps"], 3))
        loads.append(loadavg())
    finally:
        for proc, _ in servers:
            stop(proc)
    result["loadavg_each_round"] = loads
    result["runs"] = runs
    for name, values in runs.items():
        ordered = sorted(values, key=lambda v: v["rps"])
        result[f"{name}_rps"] = ordered[len(ordered) // 2]["rps"]
        result[f"{name}_non_2xx"] = sum(v["non_2xx"] for v in values)
    result["ratios_each_pair"] = ratios
    for name, values in ratios.items():  # each run ÷ the bare run just before it; the median counts
        ordered = sorted(values)
        result[f"{name}_ratio"] = round(ordered[len(ordered) // 2], 2)
        # the middle half of the pairs: how far one run's ratio moves on this machine
        result[f"{name}_ratio_iqr"] = [round(ordered[len(ordered) // 4], 2), round(ordered[(3 * len(ordered)) // 4], 2)]
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten {results.relative_to(ROOT)}")


def table(result: dict[str, Any]) -> str:
    """A Markdown table: requests/s and the ratio to the bare route (before → after with --before)."""
    lines = [
        "| target | requests/s (median) | ÷ bare Flask (median of pairs) | middle half of the pairs | non-2xx |",
        "|---|---|---|---|---|",
    ]
    lines.append(f"| bare Flask route | {result['bare_rps']:.0f} | 1.00 | | {result['bare_non_2xx']} |")
    for name in TARGETS:
        if name not in result.get("runs", {}):
            continue
        before = f"before_{name}"
        if before in result.get("runs", {}):
            rps = f"{result[before + '_rps']:.0f} → {result[name + '_rps']:.0f}"
            ratio = f"{result[before + '_ratio']:.2f} → **{result[name + '_ratio']:.2f}**"
            non = f"{result[before + '_non_2xx']} → {result[name + '_non_2xx']}"
        else:
            rps, ratio, non = (
                f"{result[name + '_rps']:.0f}",
                f"**{result[name + '_ratio']:.2f}**",
                result[name + "_non_2xx"],
            )
        spread = " → ".join(
            f"{lo:.2f}-{hi:.2f}"
            for key in (before, name)
            if (key + "_ratio_iqr") in result
            for lo, hi in [result[key + "_ratio_iqr"]]
        )
        lines.append(f"| {name} | {rps} | {ratio} | {spread} | {non} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
