"""bench/idle_socket.py: a fan's kept-alive connection is reused whatever its file descriptor number."""

from __future__ import annotations

import fcntl
import select
import socket

import pytest

from bench.idle_socket import alive


def _high_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair whose client end has a descriptor above select()'s limit (1024): the lowest free
    one from 1024 up (F_DUPFD), so no descriptor the test process holds is touched."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"the descriptor limit ({hard}) is below 1100")
    if soft != resource.RLIM_INFINITY and soft < 1100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1100, hard))
    server, client = socket.socketpair()
    high = fcntl.fcntl(client.fileno(), fcntl.F_DUPFD, 1024)
    client.close()
    return server, socket.socket(fileno=high)


def test_an_idle_connection_above_descriptor_1024_is_alive_where_select_says_it_is_not() -> None:
    server, client = _high_pair()
    try:
        from geventhttpclient.connectionpool import ConnectionPool

        with pytest.raises(ValueError):  # what geventhttpclient 2.6.1's check calls, and reads as dead
            select.select([client], [], [], 0)
        stock = ConnectionPool._is_socket_alive(None, client)  # type: ignore[arg-type]

        assert client.fileno() >= 1024
        assert (stock, alive(client)) == (False, True)
    finally:
        server.close()
        client.close()


def test_a_connection_the_server_closed_or_wrote_to_out_of_turn_is_not_reused() -> None:
    server, client = _high_pair()
    try:
        server.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        written = alive(client)
        client.recv(100)
        server.close()
        closed = alive(client)
        client.close()

        assert (written, closed, alive(client), alive(None)) == (False, False, False, False)
    finally:
        server.close()
