"""A leader lease in Redis: exactly one scheduler acts; a standby takes over when the lease lapses."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid

import redis

from models.redis_support import ANY_REDIS_ERROR

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderLease:
    """Hold `key` while alive: acquire with SET NX PX, renew by compare-and-expire, release on stop."""

    def __init__(self, client: redis.Redis, *, key: str = "scheduler:leader", ttl: float = 10.0) -> None:
        self.r = client
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
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
                if self._leader and int(self._renew(keys=[self.key], args=[self.identity, self.ttl_ms])):
                    return True
                self._leader = bool(self.r.set(self.key, self.identity, nx=True, px=self.ttl_ms))
            except ANY_REDIS_ERROR:
                self._leader = False  # cannot prove we lead: stand down until Redis answers
            return self._leader

    def release(self) -> None:
        """Give the lease up so a standby takes over at once."""
        with self._lock:
            with contextlib.suppress(*ANY_REDIS_ERROR):
                self._release(keys=[self.key], args=[self.identity])
            self._leader = False
