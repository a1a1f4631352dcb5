"""config.gthread.SharedPollWorker, the web's gunicorn worker, served for real (config/gunicorn.py).

Every request thread waits on the worker's one epoll; a connection is armed EPOLLONESHOT, so the
thread that takes its event owns it until it re-arms it. What a client must see is plain HTTP/1.1:
every request answered once, on the connection it came on, pipelined requests in order, and
"Connection: close" once the worker holds as many kept-alive connections as it may
(worker_connections - threads). What the design buys is fewer wake-ups: gthread's loop thread
hands each request to a pool thread and back (6.3-7.1 voluntary context switches a paced request,
`python -m bench.server_overhead`, 2026-12-04 19:38 UTC).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.helpers import free_port, wait_for
from tests.support.procs import Cluster

pytestmark = pytest.mark.integration

GET = b"GET /bare HTTP/1.1\r\nHost: x\r\n\r\n"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /bare HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(12) == b"HTTP/1.1 200"
    except OSError:
        return False


def _read_answer(sock: socket.socket, buf: bytearray) -> bytes:
    """One whole answer (head and Content-Length body) from the connection; what follows stays in buf."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    end = len(head) + 4 + length
    while len(buf) < end:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        buf += chunk
    answer = bytes(buf[:end])
    del buf[:end]
    return answer


def _serve(mysql_url: str, redis_url: str, **env: str):  # type: ignore[no-untyped-def]
    port = free_port()
    procs = Cluster(mysql_url, redis_url)
    web = procs.start("web", "gunicorn", "-c", "config/gunicorn.py", "bench.bare_app:app",
                      HOST="127.0.0.1", PORT=str(port), **env)  # fmt: skip
    assert wait_for(lambda: _answers(port), timeout=30) is not None, web.output()
    return port, procs, web


def test_many_kept_alive_clients_each_get_every_answer_on_their_own_connection(mysql_url: str, redis_url: str) -> None:
    """48 clients x 40 requests each, one connection each, two workers of 4 threads: 1,920 answers,
    every one a 200, none lost, no connection closed by the server."""
    port, procs, web = _serve(mysql_url, redis_url, WEB_CONCURRENCY="2", WEB_THREADS="4")
    statuses: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                buf = bytearray()
                for _ in range(40):
                    sock.sendall(GET)
                    answer = _read_answer(sock, buf)
                    with lock:
                        statuses.append(answer[:12])
        except BaseException as exc:  # reported by the assertion below
            with lock:
                errors.append(exc)

    try:
        threads = [threading.Thread(target=client) for _ in range(48)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        procs.stop()
    assert errors == [], f"{errors[:3]}\n{web.output()}"
    assert len(statuses) == 48 * 40 and set(statuses) == {b"HTTP/1.1 200"}


def test_two_requests_in_one_packet_get_two_answers_in_order(mysql_url: str, redis_url: str) -> None:
    """A pipelined pair: the second request is already read (the socket will not signal it): both answered."""
    port, procs, web = _serve(mysql_url, redis_url, WEB_CONCURRENCY="1", WEB_THREADS="2")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(GET + b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = bytearray()
            first, second = _read_answer(sock, buf), _read_answer(sock, buf)
    finally:
        procs.stop()
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 404"), web.output()


def test_past_its_kept_alive_share_a_worker_answers_connection_close(mysql_url: str, redis_url: str) -> None:
    """worker_connections 4, threads 2: two kept-alive connections is the most; a third is answered and closed."""
    port, procs, web = _serve(mysql_url, redis_url, WEB_CONCURRENCY="1", WEB_THREADS="2", WEB_WORKER_CONNECTIONS="4")
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        heads = []
        for sock in socks:  # one after the other: the first two stay kept alive
            sock.sendall(GET)
            heads.append(_read_answer(sock, bytearray()).partition(b"\r\n\r\n")[0].lower())
            time.sleep(0.3)  # the answering thread re-arms the connection (counts it kept alive) after sending
        socks[2].settimeout(5)
        try:
            closed = socks[2].recv(1)
        except TimeoutError:
            closed = b"(still open)"
    finally:
        for sock in socks:
            sock.close()
        procs.stop()
    assert [b"connection: close" in h for h in heads] == [False, False, True], (heads, web.output())
    assert closed == b""


def _voluntary_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        total += int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    return total


def test_a_paced_request_wakes_the_worker_about_once(mysql_url: str, redis_url: str) -> None:
    """300 requests 5 ms apart on one kept-alive connection: the worker's threads block fewer than 4 times a
    request (one wake-up to read and answer it). gthread's hand-offs (loop -> pool thread -> pipe -> loop)
    made 6.3-7.1 (bench/server_overhead.py, 2026-12-04 19:38 UTC)."""
    port, procs, web = _serve(mysql_url, redis_url, WEB_CONCURRENCY="1", WEB_THREADS="8")
    try:
        children = Path(f"/proc/{web.pid}/task/{web.pid}/children").read_text().split()
        assert len(children) == 1, children
        worker = int(children[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            buf = bytearray()
            sock.sendall(GET)
            _read_answer(sock, buf)  # the threads exist and the connection is kept alive
            before = _voluntary_switches(worker)
            for _ in range(300):
                sock.sendall(GET)
                assert _read_answer(sock, buf).startswith(b"HTTP/1.1 200")
                time.sleep(0.005)
            per_request = (_voluntary_switches(worker) - before) / 300
    finally:
        procs.stop()
    assert per_request < 4, f"{per_request:.2f} voluntary context switches a request"
