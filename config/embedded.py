"""`make run`: the whole service in one process with embedded defaults.

SQLite under var/, an in-process Redis (fakeredis), the in-process event bus; web under
gunicorn (one worker, threads), plus the background parts (partition workers, scheduler,
consumer) as threads of that worker, running the same code paths as production.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from config import logs
from config.cli import setup_logging
from config.settings import Settings, settings_or_exit

log = logging.getLogger("embedded")

# Background parts register a starter here: each gets the Settings and returns a stop function.
BACKGROUND: list[Callable[[Settings], Callable[[], None]]] = []
_stops: list[Callable[[], None]] = []


def _start_scheduler(settings: Settings) -> Callable[[], None]:
    """The scheduler (admission, expiry, outbox) as a background thread, behind the same leader lease."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from config.bootstrap import bootstrap
    from scheduler import jobs
    from scheduler.leader import LeaderLease

    services = bootstrap(settings)
    lease = LeaderLease(services.redis)
    background = BackgroundScheduler(timezone="UTC")
    jobs.install(background, services, lease)
    background.start()

    def stop() -> None:
        background.shutdown(wait=False)
        lease.release()

    return stop


def _start_workers(settings: Settings) -> Callable[[], None]:
    """The partition workers as threads (same leases and consumer loop as `python -m workers run`)."""
    import threading

    from config.bootstrap import bootstrap
    from workers.batch import partition_worker

    services = bootstrap(settings)
    worker = partition_worker(services)
    thread = threading.Thread(target=worker.run, name="partition-worker", daemon=True)
    thread.start()

    def stop() -> None:
        worker.stop()
        thread.join(timeout=15)

    return stop


BACKGROUND.append(_start_workers)
BACKGROUND.append(_start_scheduler)


def _prepare(settings: Settings) -> Any:
    """Migrate, seed the demo concert, build the app (its cache warm-up sees the schema), start the rest."""
    from config.bootstrap import bootstrap
    from models import schema, seed
    from web import create_app

    bootstrap(settings)
    applied = schema.migrate()
    log.info("schema: %s", f"applied {', '.join(applied)}" if applied else "up to date")
    demo = seed.seed_demo()
    if demo:
        log.info("demo concert %s created", demo)
    app = create_app(settings)
    for start in BACKGROUND:
        _stops.append(start(settings))
    return app


class EmbeddedServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with one worker (the web's own class, config/gthread.py) that holds every part of the service."""

    def __init__(self, settings: Settings) -> None:
        self.settings_ = settings
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("bind", f"{self.settings_.host}:{self.settings_.port}")
        self.cfg.set("workers", 1)
        self.cfg.set("worker_class", "config.gthread.SharedPollWorker")  # as config/gunicorn.py
        self.cfg.set("control_socket_disable", True)  # no host-wide control socket shared between instances
        self.cfg.set("threads", 16)
        # as config/gunicorn.py: an idle fan's connection outlives its longest paced wait (ARCHITECTURE "Keep-alive")
        self.cfg.set("keepalive", int(self.settings_.poll_max_interval) + 30)
        self.cfg.set("timeout", 60)
        self.cfg.set("graceful_timeout", 10)
        self.cfg.set("worker_exit", lambda server, worker: [stop() for stop in _stops])
        self.cfg.set("logconfig_dict", logs.dict_config(*logs.read_env(), server_level="WARNING"))

    def load(self) -> Any:
        return _prepare(self.settings_)


def redacted(url: str) -> str:
    """A URL fit for a log line: any password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def main() -> None:
    """Read settings (embedded defaults), print how to use it, serve until Ctrl-C."""
    import secrets

    os.environ.setdefault("ADMIN_TOKEN", "dev-admin-token")
    os.environ.setdefault("ACCESS_LOG", "1")
    setup_logging()
    os.environ.setdefault("AUTH_DEV_LOGIN", "true")
    if not os.environ.get("AUTH_JWT_SECRET"):  # a secret given in the environment is kept
        os.environ["AUTH_JWT_SECRET"] = secrets.token_urlsafe(32)
    settings = settings_or_exit()
    print(banner(settings), flush=True)
    EmbeddedServer(settings).run()


def banner(settings: Settings) -> str:
    """What `make run` prints: where things are and a ready-to-paste sign-in and first call."""
    base = f"http://{settings.host}:{settings.port}/api/v1"
    login = (
        f"TOKEN=$(curl -s -X POST {base}/dev/login -H 'Content-Type: application/json' -d '{{\"userId\": 1}}' "
        "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"accessToken\"])')"
    )
    lines = [
        f"Concert reservation service (database {redacted(settings.database_url)}, "
        f"redis {redacted(settings.redis_url)})",
        f"  fan page : http://{settings.host}:{settings.port}/",
        f"  console  : http://{settings.host}:{settings.port}/admin (ADMIN_TOKEN below)",
        f"  API docs : {base}/docs",
        f"  try      : curl -s {base}/concerts",
    ]
    if settings.auth_dev_login:
        lines += [
            f"  sign in  : {login}",
            f'             curl -s -X POST {base}/me/points/charge -H "Authorization: Bearer $TOKEN" '
            "-H 'Content-Type: application/json' -d '{\"amount\": 100000}'",
        ]
    lines += [f"  admin    : Authorization: Bearer {settings.admin_token}", "  Ctrl-C stops everything."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
