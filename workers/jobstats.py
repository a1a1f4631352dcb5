"""Job outcome counters and duration histograms per job type, kept in Redis for /metrics.

Jobs finish in whichever process owns the seat's partition (a worker, or `make run`'s threads),
and /metrics is served by the web processes; a Redis hash is the one place they all see.

stats:jobs  HASH  `<type>|<outcome>` -> count (outcome succeeded or failed),
                  `<type>|b|<i>` -> jobs whose duration fell in bucket i (non-cumulative),
                  `<type>|sum` -> total seconds.
The duration is from the request (the job record's creation) to the outcome: what the fan waits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

STATS_KEY = "stats:jobs"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("succeeded", "failed")


@dataclass
class TypeStats:
    """One job type's counters and histogram (cumulative bucket counts, as Prometheus wants them)."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total_seconds: float = 0.0

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, count)] including +Inf."""
        out, running = [], 0
        for le, count in zip([*(f"{b:g}" for b in BUCKETS), "+Inf"], self.buckets, strict=True):
            running += count
            out.append((le, running))
        return out


def bucket_of(seconds: float) -> int:
    """The index of the first bucket whose bound is ≥ seconds (len(BUCKETS) = +Inf)."""
    return next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))


def record(client: redis.Redis, outcomes: Iterable[tuple[str, str, float]], *, pipe: Any = None) -> None:
    """Count finished jobs: (type, outcome, seconds) each; one round trip (or added to `pipe`).

    The counts are summed per field first, so a batch adds one HINCRBY per field it touches (a
    group of 32 holds: 3 commands, where a HINCRBY, a HINCRBY and a HINCRBYFLOAT per job made 96,
    a third of the group's finish pipeline; bench/group_costs.py, 2026-12-03).
    """
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for job_type, outcome, seconds in outcomes:
        for name in (f"{job_type}|{outcome}", f"{job_type}|b|{bucket_of(seconds)}"):
            counts[name] = counts.get(name, 0) + 1
        sums[f"{job_type}|sum"] = sums.get(f"{job_type}|sum", 0.0) + max(0.0, seconds)
    if not counts:
        return
    own = pipe is None
    pipe = client.pipeline(transaction=False) if own else pipe
    for name, count in counts.items():
        pipe.hincrby(STATS_KEY, name, count)
    for name, total in sums.items():
        pipe.hincrbyfloat(STATS_KEY, name, total)
    if own:
        pipe.execute()


def read(client: redis.Redis) -> dict[str, TypeStats]:
    """Every job type's stats."""
    found: dict[str, TypeStats] = {}
    raw: dict[Any, Any] = client.hgetall(STATS_KEY) or {}  # type: ignore[assignment]
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        job_type, _, rest = name.partition("|")
        stats = found.setdefault(job_type, TypeStats())
        if rest == "sum":
            stats.total_seconds = float(value)
        elif rest.startswith("b|"):
            index = int(rest[2:])
            if 0 <= index < len(stats.buckets):
                stats.buckets[index] = int(value)
        elif rest in OUTCOMES:
            stats.outcomes[rest] = int(value)
    return found
