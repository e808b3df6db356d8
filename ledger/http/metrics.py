"""Prometheus metrics of the HTTP service (`GET /metrics`).

Event outcomes and batch latencies are the ingestion metrics every path
shares (`ledger.ops.metrics`, default registry, label `source="http"`); the
front's own request metrics are here, all named `peerledger_http_*`, in a
registry per app (`/metrics` shows both).  Labels are bounded sets: the route
*template* (`/v1/platforms/{platform}/balances`, never the concrete path),
the method, the status code.  No label carries a platform, token or prosumer
id, and `LAST_APPENDED_SEQ` (labelled by platform) is not set from HTTP:
`/metrics` needs no token, and tenants must not learn about each other there.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ledger.ingest.ingestor import ACCEPTED, DUPLICATE
from ledger.ops.metrics import (
    BATCH_APPEND_LATENCY,
    EVENTS_ACCEPTED,
    EVENTS_DUPLICATE,
    EVENTS_REJECTED,
)

SOURCE = "http"  # the `source` label of ledger.ops.metrics

# Seconds; requests of the API span sub-millisecond reads to multi-second
# 10 000-event POSTs.  Finer from 5 to 100 ms, around the reads' 20 ms p99
# target, so a percentile read off the buckets says on which side of it a
# read is (bench/http_bench.py does); 18 buckets in all.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5,
                     10, 30)
UNMATCHED_ROUTE = "unmatched"


class HttpMetrics:
    """The service's metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "peerledger_http_requests", "HTTP requests answered, by route template and status",
            ("method", "route", "status"), registry=r)
        self.latency = Histogram(
            "peerledger_http_request_duration_seconds", "Time from request start to response end",
            ("method", "route"), buckets=LATENCY_BUCKETS_S, registry=r)
        self.in_flight = Gauge(
            "peerledger_http_requests_in_flight", "Requests being answered", registry=r)
        self.body_bytes = Counter(
            "peerledger_http_ingest_body_bytes", "Bytes of POSTed event bodies read", registry=r)
        self.projection_wait = Histogram(
            "peerledger_http_projection_wait_seconds",
            "Time a POST waited, after its append, for the read models to include it",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.writer_restarts = Counter(
            "peerledger_http_writer_restarts", "Times the writer process was replaced after it died",
            registry=r)

    def count_events(self, counts: dict[tuple[str, str], int], batch_seconds: list[float]) -> None:
        """Record a POST's durable outcomes and its batches' append times."""
        for (outcome, code), n in counts.items():
            if outcome == ACCEPTED:
                EVENTS_ACCEPTED.labels(SOURCE).inc(n)
            elif outcome == DUPLICATE:
                EVENTS_DUPLICATE.labels(SOURCE).inc(n)
            else:
                EVENTS_REJECTED.labels(SOURCE, code).inc(n)
        for seconds in batch_seconds:
            BATCH_APPEND_LATENCY.labels(SOURCE).observe(seconds)

    def exposition(self) -> bytes:
        """The text of `/metrics`: the shared ingestion metrics, then ours."""
        return generate_latest(REGISTRY) + generate_latest(self.registry)


ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware):
    counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, the server sends a 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
