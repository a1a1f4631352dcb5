"""What gunicorn itself costs a request: CPU per request of the web server around the app, measured.

`bench/unit_costs.py` and `bench/request_profile.py` time the WSGI app called in-process; a request
served over HTTP also pays gunicorn (accept, the HTTP parser, the environ, the response's writes,
the worker's poller and thread hand-offs) and the kernel's socket work. This script serves the bare
Flask route (bench/bare_app.py) with the project's gunicorn config (config/gunicorn.py: its worker
class, WEB_CONCURRENCY=2, 8 threads) under wrk, once on kept-alive connections and once with a new
connection per request (`Connection: close`, as a fan's first request), and reads the gunicorn
processes' CPU time from /proc: CPU per request. The same bare route called in-process in the same
run gives the app's share; the difference is the server's overhead, which docs/CAPACITY.md adds to
each request's in-process cost (`python -m bench.capacity`). A third mode is paced
(`bench/paced_client.py`: --paced-connections kept-alive connections, one request every --paced-period
seconds each, as fans poll): each request then pays the worker's wake-ups alone, which it also counts
(voluntary context switches of every thread of the server, from /proc). The worker classes in --compare
(default: gthread's `ReadableThreadWorker`, which `SharedPollWorker` replaced) are measured the same way,
each round alternating them with config/gunicorn.py's. --rounds alternate the modes; the median of each
counts.

    .venv/bin/python -m bench.server_overhead [--seconds 6] [--connections 16] [--rounds 3] [--port P]
        [--paced-connections 1000] [--paced-period 2] [--compare config.gthread.ReadableThreadWorker]

Needs wrk (Debian's package). Writes bench/results/server_overhead.json.
"""

from __future__ import annotations

import argparse
import json
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
CONFIG_CLASS = "config.gthread.SharedPollWorker"  # config/gunicorn.py's worker_class (a test checks they agree)
COMPARED = ("config.gthread.ReadableThreadWorker",)  # the worker it replaced (2026-12-04)


