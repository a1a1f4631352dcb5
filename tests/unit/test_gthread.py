"""config/gthread.py: whether a new connection's request is already there, without reading it."""

from __future__ import annotations

import socket

from config.gthread import has_data


def test_has_data_tells_a_waiting_request_from_a_silent_client_without_taking_the_bytes() -> None:
    server, client = socket.socketpair()
    try:
        server.setblocking(False)
        silent = has_data(server)
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        sent = has_data(server)
        kept = server.recv(100)  # the peek took nothing

        assert (silent, sent) == (False, True)
        assert kept == b"GET / HTTP/1.1\r\n\r\n"
    finally:
        server.close()
        client.close()


def test_a_closed_peer_counts_as_data_for_the_thread_to_read() -> None:
    """The thread reads the end of the stream and closes the connection: it must not wait in the poller."""
    server, client = socket.socketpair()
    try:
        server.setblocking(False)
        client.close()

        assert has_data(server) is True
    finally:
        server.close()
