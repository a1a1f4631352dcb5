"""Metrics tallied per process (models/tally.py, used by web/metrics.py for every request):
written into the prometheus metrics a second later or before a scrape, and exactly what
Counter.inc and Histogram.observe would have recorded."""

from __future__ import annotations

import time

from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from models.tally import Tally

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _pair(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    requests = Counter("req_total", "requests", ["method", "endpoint", "status"], registry=registry)
    latency = Histogram("req_seconds", "latency", ["method", "endpoint"], buckets=BUCKETS, registry=registry)
    return requests, latency


def test_a_tally_records_what_observe_would_have_recorded() -> None:
    """Hidden ways to fail: a duration exactly on a bucket bound counted in the next bucket
    (bisect_right instead of observe's `<=`); the sum or count lost; one status folded into another."""
    durations = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 1.0, 2.5, 0.0005]
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    requests, latency = _pair(direct)
    for i, s in enumerate(durations):
        requests.labels("GET", "/x", str(200 + i % 2)).inc()
        latency.labels("GET", "/x").observe(s)
    tally = Tally(every=3600)
    requests, latency = _pair(tallied)
    for i, s in enumerate(durations):
        tally.inc(requests, ("GET", "/x", str(200 + i % 2)))
        tally.observe(latency, ("GET", "/x"), s)

    assert b"req_seconds_count" not in generate_latest(tallied)  # nothing written before a flush
    tally.flush()
    assert _samples(tallied) == _samples(direct)


def test_one_call_for_a_count_and_a_latency_records_what_inc_and_observe_would_have() -> None:
    """count_and_observe (every request's one tally call). Hidden ways to fail: the status label
    lost or put on the histogram, a bucket off by one, the sum or count lost."""
    durations = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 1.0, 2.5, 0.0005]
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    requests, latency = _pair(direct)
    for i, s in enumerate(durations):
        requests.labels("GET", "/x", str(200 + i % 2)).inc()
        latency.labels("GET", "/x").observe(s)
    tally = Tally(every=3600)
    requests, latency = _pair(tallied)
    for i, s in enumerate(durations):
        tally.count_and_observe(requests, latency, ("GET", "/x"), str(200 + i % 2), s)

    tally.flush()
    assert _samples(tallied) == _samples(direct)


def test_the_tally_is_written_within_a_second_without_a_scrape() -> None:
    """Hidden way to fail: a worker's last requests never written when no further request or
    scrape reaches that worker (another worker answers the scrape: it reads the files only)."""
    registry = CollectorRegistry()
    tally = Tally(every=0.2)
    requests, _ = _pair(registry)
    tally.inc(requests, ("POST", "/y", "201"))

    deadline = time.monotonic() + 5
    while _samples(registry).get('req_total{endpoint="/y",method="POST",status="201"}') != 1.0:
        assert time.monotonic() < deadline, "the flusher never wrote the tally"
        time.sleep(0.05)


def test_the_app_scrape_counts_every_request_it_served(client: FlaskClient) -> None:
    """The scrape flushes this process's tally first: three requests are three, at once."""
    before = _count(client)
    for _ in range(3):
        assert client.get("/api/v1/healthz").status_code == 200

    assert _count(client) == before + 3


def test_the_app_scrape_times_every_request_it_served(client: FlaskClient) -> None:
    """The latency histogram counts the same requests as the counter (one tally call for both)."""
    prefix = 'http_request_duration_seconds_count{endpoint="/api/v1/healthz",method="GET"} '
    before = _count(client, prefix)
    for _ in range(4):
        assert client.get("/api/v1/healthz").status_code == 200

    assert _count(client, prefix) == before + 4


def _count(client: FlaskClient, prefix: str = "") -> float:
    text = client.get("/metrics").get_data(as_text=True)
    prefix = prefix or 'http_requests_total{endpoint="/api/v1/healthz",method="GET",status="200"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#") and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
