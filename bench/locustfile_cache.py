"""Locust load of one GET path (the cached seat map, or the bare Flask route) by bench/cache_bench.py.

Env: LOCUST_PATH (the path to GET), LOCUST_TOKENS (comma-separated queue tokens, one per user, optional).
"""

from __future__ import annotations

import itertools
import os

from locust import FastHttpUser, constant, task

PATH = os.environ.get("LOCUST_PATH", "/")
TOKENS = [t for t in os.environ.get("LOCUST_TOKENS", "").split(",") if t]
_users = itertools.count()


class Reader(FastHttpUser):
    """GETs the path back to back (no think time); a non-200 answer is a failure."""

    wait_time = constant(0)

    def on_start(self) -> None:
        n = next(_users)
        self.headers = {"X-Queue-Token": TOKENS[n % len(TOKENS)]} if TOKENS else {}

    @task
    def read(self) -> None:
        self.client.get(PATH, headers=self.headers, name="GET")
