"""The Kafka publisher: every booking document on a topic exactly once, in seq order per platform.

    peerledger publish --bootstrap-servers HOST --topic T [--platform P …] [--until-caught-up]

What the topic gets.  One record per booking document (EVENTS.md §9): key =
the platform id (UTF-8), value = the document's canonical bytes, headers
`seq` (decimal ASCII) and `type` (the event type).  A platform's documents
all go to one partition, the one Kafka's default partitioner gives its key
(murmur2, as the Java client and kafka-python), in seq order.

Exactly once, how.  Each platform has its own transactional producer,
`transactional.id` = `peerledger-publish:<topic>:<platform>`, and a page of
at most `TRANSACTION_DOCUMENTS_MAX` documents is one Kafka transaction.  When
a platform's producer opens:

1. `init_transactions()` fences every earlier producer of the platform (a
   killed publisher, or a zombie that lost its claim but still runs): the
   broker aborts its open transaction, and refuses its writes from then on;
2. once every transaction open in the partition has ended (another
   platform's can hold this one's committed records back from readers), the
   publisher reads the platform's partition with `read_committed` to find
   the platform's last committed record, and resumes after its seq.

So the topic itself says what was published: a crash at any instant (before,
during or after a commit) leaves the platform's committed records a prefix
of its documents, and the next producer continues that prefix.  Nothing is
published that the ledger has not committed (documents are read from
committed rows only, `ledger.bookings.documents`).  The found record is also
compared with the ledger's document of that seq: a topic that holds other
bytes (another ledger's, a ledger restored from an older backup) stops the
publisher with an error instead of publishing a history that contradicts it.

Start-up costs nothing that grows with the log.  After each commit the
publisher stores a *position* (`peerledger_publish_positions`: the
partition, an offset and the seq of the platform's last record there; the
platform's later records are never before that offset).  The search for the last record
reads backwards from the partition's end in chunks of `SCAN_CHUNK_RECORDS`
and stops at the first chunk holding one of the platform's records, or at
the stored position: it reads only what was written to the partition after
the position.  The position moves after each commit and, while the platform
is idle, to the partition's end every `POSITION_REFRESH_SECONDS`: a restart
reads at most one transaction of this platform plus about a minute of what
other platforms wrote to its partition.  Only a platform's first start on a
topic, with no position yet, searches the whole partition (once).

Sharing the work.  On PostgreSQL, publishers of one topic split its
platforms as the projection workers do (`ledger.ingest.claims`, a worker kind
of its own per topic); fencing keeps a handover exact even when two of them
briefly believe they own a platform.  On SQLite one publisher per topic runs
(a second would fence the first's transactions, which then resume from the
topic: churn, not duplicates, on a real broker).

Bounds.  Open producers are at most `PRODUCERS_MAX` (least recently used
closed first: its platform reopens with one search from its position); a
transaction holds at most one page of documents; a failed transaction
(a broker down, a timeout) closes the platform's producer and retries it
after a backoff of at most `RETRY_BACKOFF_MAX_SECONDS`, the other platforms
going on meanwhile.  What stops the publisher (exit non-zero) is an error no
retry mends: the topic's partition count changed under a platform (its
order would break), the topic contradicts the ledger, a document larger
than the topic accepts, the database unavailable.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError, ProducerFencedError
from kafka.partitioner.default import murmur2

from ledger.bookings.documents import PAGE_DOCUMENTS, Document, read_documents
from ledger.ingest.claims import PlatformClaims, open_claims
from ledger.kafka.consumer import TOPIC_RE, client_config
from ledger.ops import metrics
from ledger.storage.store import Store

log = logging.getLogger("peerledger.publish")

# Documents per Kafka transaction: one page of `read_documents`.
TRANSACTION_DOCUMENTS_MAX = PAGE_DOCUMENTS
# Producers open at once (each a thread and connections to the brokers).
PRODUCERS_MAX = 32
# Records read per step of the backwards search for a platform's last record.
SCAN_CHUNK_RECORDS = 1000
# The longest one step of that search may take (a broker that stops answering).
SCAN_STEP_TIMEOUT_SECONDS = 60.0
# How often a caught-up publisher looks for new documents.
FOLLOW_POLL_SECONDS = 0.2
# How often an idle platform's stored position moves to its partition's end
# (one ListOffsets and one row written): what bounds a restart's search when
# other platforms keep writing to the partition.
POSITION_REFRESH_SECONDS = 60.0
# How often the publisher lists the platforms (a query) and sets the lag gauges.
PLATFORMS_POLL_SECONDS = 1.0
# After a failed transaction, the platform waits this long, doubled per
# failure in a row, up to the maximum.
RETRY_BACKOFF_SECONDS = 0.5
RETRY_BACKOFF_MAX_SECONDS = 30.0
# A broker's transaction timeout: how long an abandoned transaction (its
# producer killed) holds back `read_committed` readers of its partition if no
# new producer of the platform fences it first.
TRANSACTION_TIMEOUT_MS = 60_000
# A search waits for the transactions open in its partition (other
# platforms', abandoned ones included) to end: at most their timeout, and a margin.
STABLE_WAIT_SECONDS = TRANSACTION_TIMEOUT_MS / 1000 + 30
STABLE_POLL_SECONDS = 0.2
# The largest record the producer sends (Kafka's default `max.message.bytes`).
RECORD_MAX_BYTES = 1024 * 1024
# PostgreSQL keeps 63 bytes of an application name: publishers of one topic
# share a name made from a hash of the topic.
_CLAIMS_NAME_PREFIX = "peerledger-publish-"
COMPRESSIONS = ("gzip", "snappy", "lz4", "zstd", "none")

POSITIONS_SCHEMA_VERSION = 1
POSITIONS_DDL = [
    """CREATE TABLE IF NOT EXISTS peerledger_publish_positions (
        topic TEXT NOT NULL,
        platform TEXT NOT NULL,
        partition_id INTEGER NOT NULL,
        record_offset BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (topic, platform))""",
]


class PublishError(Exception):
    """An error that no retry mends: the publisher stops (exit 1)."""


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """What `peerledger publish` is told; docs/bookings.md § Kafka explains each option."""

    bootstrap_servers: str
    topic: str
    platforms: tuple[str, ...] = ()  # empty: every platform of the ledger
    follow: bool = True  # False: stop once every platform is published to its head
    compression: str | None = None
    api_version: str | None = None
    # Verify the CRC of every record batch read while searching the topic.
    # librdkafka's mock cluster writes transaction markers without one.
    check_crcs: bool = True
    transaction_documents_max: int = TRANSACTION_DOCUMENTS_MAX
    follow_poll_seconds: float = FOLLOW_POLL_SECONDS
    client_id: str = "peerledger-publish"

    def __post_init__(self) -> None:
        if not TOPIC_RE.match(self.topic):
            raise ValueError(f"bad topic name {self.topic!r}: 1 to 249 of A-Z a-z 0-9 . _ -")
        if not 1 <= self.transaction_documents_max <= TRANSACTION_DOCUMENTS_MAX:
            raise ValueError(f"transaction_documents_max must be 1 to {TRANSACTION_DOCUMENTS_MAX}")
        if self.compression not in (None, *COMPRESSIONS[:-1]):
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        self.client_config()  # checks the API version

    def client_config(self) -> dict[str, Any]:
        return client_config(self.bootstrap_servers, self.api_version)


def transactional_id(topic: str, platform: str) -> str:
    """The platform's producer identity on the topic: what fences its predecessors."""
    return f"peerledger-publish:{topic}:{platform}"


