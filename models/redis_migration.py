"""Keys of the single-node layout (before the cluster-safe one of 2026-12-02) still in a Redis.

`python -m models redis-migrate --check` lists them by family and exits 1 while something must
still drain; `--clean` deletes the families that are only derived data. The upgrade procedure is
in docs/ARCHITECTURE.md ("Moving a running single-node deployment to the cluster-safe keys").

Families that changed names (git log -S'{j:' -S'{dq:' -S'{s:'; the waiting room had its `{c:N}`
tag from the start and keeps its names):

  seat queues      dramatiq:seats.pN(.msgs|.DQ|.XQ…), dramatiq:__acks__.*, dramatiq:__heartbeats__
                   -> dramatiq:{dq:pN}:…                  drain: the old workers finish them
  job records      job:<id>, job:<id>:done -> job:{j:<id>}…  read-both for a release (workers/jobs.py)
  wake-up lists    wake:seats.pN -> wake:{dq:pN}          delete (a hint, pushed again by the next send)
  catalogue cache  cache:ver|seats|avail:<scheduleId>, cache:sched:<concertId>, cache:lock:*
                   -> cache:{s:ID}:…, cache:{c:N}:sched   delete (filled from the database on a miss)

The old names are written out here once, as history: this module only reads and deletes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DRAIN, READ_BOTH, DELETE = "drain", "read-both", "delete"


@dataclass(frozen=True)
class Family:
    """One key family of the old layout: the SCAN patterns that find it and what to do with it."""

    name: str
    patterns: tuple[str, ...]
    path: str


FAMILIES = (
    Family("seat queues", ("dramatiq:seats.p*", "dramatiq:__acks__.*", "dramatiq:__heartbeats__"), DRAIN),
    Family("job records", ("job:[^{]*",), READ_BOTH),
    Family("wake-up lists", ("wake:seats.p*",), DELETE),
    Family(
        "catalogue cache", ("cache:ver:*", "cache:seats:*", "cache:avail:*", "cache:sched:*", "cache:lock:*"), DELETE
    ),
)


@dataclass
class Report:
    """What is left of the old layout: keys per family, and what still has to drain."""

    keys: dict[str, list[str]] = field(default_factory=dict)
    queued_messages: int = 0  # in the old seat queues (waiting, delayed or unacknowledged)
    dead_messages: int = 0  # in the old queues' dead-letter sets (.XQ): never run again
    open_jobs: int = 0  # old job records not SUCCEEDED/FAILED

    @property
    def must_drain(self) -> bool:
        """True while an old worker still has work: the new code would never run it."""
        return self.queued_messages > 0 or self.open_jobs > 0

    def lines(self) -> list[str]:
        """The report as printed by `python -m models redis-migrate --check`."""
        out = [f"{f.name}: {len(self.keys.get(f.name, []))} old key(s) ({f.path})" for f in FAMILIES]
        out.append(
            f"to drain: {self.queued_messages} message(s) in the old seat queues, "
            f"{self.open_jobs} old job(s) not finished; {self.dead_messages} dead-lettered message(s)"
        )
        out.append("old workers must drain before the switch" if self.must_drain else "nothing left to drain")
        return out


def check(client: Any) -> Report:
    """Scan for the old layout's keys (SCAN, never KEYS) and count what must still drain."""
    report = Report()
    for family in FAMILIES:
        found: set[str] = set()
        for pattern in family.patterns:
            found.update(_text(k) for k in client.scan_iter(match=pattern, count=1000))
        report.keys[family.name] = sorted(found)
    for key in report.keys["seat queues"]:
        if key.endswith(".XQ.msgs"):
            report.dead_messages += int(client.hlen(key))
        elif key.endswith(".msgs"):  # a queue's (or its delay queue's) message bodies, acked ones removed
            report.queued_messages += int(client.hlen(key))
    for key in report.keys["job records"]:
        if not key.endswith(":done") and _text(client.hget(key, "status") or "") not in ("SUCCEEDED", "FAILED"):
            report.open_jobs += 1
    return report


def clean(client: Any) -> int:
    """Delete the old keys that are only derived data (wake-up lists, the catalogue cache); never a
    queue or a job record. Returns how many keys were deleted."""
    deleted = 0
    for family in FAMILIES:
        if family.path != DELETE:
            continue
        for pattern in family.patterns:
            for key in list(client.scan_iter(match=pattern, count=1000)):
                deleted += int(client.delete(key))
    return deleted


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
