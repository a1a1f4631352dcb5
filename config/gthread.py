"""gunicorn's gthread worker, except that a new connection takes a thread only once its request has arrived.

gunicorn 24+ hands every accepted connection straight to the thread pool, where the thread waits up to
5 s for the client's first bytes (`TConn.wait_for_data`, gunicorn PR #3519). A client that connects and
sends a little later (a phone on a slow link, a load generator whose event loop is busy: 500 fans a
second each opening a connection) holds one of the worker's WEB_THREADS threads, idle, for that time;
every request behind it, kept-alive polls included, waits in the pool's queue. In the flash sale
(`python -m bench.flash_sale`, 2026-12-03 16:28 UTC, quiet machine) a bare route served by the service's
own workers answered in 470 ms at the median while the joins poured in, against 33 ms from a bare
gunicorn beside it: the queue was threads waiting for data that had not arrived.

Here a new connection whose request is already in the socket (the usual case: a peek, no wait) goes to
the pool at once, as before; any other waits in the worker's poller, costing one file descriptor and no
thread, and goes to the pool when it becomes readable (gunicorn's own "pending" path, the one it uses
after those 5 s), or is closed after `keepalive` seconds with nothing sent. This is what gunicorn
21-23 did and what the open gunicorn PR #3635 (issue #3634) proposes again.

    gunicorn -c config/gunicorn.py ...    (worker_class = "config.gthread.ReadableThreadWorker")
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker


def has_data(sock: socket.socket) -> bool:
    """Whether a read on `sock` would not block: bytes are waiting, or the peer closed or reset it."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # an error (reset) is "readable": the thread reads it and closes the connection
    return True  # bytes, or b"" (the peer closed): the thread reads either


class ReadableThreadWorker(ThreadWorker):  # type: ignore[misc]
    """ThreadWorker whose threads never wait for a new connection's first bytes."""

    def accept(self, listener: Any) -> None:
        """Accept one connection: to the thread pool if its request is here, else to the poller."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking now
        if has_data(client_sock):
            conn.data_ready = True  # handle() reads at once, without its wait
            client_sock.setblocking(True)
            self.enqueue_req(conn)
            return
        # gunicorn's deferred-connection path (finish_request's _DEFER): wait in the poller, no thread held;
        # on_pending_socket_readable enqueues it, murder_pending closes it after `keepalive` with nothing sent
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(client_sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
