"""The preamble of every command-line entry point: logging, then the settings or a one-line exit.

`python -m workers`, `python -m scheduler`, `python -m models` and `make run` start here, so a
bad variable reads the same everywhere: `configuration error: <NAME> ...`, exit status 2.
"""

from __future__ import annotations

import logging
import sys

from config.settings import Settings, SettingsError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("kafka",)  # libraries whose INFO lines drown ours


def setup_logging(*, quiet: tuple[str, ...] = NOISY) -> None:
    """INFO to stderr with timestamps; `quiet` loggers only from WARNING."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def settings_or_exit() -> Settings:
    """Settings from the environment; on a bad value, one line naming the variable and exit 2."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def start(*, quiet: tuple[str, ...] = NOISY) -> Settings:
    """setup_logging, then settings_or_exit: the first two lines of a long-running process."""
    setup_logging(quiet=quiet)
    return settings_or_exit()
