"""Prometheus metrics (multiprocess-safe under gunicorn when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from models import concerts, outbox
from models.db import db
from models.tally import TALLY
from workers import jobstats
from workers.broker import queue_key
from workers.events import consumer, publisher
from workers.jobs import OPEN_KEY

MAX_CONCERTS = 50

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Other rooms' scrape-time collectors (registered on REGISTRY by their owner), for the multiprocess registry too
SCRAPE_TIME: list[Any] = []


def check_multiproc_dir(env: Any) -> None:
    """PROMETHEUS_MULTIPROC_DIR, when set, must be a writable directory: prometheus-client writes
    a file there on the first sample, so a bad path would make every request a 500. Refuse to start."""
    from config.settings import SettingsError

    path = env.get("PROMETHEUS_MULTIPROC_DIR")
    if path and not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
        raise SettingsError(f"PROMETHEUS_MULTIPROC_DIR={path!r} is not a writable directory")


def install(app: Flask) -> None:
    """Time every request and count it by route template and status (tallied: models/tally.py);
    serve /metrics at the root too.

    The root route is the same view as `/api/v1/metrics` (web/health.py, registered before this),
    so the OpenAPI document lists both. The start time is the one web/requestlog.py takes (it is
    installed first).
    """
    check_multiproc_dir(os.environ)
    PIPELINE.app = app
    app.add_url_rule("/metrics", "metrics_root", app.view_functions["health.metrics_endpoint"], methods=["GET"])

    @app.after_request
    def _record(response: Response) -> Response:
        started = g._get_current_object().get("request_started")  # type: ignore[attr-defined]
        req = request._get_current_object()  # type: ignore[attr-defined]  # one lookup, not one per attribute
        rule = req.url_rule
        labels = (req.method, rule.rule if rule is not None else "unmatched")
        status = str(response.status_code)
        if started is None:
            TALLY.inc(HTTP_REQUESTS, (*labels, status))
        else:
            TALLY.count_and_observe(HTTP_REQUESTS, HTTP_LATENCY, labels, status, time.perf_counter() - started)
        return response


def exposition() -> Response:
    """The Prometheus text exposition of every process's metrics (this one's request tally flushed first)."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(PIPELINE)  # type: ignore[arg-type]
        for collector in SCRAPE_TIME:
            registry.register(collector)
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return Response(data, mimetype=CONTENT_TYPE_LATEST)


class PipelineCollector:
    """Scrape-time series read from Redis and the database (a scrape never fails because one is down).

    The pipeline (partition queues, open jobs, outbox, consumer lag, DLT), the waiting room of
    each concert on sale (waiting, active, admitted per second), its seats by status, and the
    job outcome counters and duration histograms per job type (workers/jobstats.py).
    """

    def __init__(self) -> None:
        self.app: Flask | None = None

    def collect(self):  # type: ignore[no-untyped-def]
        if self.app is None:
            return
        services = self.app.extensions["services"]
        yield from _pipeline(services)
        yield from _jobs(services)
        concert_ids = _concerts_on_sale(services)
        yield from _waiting_room(self.app.extensions["waiting_room"], concert_ids)
        yield from _seats(concert_ids)


