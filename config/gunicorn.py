"""gunicorn settings for the web process: `gunicorn -c config/gunicorn.py "web:create_app()"`."""

from __future__ import annotations

import logging
import os
import tempfile

from gunicorn.glogging import Logger

from config import logs
from config.settings import Settings, SettingsError, _int

try:
    _settings = Settings.from_env()
    logconfig_dict = logs.dict_config(*logs.read_env())  # LOG_LEVEL, LOG_FORMAT; ACCESS_LOG: web/requestlog.py
    from web.auth import Verifier

    Verifier(_settings)  # the web process serves user routes: it needs a key to verify identities
except (SettingsError, logs.LoggingConfigError) as exc:  # one line naming the variable, then exit
    raise SystemExit(f"configuration error: {exc}") from None


def _whole(name: str, default: int) -> int:
    """Settings' integer rule (config/settings.py _int), or one line naming the variable, then exit."""
    try:
        return _int(os.environ, name, default, 1, 1_000_000)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


bind = f"{_settings.host}:{_settings.port}"
workers = _whole("WEB_CONCURRENCY", 2)
# gthread's threads and parser, each thread waiting on the worker's epoll itself: one wake-up a request, not
# gthread's loop -> pool -> loop hand-offs (-18 % server CPU a request, bench/server_overhead.py); a new
# connection takes a thread only once its request has arrived (config/gthread.py)
worker_class = "config.gthread.SharedPollWorker"
threads = _whole("WEB_THREADS", 8)
timeout = 30
graceful_timeout = 20
# An idle keep-alive connection is closed by the client side, never by gunicorn while a client may
# still send on it: gunicorn closes an expired one at the end of its event-loop pass, after it looked
# for readable sockets, so a request that arrives in that pass is dropped unanswered, and a client
# does not resend a POST (RFC 9110 9.2.2). The flash sale lost 36 holds and 54 payments that way
# (2026-12-02) with keepalive 5 s while paced fans idle up to POLL_MAX_INTERVAL (30 s). So: longer
# than the longest gap a fan leaves between two requests, plus a margin; a proxy or load balancer in
# front must have an idle timeout below this (docs/ARCHITECTURE.md "Keep-alive").
keepalive = _whole("WEB_KEEPALIVE", int(_settings.poll_max_interval) + 30)
# Every waiting fan keeps its connection for its whole wait: a worker holds the fans of its share.
# Past worker_connections - threads kept-alive connections gunicorn answers "Connection: close"
# (a new TCP connection per request); past worker_connections it stops accepting.
# An idle connection costs one fd and ~2.7 KB of worker memory (3,000 idle: +8 MB RSS, 2026-12-02 16:48 UTC).
worker_connections = _whole("WEB_WORKER_CONNECTIONS", 4000)
errorlog = "-"
# How long a thread may hold the GIL while another waits for it (sys.setswitchinterval), in µs.
# A request thread whose Redis reply or socket is ready waits up to this long for a thread that is
# running Python (a join, a JWT); Python's default is 5,000. Flash sale, 5,000 fans (2026-12-03
# 07:56-08:01 UTC, load 4.4-6.9, one run each): join p50 200 ms at 1,000 µs vs 1,400 ms at 5,000 µs
# (--quick pairs 140 vs 310 and 350 vs 860 ms); poll p50 320 vs 300 ms.
_GIL_SWITCH_US = _whole("WEB_GIL_SWITCH_US", 1000)


class QuietAccessLogger(Logger):
    """gunicorn's logger, except that a request's access line is built only when `gunicorn.access`
    would write it. gunicorn turns its access log on whenever `logconfig_dict` is set (here: for
    its own lines) and then builds ~20 log atoms a request (~30 µs) for a logger at WARNING that
    drops them; ACCESS_LOG's line is web/requestlog.py's."""

    def access(self, resp: object, req: object, environ: object, request_time: object) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


logger_class = QuietAccessLogger

# prometheus-client multiprocess mode: every worker writes its samples into this directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="concert-metrics-")
else:
    try:
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"configuration error: PROMETHEUS_MULTIPROC_DIR cannot be created: {exc}") from None

# gunicorn's control socket defaults to one path per host ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl):
# a second instance on the host would take it over. None unless a path per instance is given.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or "gunicorn.ctl"
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")


def post_worker_init(worker: object) -> None:
    """Freeze what start-up left (the app, its modules, ~97k objects) out of the garbage collector.

    Every full collection scanned them all: 57-65 ms in-process on this machine, and in a flash sale
    (5,000 fans, 2026-12-02 20:54 UTC, load 6-9) each worker ran 3 full collections of up to 465 ms,
    and 22-30 pauses over 20 ms, each stopping all of its threads and its accept loop. Frozen objects
    are never scanned again; what requests allocate is collected as before."""
    import gc
    import sys

    gc.collect()
    gc.freeze()
    sys.setswitchinterval(_GIL_SWITCH_US / 1_000_000)


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def worker_exit(server: object, worker: object) -> None:
    """Write the exiting worker's last tallied samples into its metrics files (models/tally.py)."""
    from models.tally import TALLY

    TALLY.flush()
