"""One logging setup for every process (web, workers, scheduler, CLIs, `make run`).

`LOG_LEVEL` (default INFO) sets this project's loggers; APScheduler, Kafka, urllib3 and the
other libraries stay at WARNING so an idle service is quiet. `LOG_FORMAT=text` (default) writes
`time LEVEL logger: message [req=… job=…]`; `LOG_FORMAT=json` writes one JSON object a line
(`ts`, `level`, `logger`, `msg`, `requestId`, `jobId`, and `exc` for tracebacks).

The request id (`X-Request-Id`, set by web/ for each request) and the job id (set by the worker
for each message) live in context variables, so any log line written while handling a request
or a job carries them without being passed around. Like config/settings.py this module stands
below every room: web/, workers/ and scheduler/ may import it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import logging.config
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("job_id", default=None)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
# Libraries that log every tick or connection at INFO: kept at WARNING whatever LOG_LEVEL says.
# peewee-migrate's per-step lines ("migrations") are summed up in one line by whoever migrates.
QUIET = (
    "apscheduler",
    "kafka",
    "urllib3",
    "dramatiq",
    "peewee",
    "peewee_migrate",
    "migrations",
    "fakeredis",
    "werkzeug",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"


class LoggingConfigError(ValueError):
    """Raised when LOG_LEVEL or LOG_FORMAT has a value this setup does not know."""


class ContextFilter(logging.Filter):
    """Stamp every record with the current request id and job id (None outside a request/job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        parts = [f"req={request_id}"] if request_id else []
        parts += [f"job={job_id}"] if job_id else []
        record.__dict__.update(request_id=request_id, job_id=job_id, context=f" [{' '.join(parts)}]" if parts else "")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, msg, requestId, jobId[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for attr, key in (("request_id", "requestId"), ("job_id", "jobId")):
            if getattr(record, attr, None):
                out[key] = getattr(record, attr)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def read_env(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(LOG_LEVEL, LOG_FORMAT) from the environment, checked; LoggingConfigError names the variable."""
    env = os.environ if env is None else env
    level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    fmt = (env.get("LOG_FORMAT") or "text").strip().lower()
    if level not in LEVELS:
        raise LoggingConfigError(f"LOG_LEVEL must be one of {', '.join(LEVELS)} (got {level!r})")
    if fmt not in FORMATS:
        raise LoggingConfigError(f"LOG_FORMAT must be text or json (got {fmt!r})")
    return level, fmt


def dict_config(level: str = "INFO", fmt: str = "text", *, server_level: str | None = None) -> dict[str, Any]:
    """The logging.config.dictConfig of every process (gunicorn's `logconfig_dict` too).

    `server_level`: gunicorn's own lines (start, listening, workers booting; `make run` keeps
    only its warnings, its banner says where it listens).
    """
    formatter: dict[str, Any] = {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "main",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.ContextFilter"}},
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"level": level, "handlers": ["main"]},
        "loggers": {
            **{name: {"level": max(level, "WARNING", key=LEVELS.index)} for name in QUIET},
            # gunicorn's own loggers: same handler, no second copy through the root
            "gunicorn.error": {"level": server_level or level, "handlers": ["main"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["main"], "propagate": False},
        },
    }


def setup(env: Mapping[str, str] | None = None) -> None:
    """Configure logging from LOG_LEVEL / LOG_FORMAT (raises LoggingConfigError on a bad value)."""
    level, fmt = read_env(env)
    logging.config.dictConfig(dict_config(level, fmt))
    lean_records()


def lean_records() -> None:
    """Skip what every LogRecord gathers and no format here writes: the caller's file and line (a
    walk up the stack), the thread, the process id and name (the logging HOWTO's "Optimization").

    A partition worker writes one INFO line per job; at ~28 us of CPU a line that was a tenth of a
    group-committed hold's worker CPU (bench/group_costs.py, 2026-12-03); these cut ~a third of it.
    """
    logging._srcfile = None  # type: ignore[attr-defined]  # documented: "set logging._srcfile to None"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def access_log_enabled(env: Mapping[str, str] | None = None, *, default: bool = False) -> bool:
    """ACCESS_LOG: `1`/`true`/`on` (or `-`, gunicorn's old spelling) logs one line per request."""
    value = (os.environ if env is None else env).get("ACCESS_LOG")
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "true", "yes", "on", "-")


@contextlib.contextmanager
def job_context(job_id: str | None, request_id: str | None = None) -> Iterator[None]:
    """Log lines written inside carry this job id (and the id of the request that queued it)."""
    job_token = JOB_ID.set(job_id)
    request_token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(request_token)
        JOB_ID.reset(job_token)
