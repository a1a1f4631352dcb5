"""bench/paced_client.py against a real keep-alive HTTP server: the pace it promises, on the connections it opened."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bench.paced_client import main, run


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: ClassVar[set[int]] = set()

    def do_GET(self) -> None:
        _Bare.connections.add(id(self.connection))
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_each_connection_sends_one_request_a_period_and_keeps_its_connection() -> None:
    """20 connections, a request every 0.25 s each, for 2 s: ~160 answers (8 a connection), on 20 connections."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run(server.server_address[1], connections=20, period=0.25, seconds=2.0)
    finally:
        server.shutdown()
    assert 140 <= result["requests"] <= 170, result
    assert result["closed_by_server"] == 0
    assert len(_Bare.connections) == 20
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_a_bad_option_is_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--port", "1", "--period", "0"])
    assert "--period" in capsys.readouterr().err
