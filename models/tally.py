"""Prometheus samples tallied in memory per process and written into the metrics every second.

Under gunicorn, prometheus-client's multiprocess mode writes every sample into a per-process
mmap file under one process-wide lock, after a getpid() (a request's count and latency: three
writes and two label lookups, ~11 µs, a fifth of what /healthz added to a bare route:
bench/request_profile.py). The hot paths (every request, every seat map served from a process's
own copy) add to a dict under a lock instead, and a thread writes the sums every `every`
seconds; a scrape this process serves flushes first. What it costs: another worker's scrape
sees this one's last second a second late, and a worker killed with SIGKILL loses it
(gunicorn's worker_exit flushes a worker that exits normally).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from bisect import bisect_left
from typing import Any


class Tally:
    """Counts and observations of labelled prometheus metrics, written by flush()."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._times: dict[tuple[Any, tuple[str, ...]], list[float]] = {}  # a count per bucket, then the sum
        self._flusher = False
        os.register_at_fork(after_in_child=self._forked)

    def inc(self, counter: Any, labels: tuple[str, ...], amount: float = 1) -> None:
        """counter.labels(*labels).inc(amount), tallied."""
        key = (counter, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount
        if not self._flusher:
            self._start_flusher()

    def observe(self, histogram: Any, labels: tuple[str, ...], value: float) -> None:
        """histogram.labels(*labels).observe(value), tallied."""
        key = (histogram, labels)
        bounds = histogram._upper_bounds  # ends with +Inf
        bucket = bisect_left(bounds, value)  # the first bound >= value, as observe() picks
        with self._lock:
            found = self._times.get(key)
            if found is None:
                found = self._times[key] = [0.0] * (len(bounds) + 1)
            found[bucket] += 1
            found[-1] += value
        if not self._flusher:
            self._start_flusher()

    def count_and_observe(
        self, counter: Any, histogram: Any, labels: tuple[str, ...], extra: str, value: float
    ) -> None:
        """inc(counter, labels + (extra,)) and observe(histogram, labels, value) under one lock
        (a request's count by status and its latency: the one tally call every request makes)."""
        bounds = histogram._upper_bounds
        bucket = bisect_left(bounds, value)
        count_key = (counter, (*labels, extra))
        time_key = (histogram, labels)
        with self._lock:
            self._counts[count_key] = self._counts.get(count_key, 0) + 1
            found = self._times.get(time_key)
            if found is None:
                found = self._times[time_key] = [0.0] * (len(bounds) + 1)
            found[bucket] += 1
            found[-1] += value
        if not self._flusher:
            self._start_flusher()

    def flush(self) -> None:
        """Write what was tallied since the last flush into the prometheus metrics."""
        with self._lock:
            counts, self._counts = self._counts, {}
            times, self._times = self._times, {}
        for (counter, labels), amount in counts.items():
            counter.labels(*labels).inc(amount)
        for (histogram, labels), found in times.items():
            child = histogram.labels(*labels)
            for i, hits in enumerate(found[:-1]):
                if hits:
                    child._buckets[i].inc(hits)  # observe()'s own per-bucket value, n at once
            child._sum.inc(found[-1])

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._counts, self._times = {}, {}  # the parent's tally is the parent's to write
        self._flusher = False

    def _start_flusher(self) -> None:
        with self._lock:  # one flusher thread per process (a forked worker starts its own)
            if self._flusher:
                return
            self._flusher = True
        threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.every)
            with contextlib.suppress(Exception):  # a full disk must not end the thread
                self.flush()


TALLY = Tally()
