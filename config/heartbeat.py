"""Liveness of the processes that serve no HTTP (worker, scheduler, consumer).

With `HEARTBEAT_FILE` set (docker-compose.yml sets it), each process touches that file from its
own loop (a partition worker's ownership tick, a scheduler job, the consumer's poll loop), so a
hung loop stops the heartbeat while a mere process check would still pass. The probe:

    python -m config.heartbeat /tmp/heartbeat 30    # exit 0 if touched within 30 s, else 1
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

ENV = "HEARTBEAT_FILE"


def beat() -> None:
    """Touch HEARTBEAT_FILE (nothing without it; a failed touch only fails the probe later)."""
    path = os.environ.get(ENV)
    if path:
        with contextlib.suppress(OSError):
            Path(path).touch()


def age(path: str) -> float | None:
    """Seconds since the file was touched (None when it does not exist)."""
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """The probe: `python -m config.heartbeat FILE MAX_AGE_SECONDS`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m config.heartbeat", description="Exit 0 while FILE is fresh.")
    parser.add_argument("file", metavar="FILE", help="the process's HEARTBEAT_FILE")
    parser.add_argument("max_age", metavar="MAX_AGE", type=float, help="seconds the last beat may be old")
    args = parser.parse_args(argv)
    seconds = age(args.file)
    if seconds is None or seconds > args.max_age:
        print(f"no heartbeat in {args.file} for {'ever' if seconds is None else f'{seconds:.0f} s'}", file=sys.stderr)
        return 1
    print(f"heartbeat {seconds:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
