"""A connection whose request has not arrived holds no thread: real gunicorn (config/gunicorn.py,
config/gthread.py), one worker with 2 threads, clients that connect and send nothing yet.

gunicorn 24+'s gthread hands each accepted connection to a thread, which waits up to 5 s for the
client's first bytes: a few slow clients (in the flash sale, 500 fans a second connecting while the
load generator was busy) took every thread, and the requests behind them waited in the pool's
queue: a bare route in the service's workers answered in 470 ms at the median against 33 ms from
a bare gunicorn beside it (2026-12-03 16:28 UTC), and py-spy put 49 % of the threads' time in
`wait_for_data`.
"""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from tests.support.helpers import free_port, wait_for
from tests.support.procs import Cluster

pytestmark = pytest.mark.integration

THREADS = 2


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/bare")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _get(sock: socket.socket) -> bytes:
    """Send a GET on a raw connection and read its whole answer (the server closes it after)."""
    sock.sendall(b"GET /bare HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture
def server(mysql_url: str, redis_url: str):  # type: ignore[no-untyped-def]
    port = free_port()
    procs = Cluster(mysql_url, redis_url)
    web = procs.start("web", "gunicorn", "-c", "config/gunicorn.py", "bench.bare_app:app",
                      HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1", WEB_THREADS=str(THREADS),
                      WEB_KEEPALIVE="3")  # fmt: skip
    try:
        assert wait_for(lambda: _answers(port), timeout=30) is not None, web.output()
        yield port
    finally:
        procs.stop()


def test_a_request_is_answered_at_once_while_more_clients_than_threads_send_nothing(server: int) -> None:
    """Given twice as many silent connections as the worker has threads, a request on a new
    connection is answered within a second (gthread's own wait: 5 s), and so is a silent
    client that finally sends."""
    silent = [socket.create_connection(("127.0.0.1", server)) for _ in range(2 * THREADS)]
    try:
        time.sleep(0.3)  # every silent connection accepted
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server)) as sock:
            answer = _get(sock)
        waited = time.monotonic() - started
        late = _get(silent[0])  # a slow client's request, when it comes

        assert answer.startswith(b"HTTP/1.1 200") and waited < 1.0, f"answered after {waited:.2f} s"
        assert late.startswith(b"HTTP/1.1 200")
    finally:
        for sock in silent:
            sock.close()


def test_a_connection_that_never_sends_is_closed_after_the_keepalive(server: int) -> None:
    """A connection that sends nothing costs a file descriptor only until WEB_KEEPALIVE (3 s here)."""
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        closed = sock.recv(1)  # b"": the server closed it
        waited = time.monotonic() - started

    assert closed == b"" and 2.5 < waited < 6, f"closed after {waited:.2f} s"