def partition_of(platform: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key `platform`."""
    assert partitions > 0
    return (murmur2(platform.encode()) & 0x7FFFFFFF) % partitions


def claims_name(topic: str) -> str:
    """The application name of the claims connections of a topic's publishers."""
    return _CLAIMS_NAME_PREFIX + hashlib.sha256(topic.encode()).hexdigest()[:32]


def headers_of(document: Document) -> list[tuple[str, bytes]]:
    return [("seq", str(document.seq).encode()), ("type", document.type.encode())]


# -- the stored positions -------------------------------------------------------


class Position(NamedTuple):
    """What a publisher knows of a platform on a topic: every record of the
    platform with a seq above `seq` is at `offset` or after it (so the search
    for its last record need not read before `offset`)."""

    partition: int
    offset: int
    seq: int


def create_positions_table(store: Store) -> None:
    store.ensure_schema("publish_positions", POSITIONS_SCHEMA_VERSION, POSITIONS_DDL)


def load_position(store: Store, topic: str, platform: str) -> Position | None:
    rows = store.query("SELECT partition_id, record_offset, seq FROM peerledger_publish_positions "
                       "WHERE topic = ? AND platform = ?", (topic, platform))
    return Position(*(int(v) for v in rows[0])) if rows else None


def save_position(store: Store, topic: str, platform: str, position: Position) -> None:
    """Store the position; it only moves forward (a slower, fenced writer never moves it back)."""
    with store.write_transaction() as c:
        c.execute(store.dialect.sql(
            "INSERT INTO peerledger_publish_positions (topic, platform, partition_id, record_offset, seq) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (topic, platform) DO UPDATE SET "
            "partition_id = excluded.partition_id, record_offset = excluded.record_offset, seq = excluded.seq "
            "WHERE excluded.seq > peerledger_publish_positions.seq "
            "OR (excluded.seq = peerledger_publish_positions.seq "
            "    AND excluded.record_offset > peerledger_publish_positions.record_offset) "
            "OR excluded.partition_id <> peerledger_publish_positions.partition_id"),
            (topic, platform, *position))


def list_positions(store: Store, topic: str) -> list[tuple[str, Position]]:
    create_positions_table(store)
    rows = store.query("SELECT platform, partition_id, record_offset, seq FROM peerledger_publish_positions "
                       "WHERE topic = ? ORDER BY platform", (topic,))
    return [(r[0], Position(int(r[1]), int(r[2]), int(r[3]))) for r in rows]


# -- reading the topic ------------------------------------------------------------


class Found(NamedTuple):
    """A platform's last committed record on the topic."""

    offset: int
    seq: int
    value: bytes


class TopicReader:
    """Finds a platform's last committed record in its partition (one
    `read_committed` consumer, no group, for every platform of this process)."""

    def __init__(self, settings: PublishSettings) -> None:
        self.settings = settings
        self.records_read = 0  # what the searches cost, for tests and the bench
        self._consumer = KafkaConsumer(**settings.client_config(), client_id=settings.client_id + "-search",
                                       group_id=None, enable_auto_commit=False,
                                       isolation_level="read_committed", check_crcs=settings.check_crcs,
                                       max_poll_records=SCAN_CHUNK_RECORDS)
        # Reads nothing: it only asks for the partitions' high watermarks.
        self._uncommitted = KafkaConsumer(**settings.client_config(), client_id=settings.client_id + "-watermarks",
                                          group_id=None, enable_auto_commit=False,
                                          isolation_level="read_uncommitted")

    def close(self) -> None:
        self._consumer.close()
        self._uncommitted.close()

    def _stable_end(self, tp: TopicPartition) -> int:
        """The partition's last stable offset once every transaction open in it
        now has ended.  Another platform's open transaction holds the last
        stable offset back, and with it this platform's later committed
        records: the search must not run before they are readable."""
        watermark = self._uncommitted.end_offsets([tp])[tp]
        deadline = time.monotonic() + STABLE_WAIT_SECONDS
        while True:
            stable = self._consumer.end_offsets([tp])[tp]
            if stable >= watermark:
                return int(stable)
            if time.monotonic() > deadline:
                raise KafkaError(f"{tp.topic}/{tp.partition}: a transaction below offset {watermark} stayed open "
                                 f"for {STABLE_WAIT_SECONDS:g} s")
            time.sleep(STABLE_POLL_SECONDS)

    def end_offset(self, partition: int) -> int:
        """The partition's last stable offset: a record written from now on comes at or after it."""
        tp = TopicPartition(self.settings.topic, partition)
        return int(self._consumer.end_offsets([tp])[tp])

    def last_record(self, partition: int, platform: str, floor_offset: int | None) -> tuple[Found | None, int]:
        """(the platform's committed record of highest offset at or after
        `floor_offset` (None: anywhere in the partition) or None, the
        partition's last stable offset when searched)."""
        tp = TopicPartition(self.settings.topic, partition)
        consumer = self._consumer
        consumer.assign([tp])
        begin = consumer.beginning_offsets([tp])[tp]
        end = self._stable_end(tp)
        floor = begin if floor_offset is None else max(begin, floor_offset)
        key = platform.encode()
        hi = end
        while hi > floor:
            lo = max(floor, hi - SCAN_CHUNK_RECORDS)
            found = self._last_in(tp, key, lo, hi)
            if found is not None:
                return found, end
            hi = lo
        return None, end

    def _last_in(self, tp: TopicPartition, key: bytes, lo: int, hi: int) -> Found | None:
        consumer = self._consumer
        consumer.seek(tp, lo)
        last = None
        deadline = time.monotonic() + SCAN_STEP_TIMEOUT_SECONDS
        while consumer.position(tp) < hi:
            if time.monotonic() > deadline:
                raise KafkaError(f"reading {tp.topic}/{tp.partition} from offset {lo} to {hi}: not done "
                                 f"within {SCAN_STEP_TIMEOUT_SECONDS:g} s")
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                self.records_read += 1
                if lo <= record.offset < hi and record.key == key:
                    last = record
        if last is None:
            return None
        seq = dict(last.headers or ()).get("seq")
        if seq is None or not seq.isdigit():
            raise PublishError(f"{tp.topic}/{tp.partition} offset {last.offset} has the key "
                               f"{key.decode()!r} but no seq header: the topic is written by another producer")
        return Found(last.offset, int(seq), last.value)


# -- one platform --------------------------------------------------------------------


class PlatformPublisher:
    """One platform's transactional producer, resumed after the topic's last record."""

    def __init__(self, store: Store, settings: PublishSettings, reader: TopicReader, platform: str) -> None:
        self.store, self.settings, self.platform = store, settings, platform
        self.key = platform.encode()
        self.producer = KafkaProducer(
            **settings.client_config(),
            client_id=settings.client_id,
            transactional_id=transactional_id(settings.topic, platform),
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            batch_size=256 * 1024,
            compression_type=settings.compression,
            max_request_size=RECORD_MAX_BYTES,
        )
        try:
            self.producer.init_transactions()  # fences the platform's earlier producers: see the module doc
            self.partition = self._partition()
            self.published_seq = self._resume(reader)
            self.position_saved_at = time.monotonic()
        except BaseException:
            self.close()
            raise

    def _partition(self) -> int:
        partitions = sorted(self.producer.partitions_for(self.settings.topic))
        assert partitions == list(range(len(partitions))), f"partitions {partitions}"
        return partition_of(self.platform, len(partitions))

    def _resume(self, reader: TopicReader) -> int:
        """The seq of the platform's last committed record on the topic (0: none)."""
        topic = self.settings.topic
        position = load_position(self.store, topic, self.platform)
        if position is not None and position.partition != self.partition:
            raise PublishError(
                f"{self.platform}: its documents are in {topic}/{position.partition}, but the topic's partition "
                f"count changed and its key now goes to partition {self.partition}; its order would break. "
                "Publish to a new topic (or move the records) and start again.")
        found, end = reader.last_record(self.partition, self.platform,
                                        None if position is None else position.offset)
        if found is None:
            # None since the position (or the records are gone with the topic's
            # retention): the seq stands, and the next records come after `end`.
            seq = 0 if position is None else position.seq
            save_position(self.store, topic, self.platform, Position(self.partition, end, seq))
            log.info("%s: resumes after seq %d on %s/%d", self.platform, seq, topic, self.partition)
            return seq
        ours = read_documents(self.store, self.platform, found.seq - 1, 1)
        if not ours or ours[0].seq != found.seq or ours[0].body != found.value:
            raise PublishError(
                f"{self.platform}: {topic}/{self.partition} offset {found.offset} holds seq {found.seq}, "
                + ("which this ledger does not have" if not ours or ours[0].seq != found.seq
                   else "but its bytes differ from this ledger's document")
                + ": the topic belongs to another ledger (or this one was restored from an older backup)")
        if position is not None and found.seq < position.seq:  # our records are in seq order
            raise PublishError(f"{self.platform}: {topic}/{self.partition} offset {found.offset} holds seq "
                               f"{found.seq}, after seq {position.seq} at offset {position.offset}: "
                               "another producer writes this platform's key")
        # The platform's next records come after the partition's end as searched
        # (earlier producers are fenced): the next search starts there.
        save_position(self.store, topic, self.platform, Position(self.partition, end, found.seq))
        log.info("%s: resumes after seq %d (offset %d of %s/%d)", self.platform, found.seq, found.offset,
                 topic, self.partition)
        return found.seq

    def publish_next(self) -> int:
        """Publish the next page of documents in one transaction; how many (0: at the head)."""
        page = read_documents(self.store, self.platform, self.published_seq, self.settings.transaction_documents_max)
        if not page:
            return 0
        assert page[0].seq == self.published_seq + 1 and page[-1].seq == self.published_seq + len(page)
        topic, producer = self.settings.topic, self.producer
        producer.begin_transaction()
        futures = [producer.send(topic, key=self.key, value=d.body, partition=self.partition, headers=headers_of(d))
                   for d in page]
        producer.commit_transaction()  # flushes; raises unless every record is in the committed transaction
        last = futures[-1].get(timeout=0)
        assert last.partition == self.partition
        self.published_seq = page[-1].seq
        save_position(self.store, topic, self.platform, Position(self.partition, last.offset, self.published_seq))
        self.position_saved_at = time.monotonic()
        return len(page)

    def refresh_position(self, reader: TopicReader) -> None:
        """An idle platform's position moves to the partition's end, so that a
        restart never reads what other platforms wrote while it was idle."""
        end = reader.end_offset(self.partition)
        save_position(self.store, self.settings.topic, self.platform, Position(self.partition, end, self.published_seq))
        self.position_saved_at = time.monotonic()

    def close(self) -> None:
        try:
            self.producer.close(timeout=5)
        except KafkaError as e:  # closing a producer in a failed state: nothing to save
            log.debug("%s: closing its producer: %s", self.platform, e)


# -- the publisher -------------------------------------------------------------------


@dataclass
class PublishSummary:
    """What a publisher did (`publish --until-caught-up` prints it)."""

    published: dict[str, int] = field(default_factory=dict)  # platform -> documents
    transactions: int = 0
    failed_transactions: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)  # platform -> its last seq on the topic

    def as_json(self) -> dict[str, Any]:
        return {"published": sum(self.published.values()), "transactions": self.transactions,
                "failed_transactions": self.failed_transactions,
                "platforms": {p: {"published": self.published.get(p, 0), "last_seq": s}
                              for p, s in sorted(self.last_seq.items())}}


