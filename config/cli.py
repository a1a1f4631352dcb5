"""The preamble of the long-running entry points: logging, then the settings or a one-line exit.

`python -m workers` and `python -m scheduler` start here; they, `python -m models` and `make run`
read settings through config.settings.settings_or_exit, so a bad variable reads the same
everywhere: `configuration error: <NAME> ...`, exit status 2.
"""

from __future__ import annotations

import logging
import sys

from config import logs
from config.settings import Settings, one_line_errors, settings_or_exit, unreachable

__all__ = ["one_line_errors", "require_shared_redis", "setup_logging", "start", "unreachable"]

NOISY = ("kafka",)  # libraries whose INFO lines drown ours (config.logs.QUIET has them all)


def setup_logging(*, quiet: tuple[str, ...] = NOISY) -> None:
    """config.logs.setup (LOG_LEVEL, LOG_FORMAT); a bad value is one line naming it, exit 2."""
    try:
        logs.setup()
    except logs.LoggingConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))


def start(*, quiet: tuple[str, ...] = NOISY) -> Settings:
    """setup_logging, then settings_or_exit: the first two lines of a long-running process."""
    setup_logging(quiet=quiet)
    return settings_or_exit()


EMBEDDED_REDIS = (
    "the embedded Redis lives inside the `make run` process; set REDIS_URL (and DATABASE_URL) to the "
    "servers the service uses to {what} from outside it"
)


def require_shared_redis(settings: Settings, *, what: str) -> None:
    """Refuse (one line, exit 2) a command that would otherwise open a private, empty in-memory Redis."""
    from config.settings import EMBEDDED

    if settings.redis_url == EMBEDDED:
        print(f"error: {EMBEDDED_REDIS.format(what=what)}", file=sys.stderr)
        raise SystemExit(2)
