"""A paced HTTP load: N kept-alive connections, each sending one GET every PERIOD seconds (random phase).

A fan's poll is paced (`pollAfterMs`, seconds apart): a server handles each on its own, with nothing to
batch it with, unlike wrk's back-to-back requests. One process, non-blocking sockets, one selector: the
client's own cost stays small beside the server's. `bench/server_overhead.py` runs it against gunicorn.

    .venv/bin/python -m bench.paced_client --port 8191 --connections 1000 --period 2 --seconds 8

Prints one JSON line: requests answered, seconds, p50 and p99 latency in ms, connections the server closed.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import selectors
import socket
import sys
import time


def run(port: int, connections: int, period: float, seconds: float, path: str = "/bare") -> dict[str, float]:
    """Send the paced load; return what it measured."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
        sel.register(sock, selectors.EVENT_READ, i)
    started = time.monotonic()
    due = [(started + random.random() * period, i) for i in range(connections)]
    heapq.heapify(due)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    closed = 0
    end = started + seconds
    while (now := time.monotonic()) < end:
        while due and due[0][0] <= now:
            _, i = heapq.heappop(due)
            socks[i].send(request)
            sent[i] = now
        wait = min(due[0][0] - now, 0.01) if due else 0.01
        for key, _ in sel.select(max(wait, 0)):
            i = key.data
            data = socks[i].recv(65536)
            if not data:
                closed += 1
                sel.unregister(socks[i])
                continue
            if b"\r\n\r\n" in data:  # the bare route's answer fits one read
                at = sent.pop(i)
                latencies.append(time.monotonic() - at)
                heapq.heappush(due, (at + period, i))
    for sock in socks:
        sock.close()
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "seconds": round(time.monotonic() - started, 2),
        "p50_ms": round(latencies[n // 2] * 1000, 2) if n else 0.0,
        "p99_ms": round(latencies[int(n * 0.99)] * 1000, 2) if n else 0.0,
        "closed_by_server": closed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paced_client", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--period", type=float, default=2.0, help="seconds between two requests of a connection")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--path", default="/bare")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.period <= 0 or args.seconds <= 0:
        parser.error("--connections must be 1 or more, --period and --seconds above 0")
    print(json.dumps(run(args.port, args.connections, args.period, args.seconds, args.path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
