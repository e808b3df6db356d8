"""Kafka in and out: a ledger consumer with effectively-once effects, and a producer.

Topic layout (EVENTS.md §1, docs/kafka.md): one message per event, the value
is the event's JSON, the key is its platform id (UTF-8).  Kafka keeps order
only within a partition, and the default partitioner sends every message
with one key to one partition, so keying by platform is what delivers each
platform's events in the order the platform produced them.  A message whose
key is present but differs from the event's `platform` would be judged
against another partition's order, so it is rejected `invalid`.

The consumer (`LedgerConsumer`) is one member of a consumer group.  Its loop
is the commit protocol:

1. poll until a batch is in hand: at most `batch_max_events` messages and
   about `batch_max_bytes`, or what arrived within BATCH_FILL_MS;
2. `Ingestor.ingest` it (cut into ingest batches bounded in events and
   bytes).  Under the locks of its platforms and partitions it checks that
   the ledger's stored position in each partition is not past the batch,
   decides every message's outcome, copies each rejected or unparseable
   message to the dead-letter topic (original key and value bytes, reason
   headers) and waits until every copy is acknowledged (acks=all), then one
   database transaction appends the accepted events, records every reject
   (source `kafka:T/P/OFFSET`) and stores the offset after the batch for
   each of its partitions (`peerledger_kafka_offsets`);
3. the same offsets are committed to Kafka, for the tools that watch a
   group's lag; the ledger does not rely on them.

The ledger's own offsets are the group's position: when the group assigns a
partition, the consumer seeks to the offset stored with the ledger (Kafka's
committed offset only where the ledger has none, e.g. a new group).  A crash
at any instant therefore redelivers nothing that the ledger holds the
outcome of, and the ledger is exactly what one uninterrupted run would have
made: effectively-once, not merely for accepted events (a redelivered one
would be a `duplicate`) but for rejected ones too, which EVENTS.md §4 would
judge again, against a ledger that has moved on (a payout refused for want
of balance could be accepted the second time).  A batch whose first message
is behind the stored offset (a consumer that lost its partition in a
rebalance it has not heard of yet, or two groups sharing a name) is
*fenced*: nothing of it is written, and the consumer seeks to the stored
offsets and carries on.  Dead letters are at-least-once: a crash between
their acknowledgement and the transaction redelivers the batch, and they
are sent again with the same source topic/partition/offset to deduplicate
by.

Every message gets an outcome, and an outcome is never "retry": a
non-JSON, oversized, empty, mis-keyed or rule-breaking message is
dead-lettered and committed past like any other, so a poison message never
blocks its partition.  What does stop the consumer (exit non-zero, nothing
appended for the batch) is the database or the dead-letter topic being
unavailable; the supervisor restarts it and the batch is redelivered.

Rebalances: kafka-python calls the `ConsumerRebalanceListener` from inside
`poll`.  When partitions are revoked, the batch in hand (polled while
filling it) is appended first, then the revoked partitions' offsets are
committed to Kafka as far as appended; their next owner seeks to the
ledger's offsets in any case.

The read models follow the log: by default a projector process runs beside
the consumer for its lifetime (the second core; `ledger.ingest.projector.ProjectorProcess`), and
stopping the consumer waits for it to reach the head, so balances and
digests are current when `peerledger consume` exits.  With
`projector="inline"` this process projects after each committed batch
instead (one core; see bench/results/kafka.json for the cost).  With
`projector="none"` it only appends: a deployment runs the projection as
workers of their own (`peerledger project --follow`, deploy/).

`not_ready` says whether the consumer is doing its job (in the group,
polling): `peerledger consume --metrics-port` answers `/readyz` with it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ledger.contract import rules
from ledger.contract.schema import MAX_LINE_BYTES, Envelope, read_envelope
from ledger.ingest.ingestor import (
    ACCEPTED,
    DUPLICATE,
    REJECTED,
    Ingestor,
    Outcome,
    ledger_time,
)
from ledger.ingest.projector import Projector, ProjectorProcess
from ledger.ingest.sources import BATCH_MAX_BYTES, BATCH_MAX_EVENTS, Offered, read_lines
from ledger.ops import metrics
from ledger.storage.store import OffsetAdvance, OffsetsFenced, RejectRecord, Store

log = logging.getLogger("peerledger.kafka")

SOURCE = "kafka"  # the `source` label of the ledger's outcome metrics
DEFAULT_GROUP = "peerledger"
DEAD_LETTER_SUFFIX = ".rejected"
# `peerledger produce`: gzip needs nothing beyond the standard library.
DEFAULT_COMPRESSION = "gzip"

# How long one poll waits for messages: also how late a stop request (a
# signal) or an idle check is noticed.
POLL_TIMEOUT_MS = 500
# Consecutive poll failures tolerated (see _poll), and the pause after each.
POLL_FAILURES_MAX = 10
POLL_RETRY_BACKOFF_SECONDS = 0.5
# How long the first message of a batch may wait for more to fill it: the
# latency added to an event in a quiet stream.
BATCH_FILL_MS = 50
# A consumer silent this long is dead to the group, which then gives its
# partitions to the others (kafka-python's default; the heartbeat thread
# keeps a consumer that is busy appending alive).
SESSION_TIMEOUT_MS = 10_000
# One synchronous commit; past this the commit counts as failed (offsets
# stay pending and go out with the next commit).
COMMIT_TIMEOUT_MS = 30_000
# Every dead letter must be acknowledged within this, or the consumer stops
# without committing.
DEAD_LETTER_FLUSH_TIMEOUT_SECONDS = 60.0
# A dead letter carries the original value up to this size (under Kafka's
# default 1 MB message limit, with room for the headers); a longer one (the
# ledger rejects values over 1 MiB unread) is cut and says so in headers,
# so an oversized message can never make its own dead letter fail.
DEAD_LETTER_VALUE_MAX_BYTES = 900 * 1024
# With --stop-when-idle, the group's committed offsets are compared with the
# topic's end offsets at most this often (a few requests each time).
IDLE_CHECK_INTERVAL_SECONDS = 1.0
# A consumer that has not completed a poll for this long is not ready: an
# idle one polls every POLL_TIMEOUT_MS, a busy one between batches of about
# 0.2 s, so only a stuck database (or a stuck broker) gets this far.
READY_POLL_MAX_AGE_SECONDS = 60.0
PROJECTORS = ("process", "inline", "none")

# Headers of a dead letter (values UTF-8).
HEADER_REASON_CODE = "peerledger.reason.code"
HEADER_REASON_MESSAGE = "peerledger.reason.message"
HEADER_SOURCE_TOPIC = "peerledger.source.topic"
HEADER_SOURCE_PARTITION = "peerledger.source.partition"
HEADER_SOURCE_OFFSET = "peerledger.source.offset"
HEADER_VALUE_BYTES = "peerledger.value.bytes"  # only on a cut value: its original length

TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def source_of(topic: str, partition: int, offset: int) -> str:
    """Where a message came from, as kept in the rejects store: `kafka:T/P/OFFSET`."""
    return f"kafka:{topic}/{partition}/{offset}"


def key_mismatch(key: bytes | None, envelope: Envelope) -> str | None:
    """Why a keyed message must be rejected for its key, or None.

    A message is rejected when its key is not UTF-8 or is not the event's
    `platform`.  An unkeyed message, or one whose value has no string
    `platform` to compare (not JSON, not an object, too long, too deep), is
    left to the ingest's own shape checks.
    """
    if key is None or envelope.platform is None:
        return None
    try:
        platform_key = key.decode("utf-8")
    except UnicodeDecodeError:
        return "message key: not UTF-8; the key must be the event's platform id (EVENTS.md section 1)"
    if platform_key != envelope.platform:
        return (
            f"message key {platform_key[:80]!r} differs from the event's platform {envelope.platform[:80]!r}: "
            "messages must be keyed by platform id (EVENTS.md section 1), which keeps each platform's "
            "events in one partition and so in order"
        )
    return None


def offer(record: Any, now: str) -> Offered | RejectRecord:
    """A consumed record as the ledger's input: offered to the Ingestor, or
    rejected `invalid` here for its key.  Never raises, whatever the record's
    bytes: a poison message gets its outcome like any other."""
    value = record.value if record.value is not None else b""  # a tombstone is an empty, invalid event
    source = source_of(record.topic, record.partition, record.offset)
    envelope = read_envelope(value)
    problem = key_mismatch(record.key, envelope)
    if problem is None:
        return Offered(value, source)
    return RejectRecord(envelope.platform_id, envelope.event_id, rules.INVALID, problem, value, source, now)


@dataclass
class ConsumerSettings:
    """What `peerledger consume` is told; see docs/kafka.md for each option."""

    bootstrap_servers: str
    topic: str
    group_id: str = DEFAULT_GROUP
    dead_letter_topic: str | None = None  # default: TOPIC.rejected
    batch_max_events: int = BATCH_MAX_EVENTS
    batch_max_bytes: int = BATCH_MAX_BYTES
    session_timeout_ms: int = SESSION_TIMEOUT_MS
    # Stop once the group has committed the whole topic and nothing has
    # arrived for this long (tests, one-off back-fills); None: run until a signal.
    stop_when_idle_seconds: float | None = None
    projector: str = "process"  # "process" (a second process), "inline" or "none" (workers of their own)
    # The Kafka version whose protocol to speak, e.g. "2.3", instead of
    # negotiating each API's version with the brokers (kafka-python's
    # `api_version`): for brokers, or mocks, that mis-handle a newer version.
    api_version: str | None = None
    client_id: str = "peerledger-consume"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max_events <= BATCH_MAX_EVENTS:
            raise ValueError(f"batch_max_events must be 1 to {BATCH_MAX_EVENTS}")
        if not MAX_LINE_BYTES < self.batch_max_bytes <= BATCH_MAX_BYTES:
            raise ValueError(f"batch_max_bytes must be over {MAX_LINE_BYTES} and at most {BATCH_MAX_BYTES}")
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {', '.join(PROJECTORS)}")
        if self.dead_letter_topic is None:
            self.dead_letter_topic = self.topic + DEAD_LETTER_SUFFIX
        for name in (self.topic, self.dead_letter_topic):
            if not TOPIC_RE.match(name):
                raise ValueError(f"bad topic name {name!r}: 1 to 249 of A-Z a-z 0-9 . _ -")
        if self.dead_letter_topic == self.topic:
            raise ValueError("the dead-letter topic must not be the topic consumed")
        self.client_config()  # checks the API version

    def client_config(self) -> dict[str, Any]:
        """What the consumer and the dead-letter producer share."""
        return client_config(self.bootstrap_servers, self.api_version)


def client_config(bootstrap_servers: str, api_version: str | None) -> dict[str, Any]:
    """The settings every kafka-python client of the ledger starts from.

    `api_version` ("X.Y" or "X.Y.Z") makes the client speak that Kafka
    version's protocol instead of negotiating each API's version with the
    brokers: for brokers, or mocks, that mis-handle a newer version."""
    config: dict[str, Any] = {"bootstrap_servers": bootstrap_servers, "metrics_enabled": False}
    if api_version is not None:
        if not re.fullmatch(r"\d+(\.\d+){1,2}", api_version):
            raise ValueError(f"bad Kafka API version {api_version!r}: X.Y or X.Y.Z")
        config["api_version"] = tuple(int(part) for part in api_version.split("."))
    return config


@dataclass
class ConsumeSummary:
    consumed: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    commits: int = 0
    commit_failures: int = 0
    assignments: int = 0

    def as_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["rejected_by_code"] = dict(sorted(self.rejected_by_code.items()))
        return doc


@dataclass(slots=True)
class _DeadLetter:
    record: Any  # kafka ConsumerRecord
    code: str
    message: str


class _Rebalance(ConsumerRebalanceListener):
    """Forwards kafka-python's rebalance callbacks (run inside poll) to the consumer."""

    def __init__(self, owner: LedgerConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.owner._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner._on_assigned(assigned)


class LedgerConsumer:
    """Consumes a topic into the ledger until `stop()` (or idle); see the module doc."""

    def __init__(self, store: Store, settings: ConsumerSettings) -> None:
        self.store = store
        self.settings = settings
        self.summary = ConsumeSummary()
        self._ingestor = Ingestor(store)
        self._stop_requested = False
        # Offsets stored with the ledger but not yet committed to Kafka:
        # partition -> next offset to commit.  At most one entry per
        # assigned partition.
        self._pending: dict[TopicPartition, int] = {}
        # Polled, not yet appended: at most batch_max_events messages.
        self._in_hand: dict[TopicPartition, list[Any]] = {}
        self._in_hand_count = 0
        self._in_hand_bytes = 0
        self._failure: BaseException | None = None
        self._poll_failures = 0  # consecutive
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._last_message_at = time.monotonic()
        self._last_idle_check_at = 0.0
        self._joined = False  # given an assignment (possibly empty) by the group at least once
        self._last_poll_at = time.monotonic()

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand (safe from a signal handler)."""
        self._stop_requested = True

    def not_ready(self) -> str | None:
        """Why this consumer is not doing its job now, or None: it must have
        joined the group and completed a poll within
        READY_POLL_MAX_AGE_SECONDS (safe from another thread)."""
        if not self._joined:
            return "not in the consumer group yet"
        silent_seconds = time.monotonic() - self._last_poll_at
        if silent_seconds > READY_POLL_MAX_AGE_SECONDS:
            return f"no poll completed for {silent_seconds:.0f} s"
        return None

    # -- the loop ------------------------------------------------------------

    def run(self) -> ConsumeSummary:
        """Consume until stopped; on return every appended batch is committed
        (as far as the group allows), the group is left and the read models
        are at the log's head."""
        s = self.settings
        self.store.ensure_kafka_offsets_schema()
        with ExitStack() as stack:
            projector: Projector | None = None
            if s.projector == "process":
                stack.enter_context(ProjectorProcess(self.store.url))
            elif s.projector == "inline":
                projector = Projector(self.store)
                projector.catch_up()
            self._producer = KafkaProducer(
                **s.client_config(),
                client_id=s.client_id + "-dead-letters",
                acks="all",
                enable_idempotence=True,  # a retried send neither doubles nor reorders
                linger_ms=5,
                max_request_size=DEAD_LETTER_VALUE_MAX_BYTES + 64 * 1024,
            )
            stack.callback(self._producer.close)
            self._consumer = consumer = KafkaConsumer(
                **s.client_config(),
                group_id=s.group_id,
                client_id=s.client_id,
                enable_auto_commit=False,  # commits are the protocol's step 4, nothing else
                auto_offset_reset="earliest",  # a new group starts at the beginning: no event skipped
                isolation_level="read_committed",  # never ingest a transaction that was aborted
                max_poll_records=s.batch_max_events,
                fetch_max_bytes=s.batch_max_bytes,
                session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=max(1, s.session_timeout_ms // 3),
            )
            # Leaves the group (no offsets: auto-commit is off), also on errors.
            stack.callback(consumer.close, autocommit=False)
            consumer.subscribe([s.topic], listener=_Rebalance(self))
            while not self._stop_requested:
                if self._fill_batch():
                    self._last_message_at = time.monotonic()
                    self._process_in_hand()
                    self._commit(self._pending)
                    if projector is not None:
                        projector.catch_up()
                elif self._pending:  # sought to the ledger's offsets: Kafka's catch up
                    self._commit(self._pending)
                elif self._idle_and_drained():
                    break
                self._observe_lag()
            self._commit(self._pending)
        return self.summary

    def _poll(self, timeout_ms: int, max_records: int) -> None:
        """One poll; what it returns joins the batch in hand.

        A group-coordination error raised by poll (a broker answering a
        join or sync with an error that kafka-python deems fatal) is retried
        a few times: nothing in hand is lost by it, and the next poll rejoins.
        """
        assert self._consumer is not None
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as e:
            self._poll_failures += 1
            if self._poll_failures > POLL_FAILURES_MAX:
                raise
            log.warning("poll failed (%s); retrying (%d of %d)", e, self._poll_failures, POLL_FAILURES_MAX)
            time.sleep(POLL_RETRY_BACKOFF_SECONDS)
            return
        self._poll_failures = 0
        self._last_poll_at = time.monotonic()
        if self._failure is not None:  # raised in a rebalance callback, which kafka-python swallows
            raise self._failure
        for tp, records in polled.items():
            self._in_hand.setdefault(tp, []).extend(records)
            self._in_hand_count += len(records)
            self._in_hand_bytes += sum(len(r.value) for r in records if r.value is not None)

    def _fill_batch(self) -> bool:
        """Poll until a batch is in hand: batch_max_events messages, or
        batch_max_bytes of values, or BATCH_FILL_MS after the first message
        arrived.  False if nothing arrived within POLL_TIMEOUT_MS.

        One fetch may return little (a small producer batch per partition);
        filling the ingest batch amortises its transaction and commit.
        """
        s = self.settings
        timeout_ms = POLL_TIMEOUT_MS
        deadline: float | None = None
        while (self._in_hand_count < s.batch_max_events and self._in_hand_bytes < s.batch_max_bytes
               and not self._stop_requested):
            self._poll(timeout_ms, s.batch_max_events - self._in_hand_count)
            if not self._in_hand:
                return False
            now = time.monotonic()
            if deadline is None:
                deadline = now + BATCH_FILL_MS / 1000
            timeout_ms = int((deadline - now) * 1000)
            if timeout_ms <= 0:
                break
        return bool(self._in_hand)

    def _process_in_hand(self) -> None:
        """Append and dead-letter the batch in hand, with its offsets; they
        become committable to Kafka.  A fenced batch is dropped and its
        partitions sought to the ledger's offsets."""
        in_hand = self._in_hand
        self._in_hand = {}
        self._in_hand_count = self._in_hand_bytes = 0
        records = [r for tp in sorted(in_hand) for r in in_hand[tp]]  # each partition in offset order
        try:
            for chunk in _chunks(records, self.settings.batch_max_events, self.settings.batch_max_bytes):
                self._append(chunk)
        except OffsetsFenced as e:
            log.warning("batch fenced (%s): seeking to the offsets stored with the ledger", e)
            metrics.KAFKA_BATCHES_FENCED.labels(self.settings.topic).inc()
            for tp in in_hand:
                self._pending.pop(tp, None)  # whoever is ahead commits its own
            self._seek_to_stored(set(in_hand))
            return
        for tp, batch in in_hand.items():
            self._pending[tp] = batch[-1].offset + 1

    def _append(self, records: Sequence[Any]) -> None:
        """Decide, dead-letter and durably append one chunk with its offsets."""
        offered: list[Offered] = []
        offered_records: list[Any] = []
        mis_keyed: list[RejectRecord] = []
        mis_keyed_dead: list[_DeadLetter] = []
        now = ledger_time()
        first_offsets: dict[int, int] = {}  # partition -> its first and last offset in the chunk
        last_offsets: dict[int, int] = {}
        for r in records:
            first_offsets.setdefault(r.partition, r.offset)
            last_offsets[r.partition] = r.offset
            decided = offer(r, now)
            if isinstance(decided, Offered):
                offered.append(decided)
                offered_records.append(r)
            else:
                mis_keyed.append(decided)
                mis_keyed_dead.append(_DeadLetter(r, rules.INVALID, decided.message))

        def dead_letter(outcomes: list[Outcome]) -> None:
            dead = list(mis_keyed_dead)
            for r, outcome in zip(offered_records, outcomes, strict=True):
                if outcome.outcome == REJECTED:
                    dead.append(_DeadLetter(r, outcome.code or rules.INVALID, outcome.message or ""))
            dead.sort(key=lambda d: (d.record.partition, d.record.offset))
            self._send_dead_letters(dead)

        s = self.settings
        offsets = [OffsetAdvance(s.group_id, s.topic, p, first, last_offsets[p] + 1)
                   for p, first in first_offsets.items()]
        started = time.perf_counter()
        outcomes = self._ingestor.ingest(offered, extra_rejects=mis_keyed, offsets=offsets,
                                         before_append=dead_letter)
        metrics.BATCH_APPEND_LATENCY.labels(SOURCE).observe(time.perf_counter() - started)
        # Counted per appended chunk: a later chunk of the batch may be fenced.
        metrics.KAFKA_MESSAGES_CONSUMED.labels(self.settings.topic).inc(len(records))
        self.summary.consumed += len(records)
        self._count(outcomes, len(mis_keyed))

    def _count(self, outcomes: Iterable[Outcome], mis_keyed: int) -> None:
        s = self.summary
        heads: dict[str, int] = {}
        by_code = s.rejected_by_code
        for o in outcomes:
            if o.outcome == ACCEPTED:
                s.accepted += 1
                heads[o.platform] = o.seq  # type: ignore[index]  # outcomes come in seq order
            elif o.outcome == DUPLICATE:
                s.duplicate += 1
            else:
                s.rejected += 1
                by_code[o.code] = by_code.get(o.code, 0) + 1  # type: ignore[index]
                metrics.EVENTS_REJECTED.labels(SOURCE, o.code).inc()
        if mis_keyed:
            s.rejected += mis_keyed
            by_code[rules.INVALID] = by_code.get(rules.INVALID, 0) + mis_keyed
            metrics.EVENTS_REJECTED.labels(SOURCE, rules.INVALID).inc(mis_keyed)
        metrics.EVENTS_ACCEPTED.labels(SOURCE).inc(sum(1 for o in outcomes if o.outcome == ACCEPTED))
        metrics.EVENTS_DUPLICATE.labels(SOURCE).inc(sum(1 for o in outcomes if o.outcome == DUPLICATE))
        for platform, seq in heads.items():
            metrics.LAST_APPENDED_SEQ.labels(platform).set(seq)

    # -- dead letters --------------------------------------------------------

    def _send_dead_letters(self, dead: Sequence[_DeadLetter]) -> None:
        """Copy each to the dead-letter topic and wait until all are acknowledged.

        Raises (so nothing is committed) if any send fails.
        """
        if not dead:
            return
        assert self._producer is not None
        topic = self.settings.dead_letter_topic
        futures = []
        for d in dead:
            r = d.record
            value = r.value if r.value is not None else b""
            headers = [
                (HEADER_REASON_CODE, d.code.encode()),
                (HEADER_REASON_MESSAGE, d.message.encode("utf-8", "replace")),
                (HEADER_SOURCE_TOPIC, r.topic.encode()),
                (HEADER_SOURCE_PARTITION, str(r.partition).encode()),
                (HEADER_SOURCE_OFFSET, str(r.offset).encode()),
            ]
            if len(value) > DEAD_LETTER_VALUE_MAX_BYTES:
                headers.append((HEADER_VALUE_BYTES, str(len(value)).encode()))
                value = value[:DEAD_LETTER_VALUE_MAX_BYTES]
            key = r.key[:1024] if r.key is not None else None  # keys are platform ids; a huge one is garbage
            futures.append(self._producer.send(topic, key=key, value=value, headers=headers))
        self._producer.flush(timeout=DEAD_LETTER_FLUSH_TIMEOUT_SECONDS)
        for f, d in zip(futures, dead, strict=True):
            f.get(timeout=0)  # raises the send's error, if any
            metrics.KAFKA_DEAD_LETTERS.labels(topic, d.code).inc()
        self.summary.dead_lettered += len(dead)

    # -- offsets and the group -------------------------------------------------

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit these (appended) offsets; a failure leaves them pending."""
        if not offsets:
            return
        assert self._consumer is not None
        request = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        try:
            self._consumer.commit(request, timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as e:
            # Typically a rebalance in progress.  The events are appended, so
            # the worst outcome is that the partition's next owner redelivers
            # them and they come out as duplicates.
            self.summary.commit_failures += 1
            log.warning("offset commit failed (%s); redelivered messages will be duplicates", e)
            return
        self.summary.commits += 1
        for tp, o in request.items():
            if self._pending.get(tp) == o.offset:
                del self._pending[tp]

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            if self._in_hand:  # polled while filling a batch: finish it before letting go
                self._process_in_hand()
        except BaseException as e:
            # Not appended, so not committed: the next owner redelivers it.
            self._failure = e
            self._in_hand = {}
            self._in_hand_count = self._in_hand_bytes = 0
        self._commit({tp: o for tp, o in self._pending.items() if tp in revoked})
        for tp in revoked:
            self._pending.pop(tp, None)  # the next owner starts from the committed offset
            try:
                metrics.KAFKA_CONSUMER_LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass  # never observed
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.summary.assignments += 1
        try:
            self._seek_to_stored(assigned)
        except BaseException as e:  # kafka-python swallows what a callback raises: re-raised by _poll
            self._failure = e
        self._joined = True
        self._last_message_at = time.monotonic()
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    def _seek_to_stored(self, partitions: set[TopicPartition]) -> None:
        """Position each partition after the last message whose outcome the
        ledger holds (where it holds one), and have Kafka's committed offset
        catch up with it."""
        assert self._consumer is not None
        stored = self.store.kafka_offsets(self.settings.group_id, self.settings.topic)
        assigned = self._consumer.assignment()
        for tp in partitions:
            if tp.partition in stored and tp in assigned:
                self._consumer.seek(tp, stored[tp.partition])
                self._pending[tp] = stored[tp.partition]

    def _observe_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            position = consumer.position(tp, timeout_ms=0)  # local; None until known
            if high is not None and position is not None:
                metrics.KAFKA_CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - position))

    def _idle_and_drained(self) -> bool:
        """With stop_when_idle_seconds: nothing arrived for that long and the
        group has committed every partition up to its end."""
        idle_seconds = self.settings.stop_when_idle_seconds
        now = time.monotonic()
        if idle_seconds is None or now - self._last_message_at < idle_seconds:
            return False
        if now - self._last_idle_check_at < IDLE_CHECK_INTERVAL_SECONDS:
            return False
        self._last_idle_check_at = now
        consumer = self._consumer
        assert consumer is not None
        topic = self.settings.topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        if not partitions:
            return False
        ends = consumer.end_offsets(partitions)
        return all((consumer.committed(tp) or 0) >= ends[tp] for tp in partitions)


def _chunks(records: Sequence[Any], max_events: int, max_bytes: int) -> Iterator[list[Any]]:
    """Ingest batches: consecutive records, at most max_events and max_bytes
    of values each (a value counted at most as its 1 MiB limit: a longer one
    is rejected unread, its bytes never parsed)."""
    chunk: list[Any] = []
    size = 0
    for r in records:
        n = min(len(r.value) if r.value is not None else 0, MAX_LINE_BYTES + 1)
        if chunk and (len(chunk) >= max_events or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(r)
        size += n
    if chunk:
        yield chunk


# -- producing -----------------------------------------------------------------


@dataclass
class ProduceSummary:
    sent: int = 0
    unkeyed: int = 0  # not a JSON object with a string platform: sent without a key
    too_long: list[str] = field(default_factory=list)  # sources of lines over 1 MiB, not sent
    failed: int = 0

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def platform_key(line: bytes) -> bytes | None:
    """The message key of an event line: its platform id, or None if it has none."""
    platform = read_envelope(line).platform
    return platform.encode("utf-8") if platform is not None else None


def produce_files(paths: Sequence[str], bootstrap_servers: str, topic: str,
                  compression: str | None = DEFAULT_COMPRESSION) -> ProduceSummary:
    """Publish JSON Lines files to `topic`, one message per line, keyed by platform.

    Lines that are not events with a platform are still published (unkeyed):
    the ledger rejects them and keeps them with their reasons, as it would
    from a file.  Lines over 1 MiB are not published (the ledger would
    reject them unread and Kafka's default limit is 1 MB); they are listed.

    acks=all with idempotence: a send is acknowledged only when every in-sync
    replica has it, and retries neither double nor reorder messages, so each
    platform's events reach their partition in file order.  linger_ms and a
    large batch_size send many messages per request; gzip (in the standard
    library) shrinks JSON events about fivefold, on the wire and on the
    brokers' disks, and consumers decompress transparently.
    """
    summary = ProduceSummary()

    def failed(_exc: BaseException) -> None:
        summary.failed += 1

    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id="peerledger-produce",
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        batch_size=512 * 1024,
        compression_type=compression,
        max_request_size=MAX_LINE_BYTES + 64 * 1024,
        metrics_enabled=False,
    )
    try:
        for path in paths:
            with open(path, "rb") as stream:
                for item in read_lines(stream, path):
                    line = item.payload
                    assert isinstance(line, bytes)
                    line = line.rstrip(b"\r\n")
                    if len(line) > MAX_LINE_BYTES:
                        summary.too_long.append(item.source)
                        continue
                    key = platform_key(line)
                    summary.unkeyed += key is None
                    producer.send(topic, key=key, value=line).add_errback(failed)
                    summary.sent += 1
        producer.flush()
    finally:
        producer.close()
    return summary