def _group_stats(pgid: int) -> list[tuple[str, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command) of every process in the group."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat (pgrp), after the command
            found.append((pid, fields))
    return found


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every process in the group, read from /proc."""
    return sum(int(fields[11]) + int(fields[12]) for _, fields in _group_stats(pgid)) / HZ


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


def group_switches(pgid: int) -> int:
    """Voluntary context switches of every thread of every process in the group (a thread that blocks)."""
    total = 0
    for pid, _ in _group_stats(pgid):
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                status = (task / "status").read_text()
                total += int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return total


def paced(pgid: int, port: int, connections: int, period: float, seconds: float) -> dict[str, float]:
    """gunicorn's CPU µs and context switches per request under bench/paced_client.py (its own process)."""
    cpu, switches = group_cpu(pgid), group_switches(pgid)
    out = subprocess.run(
        [sys.executable, "-m", "bench.paced_client", "--port", str(port), "--connections", str(connections),
         "--period", str(period), "--seconds", str(seconds)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    load = json.loads(out)
    n = max(load["requests"], 1)
    return {
        "cpu_us": round((group_cpu(pgid) - cpu) / n * 1e6, 1),
        "switches": round((group_switches(pgid) - switches) / n, 2),
        "requests": load["requests"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "closed_by_server": load["closed_by_server"],
    }


def start(worker_class: str, port: int) -> subprocess.Popen[bytes]:
    """The bare app under the project's gunicorn config with this worker class, answering."""
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "WEB_THREADS": "8"}
    env.setdefault("AUTH_JWT_SECRET", "bench-server-overhead-secret-0123456789abcdef")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "config/gunicorn.py", "-k", worker_class,
         "bench.bare_app:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/bare"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                raise RuntimeError(f"gunicorn ({worker_class}) did not answer") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_WEB_PORT", "8191")))
    parser.add_argument("--paced-connections", type=int, default=1000, help="paced load's kept-alive connections")
    parser.add_argument("--paced-period", type=float, default=2.0, help="seconds between a connection's requests")
    parser.add_argument(
        "--compare", default=",".join(COMPARED),
        help="other worker classes measured the same way, alternated with config/gunicorn.py's (comma-separated)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    classes = [CONFIG_CLASS] + [c for c in args.compare.split(",") if c and c != CONFIG_CLASS]
    load_before = [round(x, 2) for x in os.getloadavg()]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    measured: dict[str, dict[str, list[Any]]] = {c: {"kept": [], "new": [], "paced": []} for c in classes}
    app: list[float] = []
    try:
        for i, worker_class in enumerate(classes):
            procs[worker_class] = start(worker_class, args.port + i)
            wrk(f"http://127.0.0.1:{args.port + i}/bare", 2, args.connections, False)  # warm-up
        for _ in range(args.rounds):
            for i, worker_class in enumerate(classes):  # one after the other, each round
                pgid, url = procs[worker_class].pid, f"http://127.0.0.1:{args.port + i}/bare"
                m = measured[worker_class]
                m["kept"].append(served_cpu_us(pgid, url, args.seconds, args.connections, close=False))
                m["new"].append(served_cpu_us(pgid, url, args.seconds, args.connections, close=True))
                m["paced"].append(paced(pgid, args.port + i, args.paced_connections, args.paced_period, args.seconds))
            app.append(in_process_us())
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    median_app = statistics.median(app)
    by_class: dict[str, Any] = {}
    for worker_class, m in measured.items():
        by_class[worker_class] = {
            "served_kept_alive_us": [round(x, 1) for x in m["kept"]],
            "served_new_connection_us": [round(x, 1) for x in m["new"]],
            "paced": m["paced"],
            "paced_cpu_us_median": statistics.median(p["cpu_us"] for p in m["paced"]),
            "paced_switches_median": statistics.median(p["switches"] for p in m["paced"]),
        }
    ours = measured[CONFIG_CLASS]
    result: dict[str, Any] = {
        "parameters": {
            "seconds": args.seconds,
            "connections": args.connections,
            "rounds": args.rounds,
            "paced_connections": args.paced_connections,
            "paced_period_s": args.paced_period,
            "server": "gunicorn -c config/gunicorn.py -k <class> bench.bare_app:app, WEB_CONCURRENCY=2, WEB_THREADS=8",
            "worker_class": CONFIG_CLASS,
            "load": "wrk -t2 and bench/paced_client.py (beside the server on the same CPUs)",
        },
        "loadavg_start_end": [load_before, [round(x, 2) for x in os.getloadavg()]],
        "served_kept_alive_us": [round(x, 1) for x in ours["kept"]],
        "served_new_connection_us": [round(x, 1) for x in ours["new"]],
        "in_process_us": [round(x, 1) for x in app],
        "by_worker_class": by_class,
    }
    result["overhead_kept_alive_us"] = round(statistics.median(ours["kept"]) - median_app, 1)
    result["overhead_new_connection_us"] = round(statistics.median(ours["new"]) - median_app, 1)
    result["overhead_paced_us"] = round(by_class[CONFIG_CLASS]["paced_cpu_us_median"] - median_app, 1)
    written = write("server_overhead", result)
    print(
        f"bare route ({CONFIG_CLASS}): served {statistics.median(ours['kept']):.0f} µs a request kept alive, "
        f"{statistics.median(ours['new']):.0f} µs on a new connection, "
        f"{by_class[CONFIG_CLASS]['paced_cpu_us_median']:.0f} µs paced, {median_app:.0f} µs in-process"
    )
    for worker_class, b in by_class.items():
        print(
            f"  {worker_class}: kept alive {statistics.median(b['served_kept_alive_us']):.0f} µs, new connection "
            f"{statistics.median(b['served_new_connection_us']):.0f} µs, paced {b['paced_cpu_us_median']:.0f} µs and "
            f"{b['paced_switches_median']:.2f} context switches a request"
        )
    print(f"wrote {written.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
