"""Redis's CPU priority on the benchmark's shared machine (`--redis-nice`, default -10).

On this machine the sale's Redis shares 2 CPUs with locust, the service's and the bare floor's
gunicorns, the Dramatiq worker, MariaDB and the Kafka broker. Linux gives each session an equal share
of the CPUs when they are all busy (autogroup scheduling, `kernel.sched_autogroup_enabled`), Redis's
session included: a poll that sends its one script to Redis then waits for Redis's turn on a CPU, and
a bare route, which calls nothing, does not. In production Redis has cores of its own. Here its
session's nice value (and its process's, for a kernel without autogroup) is lowered for the sale and
put back afterwards, as an operator would run a latency-critical store on a shared host. Redis uses a
few percent of the CPUs, so a larger weight makes it run when it has work, not run more.

Only local Redis servers are touched (a process id from INFO that is a redis-server here); lowering a
nice value needs root or CAP_SYS_NICE, and without it nothing changes and the run records that.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Raised:
    """A process whose priority was raised, and what it was before."""

    pid: int
    group_nice: int | None  # its autogroup's nice before (None: no autogroup here)
    nice: int


def redis_server_pids(client: Any) -> list[int]:
    """The process ids of the Redis servers behind `client` (every node of a RedisCluster) that run here."""
    nodes = client.get_nodes() if hasattr(client, "get_nodes") else None
    connections = [node.redis_connection for node in nodes] if nodes else [client]
    pids = set()
    for connection in connections:
        with contextlib.suppress(Exception):
            pid = int(connection.info("server")["process_id"])
            if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.add(pid)
    return sorted(pids)


def group_nice(pid: int) -> int | None:
    """The nice value of the process's autogroup (`/autogroup-N nice K`), None without autogroup."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def raise_priority(pid: int, nice: int) -> Raised | None:
    """Set the process's autogroup nice and its own nice to `nice`; None if not permitted (nothing changed)."""
    before = Raised(pid=pid, group_nice=group_nice(pid), nice=os.getpriority(os.PRIO_PROCESS, pid))
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        if before.group_nice is not None:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        restore(before)
        return None
    return before


def restore(raised: Raised) -> None:
    """Put back what raise_priority changed (a process that has exited is left alone)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, raised.pid, raised.nice)
        if raised.group_nice is not None:
            Path(f"/proc/{raised.pid}/autogroup").write_text(str(raised.group_nice))
