"""The load: locust fans against a server, the sell-out watch, and what locust measured."""

from __future__ import annotations

import csv
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.common import connect
from bench.flash_sale import BIN, ROOT, SEATS_TOTAL
from bench.flash_sale.service import stop_group


class SellOutWatch(threading.Thread):
    """Polls the database every `interval` s: first reservation row, all seats taken, all seats RESERVED."""

    def __init__(self, db_url: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.db_url, self.interval = db_url, interval
        self.done = threading.Event()
        self.first_hold: float | None = None
        self.all_taken: float | None = None
        self.sold_out: float | None = None
        self.timeline: list[tuple[float, int, int]] = []  # (seconds since the sale opened, seats taken, RESERVED)
        self.started = time.time()

    def run(self) -> None:
        name = urlparse(self.db_url).path.lstrip("/")
        with connect(self.db_url, name) as conn, conn.cursor() as cur:
            while not self.done.is_set():
                cur.execute(
                    "SELECT (SELECT COUNT(*) FROM reservations), "
                    "(SELECT COUNT(*) FROM seats WHERE status <> 'AVAILABLE'), "
                    "(SELECT COUNT(*) FROM seats WHERE status = 'RESERVED')"
                )
                reservations, taken, reserved = (int(x) for x in cur.fetchone())  # type: ignore[union-attr]
                now = time.time()
                if reservations and self.first_hold is None:
                    self.first_hold = now
                if taken >= SEATS_TOTAL and self.all_taken is None:
                    self.all_taken = now
                if reserved >= SEATS_TOTAL and self.sold_out is None:
                    self.sold_out = now
                if not self.timeline or self.timeline[-1][1:] != (taken, reserved):
                    self.timeline.append((round(now - self.started, 2), taken, reserved))
                self.done.wait(self.interval)


def cpu_times() -> tuple[int, int]:
    """(all, idle) jiffies of every CPU so far, from /proc/stat (idle counts iowait too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


class CpuWatch(threading.Thread):
    """The machine's CPUs, busy share each second (/proc/stat), from the sale's start until `done`."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.done = threading.Event()
        self.busy: list[float] = []  # one a second: 0..1 of all CPUs

    def run(self) -> None:
        last = cpu_times()
        while not self.done.wait(self.interval):
            now = cpu_times()
            total = now[0] - last[0]
            self.busy.append(round(1 - (now[1] - last[1]) / total, 3) if total else 0.0)
            last = now

    def during(self, seconds: float) -> float | None:
        """The mean busy share over the first `seconds` of the sale (the fans' arrivals)."""
        first = self.busy[: max(1, round(seconds / self.interval))]
        return round(sum(first) / len(first), 3) if first else None


def run_locust(
    host: str, users: int, rate: float, run_time: str, csv_prefix: Path, env: dict[str, str], log: Path
) -> tuple[int, float, float]:
    """One headless locust run: (exit code, wall seconds, locust's CPU seconds)."""
    cmd = [str(BIN / "locust"), "-f", "bench/locustfile_flash.py", "--headless", "-u", str(users), "-r", str(rate)]
    cmd += ["-t", run_time, "--csv", str(csv_prefix), "--csv-full-history", "--host", host, "--only-summary"]
    # gevent's default resolver hands every connect's getaddrinfo to a pool of 10 threads, each
    # back through locust's GIL: with locust busy, fans connected at ~100/s while 500/s spawned
    # (server accept queue empty, its threads idle). The host is an IP: resolve it inline.
    env = {**env, "GEVENT_RESOLVER": env.get("GEVENT_RESOLVER", "block")}
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait()
        finally:
            stop_group(proc, grace=20)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # locust is the only child reaped meanwhile
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return proc.returncode, time.perf_counter() - started, cpu


def read_stats(prefix: Path) -> dict[str, dict[str, Any]]:
    """Locust's <prefix>_stats.csv as name -> {requests, failures, rps, p50_ms, p95_ms, p99_ms, error_rate}."""
    out: dict[str, dict[str, Any]] = {}
    with open(f"{prefix}_stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            n, f = int(row["Request Count"]), int(row["Failure Count"])
            out[row["Name"]] = {
                "method": row["Type"],
                "requests": n,
                "failures": f,
                "rps": round(float(row["Requests/s"]), 1),
                "p50_ms": num(row["50%"]),
                "p95_ms": num(row["95%"]),
                "p99_ms": num(row["99%"]),
                "max_ms": num(row["Max Response Time"]),
                "error_rate": round(f / n, 4) if n else 0.0,
            }
    return out


def peak_rps(prefix: Path) -> float | None:
    """The highest rolling requests/s locust recorded (Aggregated rows of <prefix>_stats_history.csv)."""
    path = Path(f"{prefix}_stats_history.csv")
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        values = [float(r["Requests/s"]) for r in csv.DictReader(fh) if r["Name"] == "Aggregated"]
    return round(max(values), 1) if values else None


def timeline(prefix: Path, name: str) -> list[tuple[int, int, int]]:
    """(second of the run, fans spawned, `name` requests answered so far), one row a second, from locust's
    full history (<prefix>_stats_history.csv): when the fans arrived and when their requests were answered."""
    path = Path(f"{prefix}_stats_history.csv")
    if not path.exists():
        return []
    rows: list[tuple[int, int, int]] = []
    with path.open(newline="") as fh:
        every = list(csv.DictReader(fh))
    found = [r for r in every if r["Name"] == name]
    if not found:
        return []
    start = int(every[0]["Timestamp"])  # the run's first second
    for r in found:
        second = int(r["Timestamp"]) - start
        if not rows or rows[-1][0] != second:
            rows.append((second, int(r["User Count"]), int(r["Total Request Count"])))
    return rows


def locust_cpu_warning(log: Path) -> bool:
    """True if locust warned that its CPU was saturated (its numbers are then a floor of the server's)."""
    return "CPU usage" in log.read_text(errors="replace") if log.exists() else False


def read_failures(prefix: Path) -> list[dict[str, Any]]:
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return [
            {"method": r["Method"], "name": r["Name"], "error": r["Error"], "occurrences": int(r["Occurrences"])}
            for r in csv.DictReader(fh)
        ]


def num(text: str) -> float | None:
    try:
        return round(float(text), 1)
    except ValueError:
        return None
