"""Prometheus metrics of the ledger's processes, and the small HTTP server
that lets an orchestrator scrape and probe the workers.

Every metric lives in prometheus_client's default registry, so one
`/metrics` endpoint (`serve`) shows them all, whichever paths a process runs.
Names follow Prometheus conventions: a `peerledger_` prefix, base units in
the name (`_seconds`, `_messages`), `_total` on counters.  Labels are kept
to bounded sets: `source` is the ingestion path (`kafka`, `http`), `code`
one of EVENTS.md §4's seven reason codes, `topic`/`partition` what the
consumer is assigned, `platform` the tenants this process appended to.

Outcome counters are incremented only once a batch is durable, so they
count effects, not attempts: a batch that failed to commit and was decided
again is counted once.

`serve` is the workers' (`consume`, `project --follow`) HTTP endpoint:
`/metrics`, `/healthz` (the process answers) and `/readyz` (its `ReadyCheck`s
pass), the same three paths `peerledger serve` answers on its API port, so
Prometheus, Docker healthchecks and Kubernetes probes treat every peerledger
process alike.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import quote, urlsplit

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

EVENTS_ACCEPTED = Counter(
    "peerledger_events_accepted_total",
    "Events appended to their platform's log.",
    ["source"],
)
EVENTS_DUPLICATE = Counter(
    "peerledger_events_duplicate_total",
    "Events equal to one accepted before (resends): nothing changed.",
    ["source"],
)
EVENTS_REJECTED = Counter(
    "peerledger_events_rejected_total",
    "Events rejected, by reason code (EVENTS.md section 4); each is kept in the rejects store.",
    ["source", "code"],
)
# A batch is up to 1000 events: about 0.1 s on the demo stream; the tail
# buckets are there to show a slow database.
BATCH_APPEND_LATENCY = Histogram(
    "peerledger_batch_append_latency_seconds",
    "Time to decide one batch and append it durably (one database transaction).",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LAST_APPENDED_SEQ = Gauge(
    "peerledger_last_appended_seq",
    "seq of the last event this process appended to the platform's log.",
    ["platform"],
)

KAFKA_MESSAGES_CONSUMED = Counter(
    "peerledger_kafka_messages_consumed_total",
    "Kafka messages processed (each gave one outcome) and committed or about to be.",
    ["topic"],
)
KAFKA_DEAD_LETTERS = Counter(
    "peerledger_kafka_dead_letters_total",
    "Messages copied to the dead-letter topic and acknowledged by it, by reason code.",
    ["topic", "code"],
)
KAFKA_BATCHES_FENCED = Counter(
    "peerledger_kafka_batches_fenced_total",
    "Batches dropped unwritten because the ledger's stored offset for a partition was past them "
    "(another consumer had handled them).",
    ["topic"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "peerledger_kafka_consumer_lag_messages",
    "Messages in an assigned partition after the last one this consumer processed "
    "(high watermark minus position, as of the last fetch).",
    ["topic", "partition"],
)

PROJECTION_APPLIED_SEQ = Gauge(
    "peerledger_projection_applied_seq",
    "seq up to which this projector has written the platform's derived views (the dashboard's flows).",
    ["platform"],
)
PROJECTION_LAG = Gauge(
    "peerledger_projection_lag_events",
    "Events of the platform's log not yet in its derived views when this projector last looked "
    "(log head minus applied seq).",
    ["platform"],
)
PROJECTION_EVENTS = Counter(
    "peerledger_projection_events",
    "Events counted into the derived views by this projector.",
    ["platform"],
)
# One pass brings one platform to its log's head: a few milliseconds when a
# few events came in, up to minutes when a long log's flows are first built
# (a database upgraded from before they existed).
PROJECTION_BATCH_SECONDS = Histogram(
    "peerledger_projection_batch_seconds",
    "Time to bring one platform's derived views to its log head (read, count, write), passes that applied events.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
PROJECTION_PLATFORMS_CLAIMED = Gauge(
    "peerledger_projection_platforms_claimed",
    "Platforms this projector owns among the projectors sharing the database (ledger.ingest.claims).",
)


# The webhook deliverer (`peerledger deliver`, ledger.webhooks.delivery).
# `endpoint` is an endpoint id (a bounded set: the endpoints an operator made).
WEBHOOK_DOCUMENTS_DELIVERED = Counter(
    "peerledger_webhook_documents_delivered_total",
    "Booking documents a webhook endpoint answered 2xx to (each counted once per endpoint and attempt that "
    "delivered it; a resend after a crash counts again).",
)
WEBHOOK_ATTEMPTS = Counter(
    "peerledger_webhook_attempts_total",
    "POSTs of a document to a webhook endpoint, by outcome: the status class (2xx, 3xx, 4xx, 5xx), "
    "timeout, or error (no answer: refused, reset, DNS, TLS).",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "peerledger_webhook_attempt_seconds",
    "Time from sending a document to a webhook endpoint to its answer (or the timeout).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)
WEBHOOK_DEAD_LETTERS = Counter(
    "peerledger_webhook_dead_letters_total",
    "Documents that failed every attempt of the retry schedule (moved to the endpoint's dead letters).",
)
WEBHOOK_LAG = Gauge(
    "peerledger_webhook_lag_seqs",
    "Seqs of the endpoint's platform after the endpoint's cursor (the last seq whose first attempt was made), "
    "as of this deliverer's last look.",
    ["endpoint"],
)
WEBHOOK_RETRIES_PENDING = Gauge(
    "peerledger_webhook_retries_pending",
    "Documents of the endpoint waiting for another attempt.",
    ["endpoint"],
)


# The Kafka publisher (`peerledger publish`, ledger.kafka.publisher).
# `platform` is a platform id (a bounded set: the platforms of the ledger).
PUBLISH_DOCUMENTS = Counter(
    "peerledger_publish_documents_total",
    "Booking documents published to the topic in committed Kafka transactions.",
    ["platform"],
)
PUBLISH_TRANSACTIONS = Counter(
    "peerledger_publish_transactions_total",
    "Kafka transactions of the publisher, by outcome: committed, or failed (aborted or fenced; "
    "the platform's producer is then opened again and resumes from the topic's last record).",
    ["outcome"],
)
PUBLISH_LAG = Gauge(
    "peerledger_publish_lag_seqs",
    "Seqs of the platform after the last one published, as of this publisher's last look.",
    ["platform"],
)
PUBLISH_PLATFORMS_CLAIMED = Gauge(
    "peerledger_publish_platforms_claimed",
    "Platforms this publisher owns among the publishers of its topic sharing the database.",
)

# -- the workers' HTTP endpoint ------------------------------------------------

# None when ready, else why not (the body of the 503).
ReadyCheck = Callable[[], str | None]

# A probe connection idle this long is dropped: the server answers one
# request at a time, so no client may hold it longer.
PROBE_SOCKET_TIMEOUT_SECONDS = 5.0
# The database check connects and runs `SELECT 1` within about this; below
# the probes' own timeout (3 s in deploy/), so a down database answers 503
# rather than a timed-out probe.
DATABASE_CHECK_TIMEOUT_SECONDS = 2


def database_check(db_url: str) -> ReadyCheck:
    """A ReadyCheck: the database answers `SELECT 1`, on a short-lived
    connection of its own (the worker's pooled connections belong to its
    main thread, and a probe must not wait behind a long transaction)."""
    from ledger.storage.store import DbUrl

    parsed = DbUrl.parse(db_url)

    def check() -> str | None:
        try:
            if parsed.pg is not None:
                import psycopg

                with psycopg.connect(**parsed.pg, connect_timeout=DATABASE_CHECK_TIMEOUT_SECONDS,
                                     options=f"-c statement_timeout={DATABASE_CHECK_TIMEOUT_SECONDS * 1000}",
                                     application_name="peerledger-probe") as conn:
                    conn.execute("SELECT 1")
            else:
                lite = sqlite3.connect(f"file:{quote(parsed.sqlite_path)}?mode=ro", uri=True,
                                       timeout=DATABASE_CHECK_TIMEOUT_SECONDS)
                try:
                    lite.execute("SELECT 1")
                finally:
                    lite.close()
        except Exception as e:  # any driver error means: not reachable
            return f"database unreachable: {type(e).__name__}"
        return None

    return check


class _ProbeServer(HTTPServer):
    """One request at a time (scrapes and probes are seconds apart), each
    bounded by PROBE_SOCKET_TIMEOUT_SECONDS: no thread per connection."""

    def __init__(self, address: tuple[str, int], checks: tuple[ReadyCheck, ...]) -> None:
        super().__init__(address, _ProbeHandler)
        self.checks = checks


class _ProbeHandler(BaseHTTPRequestHandler):
    timeout = PROBE_SOCKET_TIMEOUT_SECONDS
    server: _ProbeServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            problem = next((p for p in (check() for check in self.server.checks) if p is not None), None)
            if problem is None:
                self._json(200, {"status": "ready"})
            else:
                self._json(503, {"detail": problem})
        else:
            self._json(404, {"detail": "Not Found"})

    def _json(self, status: int, doc: dict[str, str]) -> None:
        self._answer(status, orjson.dumps(doc), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silent: a scrape or probe every few seconds would drown the worker's own log."""


def serve(port: int, addr: str = "0.0.0.0", checks: tuple[ReadyCheck, ...] = ()) -> HTTPServer:
    """Serve `/metrics`, `/healthz` and `/readyz` (200 when every check
    passes, else 503 with the first problem) on `addr:port` from a daemon
    thread; returns the server (port 0 picks a free port: read it from
    `server.server_port`; `server.shutdown()` stops it)."""
    server = _ProbeServer((addr, port), checks)
    threading.Thread(target=server.serve_forever, name="peerledger-metrics", daemon=True).start()
    return server
