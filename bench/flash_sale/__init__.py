"""Flash sale over HTTP: N fans (locust) against the Procfile's processes, beside the framework and physical floors.

    .venv/bin/python -m bench.flash_sale            # 5,000 fans arriving at 500/s (1.5-2 minutes)
    .venv/bin/python -m bench.flash_sale --quick    # 1,000 fans arriving at 200/s (under a minute)
    .venv/bin/python -m bench.flash_sale --quick --redis-cluster --pairs 2
        # one Redis and the 6-node Redis Cluster back to back (pairs alternate which goes first), same
        # invocation: sell-out rate cluster / single per pair and their median -> flash_sale_cluster.json
    .venv/bin/python -m bench.flash_sale --bare-every 10    # one fan in 10 also GETs the bare route (default
        # 1: every fan, the bare route under the same requests as the service)
    .venv/bin/python -m bench.flash_sale --redis-nice 0     # leave the local Redis's CPU priority alone (default:
        # nice -10 for it and its session during the sale, put back afterwards; bench/flash_sale/priority.py)
    .venv/bin/python -m bench.flash_sale --arrivals poisson # fans spread over each second (locust starts each
        # second's fans at once); the first-request floor arrives the same way
    .venv/bin/python -m bench.flash_sale --no-poll-memo     # POLL_MEMO=0: every waiting poll asks Redis (default:
        # a web process answers far-back fans' polls itself, models/poll_memo.py)

1. Physical floor (quiet machine, before anything starts): raw Redis INCR round trips and raw MariaDB
   single-row INSERT + COMMIT, each from FLOOR_THREADS threads with one connection each.
2. The service: a fresh database (dropped, created, `python -m models migrate`), Redis db flushed, a Tansu
   broker on a free port, then `honcho start` of the Procfile (web gunicorn on :8181 (--port, BENCH_WEB_PORT)
   with config/gunicorn.py,
   `worker` x --workers, scheduler, consumer). One concert with 2 schedules x 50 seats is created through
   `POST /api/v1/admin/concerts`; every fan is charged the seat price through
   `POST /api/v1/users/{id}/points/charge` before the sale (the route a fan would use; not timed).
3. The sale: `locust -f bench/locustfile_flash.py --headless` (FastHttpUser, one process) spawns the fans at
   --spawn-rate; each joins the queue, polls until ACTIVE, reads a seat map, holds a random free seat
   (`Prefer: wait=5`), pays (`Idempotency-Key`, `Prefer: wait=5`) and stops (see the locustfile).
   Meanwhile a thread polls the database every 0.1 s: time to sell out runs from the first reservation
   row to the moment all seats are RESERVED. The same-run floor: gunicorn with the same config serves
   bench/bare_app.py on the next port for the whole sale, and every fan (--bare-every N: every Nth) GETs its
   /bare with each of its own requests, started just before it (`/bare (beside <endpoint>)`, on a second
   connection of that fan's, whose first request is the one beside the join): each endpoint's p50 is
   compared with the bare route's p50 at the same moments, under the same load, from the same locust process
   (`beside_lag_ms`: how far apart each pair started; the p50s of the ratios come from the trace, to
   0.01 ms, where locust's table rounds to whole ms). A second floor:
   the service's own gunicorn also serves the bare app at /floor/bare (bench/flash_sale/Procfile), GET the
   same way by other sampled fans (`/floor/bare (same server, beside <endpoint>)`): the bare route waiting
   in the same workers as the endpoint.
4. After the sale: waits for the outbox to be PUBLISHED and every event consumed, then
   `python -m models check`, plus oversold / double-payment / unpublished / open-job counts.
5. Framework floor, after the sale: the same bare gunicorn loaded by the same locustfile (FLASH_MODE=bare:
   GET back to back) with the same user count and spawn rate, a short run; then each fan's first request alone
   (FLASH_MODE=bare_once: one GET on a new connection at the same arrival rate), the floor of a join.

Locust's fans keep their connections: bench/idle_socket.py replaces geventhttpclient's select() check of an idle
connection, which failed past fd 1024 and re-opened three connections in four. Every request is traced
(bench/flash_sale/trace.py: how the joins arrived, each queue endpoint and its floors second by second), the
connections the fans open are counted by port, and the result says whether locust's table holds every request
the fans counted (`locust_stats_complete`).

locust runs with GEVENT_RESOLVER=block: gevent's default thread-pool resolver held every fan's first connect
behind locust's GIL (fans reached the server at ~100/s while 500/s were spawned).

The rate limiter stays on, with the per-IP limits raised (RATE_LIMIT_ISSUE_IP, RATE_LIMIT_POLL_IP): every
fan comes from 127.0.0.1. ACTIVE_LIMIT, ADMIT_INTERVAL and OUTBOX_INTERVAL keep their production defaults.

Env: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_flash, dropped and recreated; left in
place afterwards for inspection), BENCH_REDIS_URL (default redis://127.0.0.1:6379/7, flushed before and
after), BENCH_REDIS_CLUSTER_URL (--redis-cluster; default redis+cluster://127.0.0.1:7000, flushed too).
FLASH_KEEP_TMP=1 keeps the run's temporary directory (every log, the trace of every request) and prints its path.
Writes bench/results/flash_sale.json (--redis-cluster: flash_sale_cluster.json, every run of the pairs with
the comparison) and bench/results/locust/flash_{sale,bare}_{stats,failures}.csv.
Every process it starts (Tansu, honcho and the Procfile's process groups, locust, gunicorn) is stopped on
exit, on an exception, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


BIN = Path(sys.executable).parent


WEB_PORT = int(os.environ.get("BENCH_WEB_PORT", "8181"))  # --port; the bare floor's gunicorn on the next port


SEATS_PER_SCHEDULE, SCHEDULES, PRICE = 50, 2, 50_000


SEATS_TOTAL = SEATS_PER_SCHEDULE * SCHEDULES


ADMIN_TOKEN = "bench-flash-admin"
JWT_SECRET = "bench-flash-sale-jwt-secret-0123456789abcdef"  # AUTH_JWT_SECRET of the service; fans sign with it


FLOOR_THREADS = 4


REDIS_NICE = -10  # Redis's nice value for the run (its session's too): bench/flash_sale/priority.py
BARE_EVERY = 1  # every fan also GETs the bare route beside each of its requests: the bare route under the same load


ENDPOINTS = (
    "/queue/tokens",
    "/queue/token",
    "/schedules/[id]/seats",
    "/reservations",
    "/payments",
    "/jobs/[id]",
    "/queue/token [DELETE]",
)


class Interrupted(Exception):
    """Raised by the SIGTERM handler so that every `finally` runs."""
