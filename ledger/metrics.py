"""Prometheus metrics of the ledger's ingestion paths (Kafka now, HTTP later).

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
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
KAFKA_CONSUMER_LAG = Gauge(
    "peerledger_kafka_consumer_lag_messages",
    "Messages in an assigned partition after the last one this consumer processed "
    "(high watermark minus position, as of the last fetch).",
    ["topic", "partition"],
)


def serve(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve `/metrics` on `addr:port` from a daemon thread; returns the HTTP
    server (port 0 picks a free port: read it from `server.server_port`)."""
    server, _thread = start_http_server(port, addr=addr)
    return server