class Publisher:
    """Publishes the platforms' documents (see the module doc).

    `run(stop)` blocks: following, until `stop` is set (a signal handler sets
    it; the transaction in hand commits first); with `follow=False`, until
    every platform is published to its head."""

    def __init__(self, store: Store, settings: PublishSettings, db_url: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.settings = store, settings
        self.summary = PublishSummary()
        self._db_url = db_url
        self._clock = clock
        self._open: OrderedDict[str, PlatformPublisher] = OrderedDict()  # least recently used first
        self._failures: dict[str, int] = {}  # platform -> failed transactions in a row
        self._retry_at: dict[str, float] = {}
        self._platforms: list[str] = []
        self._listed_at = -PLATFORMS_POLL_SECONDS
        self.reader: TopicReader | None = None  # the last run's (its `records_read` stays readable)
        create_positions_table(store)

    def run(self, stop: threading.Event | None = None) -> PublishSummary:
        stop = stop or threading.Event()
        # Publishers of the topic on one PostgreSQL split its platforms; None on SQLite (or without a URL).
        claims = (open_claims(self._db_url, application_name=claims_name(self.settings.topic),
                              claimed=metrics.PUBLISH_PLATFORMS_CLAIMED.set) if self._db_url else None)
        reader = self.reader = TopicReader(self.settings)
        try:
            while not stop.is_set():
                platforms = self._owned(claims)
                published = sum(self._step(reader, p) for p in platforms if not stop.is_set())
                if published:
                    continue
                if not self.settings.follow and not self._retry_at:
                    break
                stop.wait(self.settings.follow_poll_seconds)
        finally:
            for platform in list(self._open):
                self._close(platform)
            reader.close()
            if claims is not None:
                claims.close()
        return self.summary

    def _owned(self, claims: PlatformClaims | None) -> list[str]:
        """The platforms to publish now (claims rebalance at their own pace)."""
        now = self._clock()
        if now - self._listed_at >= PLATFORMS_POLL_SECONDS:
            self._listed_at = now
            self._platforms = self._wanted(self.store.platforms())
            self._gauges()
        if claims is None:
            return self._platforms
        owned, released = claims.update(lambda: self._platforms)
        for platform in released:
            self._close(platform)
            self.summary.last_seq.pop(platform, None)  # its new owner reports it
            try:
                metrics.PUBLISH_LAG.remove(platform)
            except KeyError:
                pass
        return owned

    def _wanted(self, platforms: Sequence[str]) -> list[str]:
        if not self.settings.platforms:
            return list(platforms)
        have = set(platforms)
        return [p for p in self.settings.platforms if p in have]

    def _step(self, reader: TopicReader, platform: str) -> int:
        """One transaction of the platform's next documents; how many were published."""
        if self._retry_at.get(platform, 0.0) > self._clock():
            return 0
        try:
            publisher = self._publisher(reader, platform)
            n = publisher.publish_next()
            if not n and time.monotonic() - publisher.position_saved_at >= POSITION_REFRESH_SECONDS:
                publisher.refresh_position(reader)
        except MessageSizeTooLargeError as e:
            raise PublishError(f"{platform}: a document is larger than {self.settings.topic} accepts: {e}") from e
        except KafkaError as e:
            self._failed(platform, e)
            return 0
        self._failures.pop(platform, None)
        self._retry_at.pop(platform, None)
        self.summary.last_seq[platform] = publisher.published_seq
        if n:
            self.summary.transactions += 1
            self.summary.published[platform] = self.summary.published.get(platform, 0) + n
            metrics.PUBLISH_TRANSACTIONS.labels("committed").inc()
            metrics.PUBLISH_DOCUMENTS.labels(platform).inc(n)
        return n

    def _publisher(self, reader: TopicReader, platform: str) -> PlatformPublisher:
        publisher = self._open.get(platform)
        if publisher is not None:
            self._open.move_to_end(platform)
            return publisher
        while len(self._open) >= PRODUCERS_MAX:
            self._close(next(iter(self._open)))
        publisher = PlatformPublisher(self.store, self.settings, reader, platform)
        self._open[platform] = publisher
        return publisher

    def _failed(self, platform: str, error: KafkaError) -> None:
        """A failed transaction: drop the producer (its successor fences it and
        resumes from the topic) and retry the platform after a backoff."""
        self._close(platform)
        failures = self._failures[platform] = self._failures.get(platform, 0) + 1
        delay = min(RETRY_BACKOFF_SECONDS * 2 ** min(failures - 1, 16), RETRY_BACKOFF_MAX_SECONDS)
        self._retry_at[platform] = self._clock() + delay
        self.summary.failed_transactions += 1
        metrics.PUBLISH_TRANSACTIONS.labels("failed").inc()
        why = "another publisher took it (fenced)" if isinstance(error, ProducerFencedError) else str(error)
        log.warning("%s: transaction failed (%s); retrying in %.1f s", platform, why, delay)
        if not self.settings.follow and failures >= 8:
            raise PublishError(f"{platform}: {failures} transactions in a row failed, the last: {error}")

    def _close(self, platform: str) -> None:
        publisher = self._open.pop(platform, None)
        if publisher is not None:
            publisher.close()

    def _gauges(self) -> None:
        for platform, seq in self.summary.last_seq.items():
            metrics.PUBLISH_LAG.labels(platform).set(max(self.store.head(platform) - seq, 0))


__all__ = ["PublishError", "PublishSettings", "PublishSummary", "Publisher", "partition_of", "transactional_id"]
