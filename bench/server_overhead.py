"""What gunicorn itself costs a request: CPU per request of the web server around the app, measured.

`bench/unit_costs.py` and `bench/request_profile.py` time the WSGI app called in-process; a request
served over HTTP also pays gunicorn (accept, the HTTP parser, the environ, the response's writes,
the worker's poller and thread hand-offs) and the kernel's socket work. This script serves the bare
Flask route (bench/bare_app.py) with the project's gunicorn config (config/gunicorn.py: its worker
class, WEB_CONCURRENCY=2, 8 threads) under wrk, once on kept-alive connections and once with a new
connection per request (`Connection: close`, as a fan's first request), and reads the gunicorn
processes' CPU time from /proc: CPU per request. The same bare route called in-process in the same
run gives the app's share; the difference is the server's overhead, which docs/CAPACITY.md adds to
each request's in-process cost (`python -m bench.capacity`). --rounds alternate the two modes;
the median of each counts.

    .venv/bin/python -m bench.server_overhead [--seconds 6] [--connections 16] [--rounds 3] [--port P]

Needs wrk (Debian's package). Writes bench/results/server_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import write

ROOT = Path(__file__).resolve().parents[1]
HZ = os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every process in the group, read from /proc."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat (pgrp), after the command
            total += int(fields[11]) + int(fields[12])
    return total / HZ


def wrk(url: str, seconds: float, connections: int, close: bool) -> int:
    """Requests wrk completed (2 threads)."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", *(["-H", "Connection: close"] if close else []), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+) requests in", out)
    if not found:
        raise RuntimeError(f"wrk printed no request count:\n{out}")
    return int(found.group(1))


def served_cpu_us(pgid: int, url: str, seconds: float, connections: int, close: bool) -> float:
    """gunicorn's CPU µs per request over one wrk run."""
    before = group_cpu(pgid)
    n = wrk(url, seconds, connections, close)
    return (group_cpu(pgid) - before) / n * 1e6


def in_process_us(n: int = 5000) -> float:
    """The bare route's CPU µs per request, its WSGI app called directly (no server)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    from bench.bare_app import app

    environ = EnvironBuilder(path="/bare").get_environ()
    for _ in range(200):
        run_wsgi_app(app, dict(environ))
    started = time.process_time()
    for _ in range(n):
        body, _, _ = run_wsgi_app(app, dict(environ))
        b"".join(body)
    return (time.process_time() - started) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_WEB_PORT", "8191")))
    args = parser.parse_args(argv)
    env = {**os.environ, "PORT": str(args.port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "WEB_THREADS": "8"}
    env.setdefault("AUTH_JWT_SECRET", "bench-server-overhead-secret-0123456789abcdef")
    load_before = [round(x, 2) for x in os.getloadavg()]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "config/gunicorn.py", "bench.bare_app:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{args.port}/bare"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("gunicorn did not answer") from None
                time.sleep(0.2)
        wrk(url, 2, args.connections, False)  # warm-up
        kept, new, app = [], [], []
        for _ in range(args.rounds):
            kept.append(served_cpu_us(proc.pid, url, args.seconds, args.connections, close=False))
            new.append(served_cpu_us(proc.pid, url, args.seconds, args.connections, close=True))
            app.append(in_process_us())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    result: dict[str, Any] = {
        "parameters": {
            "seconds": args.seconds,
            "connections": args.connections,
            "rounds": args.rounds,
            "server": "gunicorn -c config/gunicorn.py bench.bare_app:app, WEB_CONCURRENCY=2, WEB_THREADS=8",
            "load": "wrk -t2 (beside the server on the same CPUs)",
        },
        "loadavg_start_end": [load_before, [round(x, 2) for x in os.getloadavg()]],
        "served_kept_alive_us": [round(x, 1) for x in kept],
        "served_new_connection_us": [round(x, 1) for x in new],
        "in_process_us": [round(x, 1) for x in app],
    }
    median_app = statistics.median(app)
    result["overhead_kept_alive_us"] = round(statistics.median(kept) - median_app, 1)
    result["overhead_new_connection_us"] = round(statistics.median(new) - median_app, 1)
    written = write("server_overhead", result)
    print(
        f"bare route: served {statistics.median(kept):.0f} µs a request kept alive, {statistics.median(new):.0f} µs "
        f"on a new connection, {median_app:.0f} µs in-process: gunicorn adds {result['overhead_kept_alive_us']:.0f} "
        f"and {result['overhead_new_connection_us']:.0f} µs; wrote {written.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
