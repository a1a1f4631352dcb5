"""Prometheus metrics (multiprocess-safe under gunicorn when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import os
import time
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

from workers.broker import queue_key
from workers.events import consumer, publisher
from workers.jobs import OPEN_KEY

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Other rooms' scrape-time collectors (registered on REGISTRY by their owner), for the multiprocess registry too
SCRAPE_TIME: list[Any] = []


def install(app: Flask) -> None:
    """Time every request and count it by route template and status."""
    PIPELINE.app = app

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            HTTP_LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
        return response


def exposition() -> Response:
    """The Prometheus text exposition of every process's metrics."""
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
    """Scrape-time gauges read from Redis and the database: queue lengths, open jobs, outbox, consumer, DLT."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.app is None:
            return
        services = self.app.extensions["services"]
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
            from models import outbox
            from models.db import db

            with db.connection_context():
                st = outbox.stats()
            outbox_pending.add_metric([], float(st.pending))
            outbox_failed.add_metric([], float(st.failed))
            outbox_age.add_metric([], st.oldest_pending_age_s)
        except Exception:
            pass
        yield from (queue, jobs_open, outbox_pending, outbox_failed, outbox_age, published, latency, lag, dlt)


PIPELINE = PipelineCollector()
REGISTRY.register(PIPELINE)  # type: ignore[arg-type]
