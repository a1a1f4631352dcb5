"""Whether a kept-alive client socket can be used again, for any file descriptor: the load generator's fix.

geventhttpclient 2.6.1 (locust's FastHttpUser) checks a pooled connection before reusing it with
`select.select([sock], [], [], 0)` and treats any error as a dead connection. `select` cannot take
a descriptor of 1024 or more ("filedescriptor out of range in select()", a ValueError): in a flash
sale of 5,000 fans every connection past the first ~1,000 was closed and opened again before each
of its requests. On 2026-12-04 (`bench/flash_sale`, full run) locust opened 16,125 connections to
the service for 5,000 fans and found 11,792 of 15,866 idle connections "dead"; the service's
gunicorn saw a poll as a new connection (accept, first read) three times out of four, and the bare
route beside it the same. A browser keeps its connection. `poll()` has no such limit.

The locustfile installs `alive` as `ConnectionPool._is_socket_alive` (see `install`).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

try:  # under gevent's monkey patching `select.poll` is removed; the original is what a 0-timeout check needs
    from gevent import monkey as _monkey

    _poll = _monkey.get_original("select", "poll")
except (ImportError, AttributeError):  # pragma: no cover - gevent always has it on Linux
    _poll = select.poll

_DEAD = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


def alive(sock: Any) -> bool:
    """True if `sock`, an idle kept-alive connection, has nothing to read and no error: the server has
    neither closed it nor sent anything out of turn (the same rule as geventhttpclient's, any fd)."""
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return False
        watcher = _poll()
        watcher.register(fd, _DEAD)
        return not watcher.poll(0)
    except (OSError, ValueError):
        return False


def install(opened: Callable[[int], None] | None = None) -> None:
    """Make geventhttpclient's connection pools check idle connections with `alive`; `opened(port)` is
    called for every connection a pool opens (the run counts them: about one per fan and server)."""
    from geventhttpclient import connectionpool

    pool: Any = connectionpool.ConnectionPool
    pool._is_socket_alive = lambda self, sock: alive(sock)
    if opened is not None:
        create = pool._create_socket

        def counted(self: Any) -> Any:
            opened(int(self._connection_port))
            return create(self)

        pool._create_socket = counted
