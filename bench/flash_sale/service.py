"""The service under test: the Procfile under honcho, a bare gunicorn, the database, the concert, the points."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

from bench.common import connect
from bench.flash_sale import ADMIN_TOKEN, BIN, JWT_SECRET, PRICE, ROOT, SCHEDULES, SEATS_PER_SCHEDULE
from tests.support.api_client import ApiClient
from tests.support.procs import lease_holders


class Honcho:
    """`honcho start` of the Procfile in its own session; stop() sends SIGTERM, then SIGKILL to what is left."""

    def __init__(self, env: dict[str, str], workers: int, log: Path, port: int, procfile: Path | None = None) -> None:
        self.log = log
        cmd = [str(BIN / "honcho"), "-e", os.devnull]
        if procfile is not None:  # another Procfile, run from the repository's root as the default one is
            cmd += ["-f", str(procfile), "-d", str(ROOT)]
        cmd += ["start", "-p", str(port), "-c", f"worker={workers}"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def children(self) -> dict[str, int]:
        """Process name -> pid, from honcho's 'web.1 started (pid=N)' lines (each child leads its own group)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return {k: int(v) for k, v in re.findall(r"\| (\S+) started \(pid=(\d+)\)", text)}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, grace: float = 25) -> dict[str, bool]:
        """SIGTERM everything; return process name -> True if its group ended within `grace` s (no SIGKILL).

        honcho runs each Procfile line under `/bin/sh -c` (dash does not exec), so honcho sees the shell die
        at once while the Python process in the same group is still draining: wait for the groups themselves.
        """
        children = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # honcho SIGTERMs every child's group
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + grace
        clean: dict[str, bool] = {}
        for name, pgid in children.items():
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            clean[name] = not _group_alive(pgid)
            if not clean[name]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        return clean


def _app_pids(marker: str) -> list[str]:
    """Every process whose command line names `marker` (one gunicorn's master and workers, by its app)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
    return found


def web_cpu_seconds(marker: str = "same_server:create_app") -> float:
    """CPU seconds (user + system) so far of the service's gunicorn, master and workers: every process
    whose command line names the service's app (`marker`; the bare floor's gunicorn is another app)."""
    total = 0
    for pid in _app_pids(marker):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def web_run_delay_seconds(marker: str = "same_server:create_app") -> float:
    """Seconds the threads of the processes whose command line names `marker` (as web_cpu_seconds) have so far
    spent runnable but waiting for a CPU: the kernel's run_delay (/proc/PID/task/TID/schedstat, field 2, ns)."""
    total = 0
    for pid in _app_pids(marker):
        with contextlib.suppress(OSError, IndexError, ValueError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gunicorn(app_spec: str, env: dict[str, str], port: int, probe: str, log: Path) -> subprocess.Popen[bytes]:
    """gunicorn -c config/gunicorn.py <app> on a port, returned once `probe` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", app_spec],
            cwd=ROOT,
            env={**env, "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_http(f"http://127.0.0.1:{port}{probe}", 60, proc)
    return proc


def stop_group(proc: subprocess.Popen[bytes], grace: float = 25) -> None:
    """SIGTERM a process group, SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_http(url: str, timeout: float, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status == 200:
                    return
        except Exception:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise SystemExit(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.2)


def fresh_database(db_url: str, env: dict[str, str]) -> None:
    """Drop and create the benchmark database, then migrate it with the project's CLI."""
    name = urlparse(db_url).path.lstrip("/")
    with connect(db_url, None) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    subprocess.run(
        [sys.executable, "-m", "models", "migrate"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


def replica_of(primary_url: str) -> str:
    """BENCH_DATABASE_REPLICA_URL, else the primary's URL with its port + 1 (mariadb_pair.sh's layout)."""
    if os.environ.get("BENCH_DATABASE_REPLICA_URL"):
        return os.environ["BENCH_DATABASE_REPLICA_URL"]
    u = urlparse(primary_url)
    return u._replace(netloc=f"{u.netloc.rsplit(':', 1)[0]}:{(u.port or 3306) + 1}").geturl()


def start_pair(primary_url: str, replica_url: str) -> None:
    """Start (or reuse) the MariaDB primary + replica of those URLs with tests/support/mariadb_pair.sh."""
    p, r = urlparse(primary_url), urlparse(replica_url)
    env = {
        **os.environ,
        "MARIADB_PAIR_PORTS": f"{p.port or 3306} {r.port or 3306}",
        "MARIADB_PAIR_DATABASE": p.path.lstrip("/"),
        "MARIADB_PAIR_DIR": os.environ.get("BENCH_MARIADB_PAIR_DIR", "/tmp/concert-mariadb-pair"),
    }
    done = subprocess.run(
        [str(ROOT / "tests" / "support" / "mariadb_pair.sh"), "start"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the MariaDB pair did not start: {done.stdout}{done.stderr}")


def replica_selects(replica_url: str) -> int:
    """The replica server's Com_select counter (SELECT statements it has run since it started)."""
    with connect(replica_url, None) as conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com_select'")
        return int(cur.fetchone()[1])


def create_concert(api: ApiClient, sale_opens_at: dt.datetime | None = None) -> tuple[int, list[int]]:
    """The sale's concert through the admin API (with a fair start when `sale_opens_at` is given)."""
    starts = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    body: dict[str, Any] = {
        "title": "Flash sale",
        "venue": "Bench Hall",
        "schedules": [
            {"startsAt": (starts + dt.timedelta(days=i)).isoformat(), "seatCount": SEATS_PER_SCHEDULE, "price": PRICE}
            for i in range(SCHEDULES)
        ],
    }
    if sale_opens_at is not None:
        body["saleOpensAt"] = sale_opens_at.isoformat()
    status, _, out = api.post("/admin/concerts", body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if status != 201:
        raise SystemExit(f"POST /admin/concerts answered {status}: {out}")
    return int(out["concertId"]), [int(s["scheduleId"]) for s in out["schedules"]]


def _sign(user_id: int) -> str:
    """A fan's bearer token, as the identity service would sign it (HS256, 1 h)."""
    import jwt

    return str(jwt.encode({"sub": str(user_id), "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256"))


def charge_all(port: int, users: int, amount: int, threads: int = 8) -> float:
    """Charge users 1..N `amount` points each through the API (keep-alive connections); return seconds."""
    started = time.perf_counter()

    def charge(ids: range) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"amount": amount})
        try:
            for uid in ids:
                headers = {"Content-Type": "application/json", "Authorization": f"Bearer {_sign(uid)}"}
                conn.request("POST", f"/api/v1/users/{uid}/points/charge", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise SystemExit(f"charging user {uid} answered {resp.status}: {data[:200]!r}")
        finally:
            conn.close()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(charge, [range(1 + i, users + 1, threads) for i in range(threads)]))
    return time.perf_counter() - started


def wait_for_partitions(client: redis.Redis, partitions: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(lease_holders(client, partitions)) < partitions:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(lease_holders(client, partitions))}/{partitions} partitions leased")
        time.sleep(0.2)
