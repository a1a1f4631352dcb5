"""The preamble of the long-running entry points: logging, then the settings or a one-line exit.

`python -m workers` and `python -m scheduler` start here; they, `python -m models` and `make run`
read settings through config.settings.settings_or_exit, so a bad variable reads the same
everywhere: `configuration error: <NAME> ...`, exit status 2.
"""

from __future__ import annotations

import logging

from config.settings import Settings, settings_or_exit

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("kafka",)  # libraries whose INFO lines drown ours


def setup_logging(*, quiet: tuple[str, ...] = NOISY) -> None:
    """INFO to stderr with timestamps; `quiet` loggers only from WARNING."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def start(*, quiet: tuple[str, ...] = NOISY) -> Settings:
    """setup_logging, then settings_or_exit: the first two lines of a long-running process."""
    setup_logging(quiet=quiet)
    return settings_or_exit()
