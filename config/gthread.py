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

`SharedPollWorker` (below) is the one config/gunicorn.py names: the same rule for a new connection, and no
hand-off between a loop thread and the pool. `ReadableThreadWorker` stays as the gthread it is measured
against (`python -m bench.server_overhead`).

    gunicorn -c config/gunicorn.py ...    (worker_class = "config.gthread.SharedPollWorker")
"""

from __future__ import annotations

import contextlib
import errno
import select
import selectors
import socket
import threading
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker


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


class _Count:
    """A number that len() reads: the kept-alive connections, armed and initialized (not the ones whose first
    request has not come), which handle_request() compares with max_keepalived as gthread's deque."""

    n = 0

    def __len__(self) -> int:
        return self.n


class SharedPollWorker(ThreadWorker):  # type: ignore[misc]
    """gthread's threads and parser, without the hand-offs: each thread waits on the worker's epoll itself.

    gthread's loop thread waits for a readable connection, unregisters it, hands it to a pool thread
    (a futex wake-up), and the pool thread hands it back through a pipe (a second wake-up) for the loop
    to register it again. A paced request (a fan's poll every few seconds, nothing else to batch with)
    pays every one of those wake-ups: a bare route cost 674 µs of server CPU a request and 6.4 voluntary
    context switches under a paced load, against 339 µs under wrk's back-to-back requests; this worker
    587 µs, 2.7 switches and 277 µs (`python -m bench.server_overhead`, 2026-12-04 19:38 UTC;
    docs/ARCHITECTURE.md "one wake-up a request"). Here every request thread blocks in `epoll_wait` on one
    shared epoll (the kernel wakes one waiter an event); each connection is armed EPOLLONESHOT, so the
    thread that takes its event owns it, reads and answers the request, and re-arms it: one wake-up a
    request. The listening socket is armed the same way: the thread that takes it accepts one connection,
    re-arms the listener for the next thread, and serves the new connection at once if its request is
    already there (else it waits armed, holding no thread, as in ReadableThreadWorker). The main thread only
    heartbeats, watches the parent, and closes connections idle past `keepalive`.
    """

    _ARMED = select.EPOLLIN | select.EPOLLONESHOT

    def init_process(self) -> None:
        self.epoll = select.epoll()
        self.lock = threading.Lock()
        self.idle: dict[int, TConn] = {}  # fd -> armed connection (kept-alive or waiting for its first request)
        self.keepalived_conns = _Count()  # handle_request() compares its len() with max_keepalived
        self.listeners = {listener.fileno(): listener for listener in self.sockets}
        self.threads_stop = False
        self.accept_paused = False
        super(ThreadWorker, self).init_process()  # base.Worker: signals, the app, then run()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False  # run() notices within a second; threads answer what is in flight

    def handle_quit(self, sig: int, frame: Any) -> None:
        self.threads_stop = True
        super(ThreadWorker, self).handle_quit(sig, frame)

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            self.epoll.register(listener.fileno(), self._ARMED)
        threads = [threading.Thread(target=self._loop, name=f"http-{i}", daemon=True) for i in range(self.cfg.threads)]
        for thread in threads:
            thread.start()
        while self.alive:
            self.notify()
            time.sleep(1.0)
            if not self.is_parent_alive():
                break
            self._expire(time.monotonic())
            self._resume_accepting()
        # graceful stop: no new connections; kept-alive ones linger briefly, in-flight requests finish
        for fd in self.listeners:
            with contextlib.suppress(OSError):
                self.epoll.unregister(fd)
        linger = time.monotonic() + STOP_KEEPALIVE_LINGER
        with self.lock:
            for conn in self.idle.values():
                conn.timeout = min(conn.timeout, linger)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self.nr_conns > 0 and time.monotonic() < deadline:
            self.notify()
            time.sleep(0.1)
            self._expire(time.monotonic())
        self._expire(float("inf"))
        self.threads_stop = True

    def _loop(self) -> None:
        """One request thread: take one ready event from the shared epoll and serve it."""
        while not self.threads_stop:
            try:
                events = self.epoll.poll(1.0, 1)
            except InterruptedError:
                continue
            except (OSError, ValueError):  # the epoll was closed: the worker is exiting
                return
            for fd, _ in events:
                listener = self.listeners.get(fd)
                if listener is not None:
                    self._accept_one(listener)
                    continue
                with self.lock:
                    conn = self.idle.pop(fd, None)
                    if conn is not None and conn.initialized:
                        self.keepalived_conns.n -= 1
                if conn is None:  # closed by _expire after its event fired
                    continue
                if not conn.initialized and not has_data(conn.sock):
                    self._arm(conn)  # a stale event for a reused descriptor: nothing to read yet
                    continue
                conn.data_ready = True
                self._serve(conn)

    def _accept_one(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                self.log.exception("accept failed")
            self._rearm_listener(listener)
            return
        with self.lock:
            self.nr_conns += 1
        self._rearm_listener(listener)  # the next connection goes to another thread while this one serves
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        if has_data(client_sock):
            conn.data_ready = True
            self._serve(conn)
        else:
            conn.timeout = time.monotonic() + self.cfg.keepalive  # closed by _expire if it never sends
            self._arm(conn, new=True)

    def _rearm_listener(self, listener: Any) -> None:
        with self.lock:
            if not self.alive:
                return
            if self.nr_conns >= self.worker_connections:
                self.accept_paused = True  # _resume_accepting re-arms it once connections are fewer
                return
        with contextlib.suppress(OSError):
            self.epoll.modify(listener.fileno(), self._ARMED)

    def _resume_accepting(self) -> None:
        with self.lock:
            resume = self.accept_paused and self.nr_conns < self.worker_connections
            if resume:
                self.accept_paused = False
        if resume:
            for listener in self.sockets:
                self._rearm_listener(listener)

    def _serve(self, conn: TConn) -> None:
        """Answer the connection's requests while they are already here, then re-arm it (or close it)."""
        while True:
            keepalive = self.handle(conn)
            if keepalive is True and conn.parser.unreader.buf.getvalue():
                continue  # the body drain read ahead into the next request: the socket will not signal it
            break
        if keepalive is True:
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + STOP_KEEPALIVE_LINGER)
            self._arm(conn, new=not getattr(conn, "registered", False))
            return
        with self.lock:
            self.nr_conns -= 1
        conn.close(graceful=keepalive is False)

    def _arm(self, conn: TConn, new: bool = False) -> None:
        """Put the connection in `idle` first, then arm it: its event can fire at once, in another thread."""
        fd = conn.sock.fileno()
        with self.lock:
            self.idle[fd] = conn
            if conn.initialized:
                self.keepalived_conns.n += 1
        try:
            if new:
                conn.registered = True  # before: once registered, another thread may serve it and re-arm it
                self.epoll.register(fd, self._ARMED)
            else:
                self.epoll.modify(fd, self._ARMED)
        except OSError:
            self.log.warning("closing a connection that could not be armed (fd %s)", fd, exc_info=True)
            with self.lock:
                mine = self.idle.get(fd) is conn  # else _expire took it (and closes it)
                if mine:
                    del self.idle[fd]
                    self.keepalived_conns.n -= conn.initialized
                    self.nr_conns -= 1
            if mine:
                conn.close()

    def _expire(self, now: float) -> None:
        """Close armed connections idle past their timeout (all of them with `now` = inf)."""
        with self.lock:
            expired = [fd for fd, conn in self.idle.items() if conn.timeout <= now]
            conns = [self.idle.pop(fd) for fd in expired]
            self.nr_conns -= len(conns)
            self.keepalived_conns.n -= sum(1 for conn in conns if conn.initialized)
        for conn in conns:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(conn.sock.fileno())
            conn.close()