def _pipeline(services: Any) -> Iterator[Metric]:
    queue = GaugeMetricFamily("partition_queue_length", "Messages waiting per seat partition", labels=["partition"])
    jobs_open = GaugeMetricFamily("jobs_open", "Jobs not yet SUCCEEDED/FAILED")
    outbox_pending = GaugeMetricFamily("outbox_pending", "Outbox rows waiting to be published")
    outbox_failed = GaugeMetricFamily("outbox_failed", "Outbox rows that gave up (retry with `workers outbox`)")
    outbox_age = GaugeMetricFamily("outbox_oldest_pending_age_seconds", "Age of the oldest PENDING outbox row")
    published = CounterMetricFamily("outbox_published", "Outbox rows published")
    latency = GaugeMetricFamily("outbox_publish_latency_seconds_last", "Commit-to-publish delay of the last batch")
    lag = GaugeMetricFamily("consumer_lag", "payment-completed records not yet consumed by queue-expirer")
    dlt = CounterMetricFamily("dead_lettered", "Records sent to payment-completed.DLT")
    try:
        r = services.redis
        for p in range(services.settings.partitions):
            queue.add_metric([str(p)], float(r.llen(queue_key(p))))
        jobs_open.add_metric([], float(r.zcard(OPEN_KEY)))
        ob = r.hgetall(publisher.STATS_KEY) or {}
        published.add_metric([], float(ob.get("published_total", 0)))
        latency.add_metric([], float(ob.get("last_latency_s", 0)))
        cons = r.hgetall(consumer.STATS_KEY) or {}
        lag.add_metric([], float(cons.get("lag", 0)))
        dlt.add_metric([], float(cons.get("dead_lettered_total", 0)))
    except Exception:  # a scrape must not fail because Redis is down
        pass
    try:
        with db.connection_context():
            st = outbox.stats()
        outbox_pending.add_metric([], float(st.pending))
        outbox_failed.add_metric([], float(st.failed))
        outbox_age.add_metric([], st.oldest_pending_age_s)
    except Exception:
        pass
    yield from (queue, jobs_open, outbox_pending, outbox_failed, outbox_age, published, latency, lag, dlt)


def _jobs(services: Any) -> Iterator[Metric]:
    outcomes = CounterMetricFamily("jobs_finished", "Jobs finished, by type and outcome", labels=["type", "outcome"])
    durations = HistogramMetricFamily(
        "job_duration_seconds", "From the request to the job's outcome, by job type", labels=["type"]
    )
    try:
        found = jobstats.read(services.redis)
    except Exception:
        found = {}
    for job_type, stats in sorted(found.items()):
        for outcome, count in stats.outcomes.items():
            outcomes.add_metric([job_type, outcome], float(count))
        durations.add_metric([job_type], [(le, float(n)) for le, n in stats.cumulative()], stats.total_seconds)
    yield from (outcomes, durations)


def _concerts_on_sale(services: Any) -> list[int]:
    """Concerts with waiters or a schedule in the next 90 days (at most 50, lowest ids first)."""
    from models.concerts import concerts_starting_within
    from models.waiting_room import CONCERTS_KEY

    ids: set[int] = set()
    with contextlib.suppress(Exception):
        ids.update(int(c) for c in services.redis.smembers(CONCERTS_KEY))
    try:
        with db.connection_context():
            ids.update(concerts_starting_within(days=90))
    except Exception:
        pass
    return sorted(ids)[:MAX_CONCERTS]


def _waiting_room(room: Any, concert_ids: list[int]) -> Iterator[Metric]:
    labels = ["concert"]
    waiting = GaugeMetricFamily("waiting_room_waiting", "Fans waiting in the queue", labels=labels)
    active = GaugeMetricFamily("waiting_room_active", "Fans admitted and not yet expired", labels=labels)
    rate = GaugeMetricFamily("waiting_room_admitted_per_second", "Admissions per second, last minute", labels=labels)
    try:
        for concert_id in concert_ids:
            w, a = room.counts(concert_id=concert_id)
            waiting.add_metric([str(concert_id)], float(w))
            active.add_metric([str(concert_id)], float(a))
            rate.add_metric([str(concert_id)], room.admission_rate(concert_id=concert_id))
    except Exception:
        pass
    yield from (waiting, active, rate)


SEAT_STATES = {"AVAILABLE": "available", "HELD": "held", "RESERVED": "sold"}


def _seats(concert_ids: list[int]) -> Iterator[Metric]:
    seats = GaugeMetricFamily(
        "seats", "Seats of a concert by state (available, held, sold)", labels=["concert", "state"]
    )
    try:
        with db.connection_context():
            counts = {concert_id: concerts.seat_counts(concert_id=concert_id) for concert_id in concert_ids}
        for concert_id, by_status in counts.items():
            for status, state in SEAT_STATES.items():
                seats.add_metric([str(concert_id), state], float(by_status.get(status, 0)))
    except Exception:
        pass
    yield seats


PIPELINE = PipelineCollector()
REGISTRY.register(PIPELINE)  # type: ignore[arg-type]
