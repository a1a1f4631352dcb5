"""Leases in Redis: one holder per key, taken with SET NX PX, renewed and released only by it.

Used by the scheduler's leader lease (scheduler/leader.py, `scheduler:leader`) and by partition
ownership (workers/partitions.py, `partition:lease:<N>`). A holder that stops renewing loses the
key after its TTL, and a standby can take it.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def holder_id() -> str:
    """A name for this process as a lease holder: host, pid and 32 random bits."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    """The leases one holder takes, renews and releases (any number of keys, one TTL)."""

    def __init__(self, client: redis.Redis, *, holder: str, ttl_ms: int) -> None:
        self.r = client
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def take(self, key: str) -> bool:
        """Take `key` if nobody holds it; True if we hold it now."""
        return bool(self.r.set(key, self.holder, nx=True, px=self.ttl_ms))

    def renew(self, key: str) -> bool:
        """Extend our lease on `key` by the TTL; False if we no longer hold it."""
        return bool(int(self._renew(keys=[key], args=[self.holder, self.ttl_ms])))

    def release(self, key: str) -> bool:
        """Give `key` up if we hold it (a standby may take it at once); True if we did."""
        return bool(int(self._release(keys=[key], args=[self.holder])))
