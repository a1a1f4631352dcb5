"""Every request of the sale as locust timed it (the locustfile's FLASH_TRACE): second by second, and how fans arrived.

Locust's -r 500 does not spread fans over the second: its dispatcher starts each second's 500 at once,
and 90 % of a second's joins go out within 230-350 ms of its first (2026-12-04, full runs), so the service takes
each second's joins as one burst. `arrivals` measures that spread; `by_second` sets each queue
endpoint's p50 beside its floors' in the same second.
"""

from __future__ import annotations

import glob
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

JOIN = "/queue/tokens"
QUEUE = (JOIN, "/queue/token", "/queue/token [DELETE]")

Trace = list[tuple[float, str, float]]  # (start, epoch s; request name; response time, ms)


def read(prefix: Path) -> Trace:
    """The trace files locust processes wrote (`<prefix>.<pid>`), merged in start order."""
    rows: Trace = []
    for path in glob.glob(f"{prefix}.*"):
        rows += [(float(t), str(n), float(ms)) for t, n, ms in json.loads(Path(path).read_text())]
    return sorted(rows)


def arrivals(trace: Trace, name: str = JOIN) -> dict[str, Any]:
    """How the fans' first requests spread over each whole second of the arrivals: the median over those
    seconds of the ms from a second's first join to its 90th-percentile one (~900 ms if they were spread
    evenly over the second)."""
    if not trace:
        return {}
    t0 = trace[0][0]
    seconds: dict[int, list[float]] = defaultdict(list)
    for start, n, _ in trace:
        if n == name:
            seconds[int(start - t0)].append((start - t0) % 1 * 1000)
    full = [sorted(v) for v in seconds.values() if len(v) >= 50]
    if not full:
        return {}
    spans = [v[int(len(v) * 0.9) - 1] - v[0] for v in full]
    return {"seconds": len(full), "joins_a_second": round(statistics.median(len(v) for v in full)),
            "ms_for_90pct_of_a_seconds_joins": round(statistics.median(spans))}  # fmt: skip


def by_second(trace: Trace, limit: int = 60) -> dict[str, list[tuple[int, int, float]]]:
    """For each queue endpoint and each floor beside it: (second of the sale, requests started, p50 ms)."""
    if not trace:
        return {}
    t0 = trace[0][0]
    wanted = (
        set(QUEUE) | {f"/bare (beside {q})" for q in QUEUE} | {f"/floor/bare (same server, beside {q})" for q in QUEUE}
    )
    cells: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for start, n, ms in trace:
        second = int(start - t0)
        if n in wanted and second < limit:
            cells[n][second].append(ms)
    return {
        n: [(s, len(v), round(statistics.median(v), 1)) for s, v in sorted(per.items())]
        for n, per in sorted(cells.items())
    }


def exact_p50s(trace: Trace) -> dict[str, float]:
    """Each queue endpoint's p50 and its floors', in ms to 0.01 ms, from the trace. Locust's table rounds a
    time under 100 ms to a whole ms, so a 1.4 ms poll beside a 1.2 ms floor read 1 against 1, a 1.6 ms one 2
    against 1: the ratio of two such p50s is off by up to 2x. The trace holds each request's own time."""
    wanted = (
        set(QUEUE) | {f"/bare (beside {q})" for q in QUEUE} | {f"/floor/bare (same server, beside {q})" for q in QUEUE}
    )
    times: dict[str, list[float]] = defaultdict(list)
    for _, n, ms in trace:
        if n in wanted:
            times[n].append(ms)
    return {n: round(statistics.median(v), 2) for n, v in sorted(times.items())}
