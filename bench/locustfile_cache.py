"""Locust load of one GET path (the cached seat map, or the bare Flask route) by bench/cache_bench.py.

Env: LOCUST_PATH (the path to GET), LOCUST_TOKENS (comma-separated queue tokens, one per user, optional),
LOCUST_BEARERS (comma-separated bearer JWTs of those users, same order: the seat map needs the identity).
"""

from __future__ import annotations

import itertools
import os

from locust import FastHttpUser, constant, task

PATH = os.environ.get("LOCUST_PATH", "/")
TOKENS = [t for t in os.environ.get("LOCUST_TOKENS", "").split(",") if t]
BEARERS = [b for b in os.environ.get("LOCUST_BEARERS", "").split(",") if b]
_users = itertools.count()


class Reader(FastHttpUser):
    """GETs the path back to back (no think time); a non-200 answer is a failure."""

    wait_time = constant(0)

    def on_start(self) -> None:
        n = next(_users)
        self.headers = {"X-Queue-Token": TOKENS[n % len(TOKENS)]} if TOKENS else {}
        if BEARERS:  # the token's user, signed in
            self.headers["Authorization"] = f"Bearer {BEARERS[n % len(BEARERS)]}"

    @task
    def read(self) -> None:
        self.client.get(PATH, headers=self.headers, name="GET")
