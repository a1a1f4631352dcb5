"""A leader lease in Redis: exactly one scheduler acts; a standby takes over when the lease lapses."""

from __future__ import annotations

import contextlib
import threading

import redis

from models.leases import Leases, holder_id
from models.redis_support import ANY_REDIS_ERROR


class LeaderLease:
    """Hold `key` while alive: acquire with SET NX PX, renew by compare-and-expire, release on stop."""

    def __init__(self, client: redis.Redis, *, key: str = "scheduler:leader", ttl: float = 10.0) -> None:
        self.r = client
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.identity = holder_id()
        self.leases = Leases(client, holder=self.identity, ttl_ms=self.ttl_ms)
        self._leader = False
        self._lock = threading.Lock()

    @property
    def is_leader(self) -> bool:
        """True while this process holds the lease (as of the last tick)."""
        return self._leader

    def tick(self) -> bool:
        """Acquire or renew the lease; return whether this process leads now."""
        with self._lock:
            try:
                if self._leader and self.leases.renew(self.key):
                    return True
                self._leader = self.leases.take(self.key)
            except ANY_REDIS_ERROR:
                self._leader = False  # cannot prove we lead: stand down until Redis answers
            return self._leader

    def release(self) -> None:
        """Give the lease up so a standby takes over at once."""
        with self._lock:
            with contextlib.suppress(*ANY_REDIS_ERROR):
                self.leases.release(self.key)
            self._leader = False
