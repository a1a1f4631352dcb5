"""Requests/s of /healthz, a waiting poll's cost class and the cached seat map beside a bare Flask
route, under wrk, with the same gunicorn settings (config/gunicorn.py, WEB_CONCURRENCY=2,
8 threads): both servers up, the targets hit in turn for --rounds rounds, the median of each.
SQLite file + BENCH_REDIS_URL; rate limits off. The seat map and the poll use an ACTIVE token.

    .venv/bin/python -m bench.rps_bench [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import redis

from bench.cache_bench import serve, stop
from bench.common import BENCH_JWT_SECRET, bearer, machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "rps.json"


def wrk(url: str, seconds: int, connections: int, headers: list[str] | None = None) -> float:
    """Requests/s wrk measured (2 threads)."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url]
    for header in headers or []:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} non-2xx answers\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts")
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp()) / "rps.db"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"),
        "RATE_LIMIT_ENABLED": "false",
        "ADMIN_TOKEN": "bench",
        "WEB_CONCURRENCY": "2",
        "AUTH_JWT_SECRET": BENCH_JWT_SECRET,  # user routes need the fan's identity
    }
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()  # the bench's own Redis database: an empty queue
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "models", "migrate"], cwd=ROOT, env=env, check=True)
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "models", "demo"], cwd=ROOT, env=env, check=True)
    result: dict[str, Any] = {"machine": machine(), "seconds": args.seconds, "connections": args.connections}
    bare, bare_base = serve("bench.bare_app:app", env, "/bare")
    app, base = serve("web:create_app()", env, "/api/v1/healthz")
    try:
        req = urllib.request.Request(
            f"{base}/api/v1/queue/tokens",
            data=json.dumps({"concertId": 1}).encode(),
            headers={"Content-Type": "application/json", **bearer(1)},
        )
        token = json.loads(urllib.request.urlopen(req, timeout=10).read())["token"]
        header = [f"X-Queue-Token: {token}", f"Authorization: {bearer(1)['Authorization']}"]
        targets = {
            "bare": (f"{bare_base}/bare", None),
            "healthz": (f"{base}/api/v1/healthz", None),
            "seat_map": (f"{base}/api/v1/schedules/1/seats", header),
            "active_poll": (f"{base}/api/v1/queue/token", header),
        }
        runs: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # interleaved, so a busy moment of the machine hits every target
            for name, (url, hdr) in targets.items():
                runs[name].append(wrk(url, args.seconds, args.connections, hdr))
    finally:
        stop(app)
        stop(bare)
    result["runs_rps"] = runs
    for name, values in runs.items():
        result[f"{name}_rps"] = sorted(values)[len(values) // 2]
    for key in ("healthz", "seat_map", "active_poll"):
        result[f"{key}_ratio"] = round(result[f"{key}_rps"] / result["bare_rps"], 2)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
