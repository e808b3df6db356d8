"""The event store: eventsourcing's recorders, on SQLite or PostgreSQL.

Each platform's log is one eventsourcing stream: `originator_id` is the
platform id, `originator_version` is `seq` (1, 2, 3 …), `topic` is the event
type and `state` is the canonical event bytes (EVENTS.md §5) as accepted.
The stream's primary key (originator_id, originator_version) is what makes a
gap or a second event at the same `seq` impossible, whatever the writers do.

Beside the log, in the same database and in the *same transaction* as the
events they describe (`append`), the store keeps:

* `peerledger_event_ids`: one id record per accepted event (platform, id) ->
  seq, leaf hash and effect hash.  Its primary key makes a second acceptance
  of an id impossible even for two processes racing;
* `peerledger_rejects`: every rejected event with its code, message, the raw
  line (bounded) and where it came from;
* `peerledger_merkle_nodes`: the hash of every perfect aligned subtree of
  2^MERKLE_STORED_LEVEL_MIN leaves or more of the platform's RFC 9162 tree
  that the batch completed (`ledger.audit.tree`; level 0 is `leaf_hash`
  above, the levels between are folded from it when needed);
* `peerledger_kafka_offsets`, for a batch consumed from Kafka: how far the
  batch took its consumer group through each partition (`OffsetAdvance`),
  so that the ledger and its position in the topic can never disagree;
* the platform's state after the batch (`ledger.storage.state`): what the
  next decision needs, and the read models.

The recorders are eventsourcing's own, subclassed only to create the
ledger's tables: on SQLite the application recorder (one writer at a time
holds the file anyway); on PostgreSQL the *aggregate* recorder, which
inserts a stream's events without the application recorder's
`LOCK TABLE … IN EXCLUSIVE MODE`: that lock orders notification ids across
all streams, which nothing here reads (a platform's order is its `seq`),
and it made every append of every platform of a database wait in one queue
(docs/scaling.md, `bench/pg_append_bench.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Sequence

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
    Tracking,
)
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteDatastore,
    SQLiteTrackingRecorder,
)

from ledger.storage import state as state_tables
from ledger.storage.dialect import DEFAULT_DB_URL as DEFAULT_DB_URL
from ledger.storage.dialect import POSTGRES, SQLITE, DbUrl, Dialect
from projections.merkle import (
    leaf_hash as leaf_hash,  # re-exported: the write side hashes here
)

log = logging.getLogger("peerledger.store")

EVENTS_TABLE = "peerledger_events"
# A rejected line is kept whole up to this size; beyond it, the head of the
# line is kept and `raw_truncated` says so.  Lines over 1 MiB are rejected
# unparsed, and keeping a megabyte per reject would let a hostile sender fill
# the disk 16 times faster than with this bound.
REJECT_RAW_MAX_BYTES = 64 * 1024
# Rows fetched per round trip when replaying a log.
REPLAY_CHUNK_EVENTS = 20_000
# Ids looked up at once by `Store.known_ids`: one ingest batch (SQLite allows
# 32 766 bound parameters per statement).
KNOWN_IDS_MAX = 1000
# Which parts of the schema a database has, and at which version (see
# Store.ensure_schema).  Bump a part's version when its DDL changes.
SCHEMA_TABLE = "peerledger_schema"
LOG_SCHEMA_VERSION = 1
KAFKA_OFFSETS_SCHEMA_VERSION = 1
# The state tables (`ledger.storage.state`).  Version 1 was the projector's
# read models alone (balances, statements, values, vectors, digests); a
# database at version 1 is upgraded by building its state from its log once
# (`ledger.storage.upgrade`).  Version 2 kept a payout's id alone and not
# what each event booked; version 3 keeps the payout's prosumer, amount,
# currency and return (EVENTS.md §8) and each event's bookings (§9), so a
# version-2 database is upgraded the same way.
STATE_SCHEMA_VERSION = 3
# How long a writer whose connection broke during a commit keeps asking the
# database whether the commit happened, and how long it pauses in between.
COMMIT_CHECK_S = 30.0
COMMIT_CHECK_PAUSE_S = 0.5
# WAL pages between SQLite's automatic checkpoints (its default is 1000, 4 MB):
# a batch writes a few MB, and a checkpoint copies its pages into the main
# file at random places; 40 MB per checkpoint amortises that (measured on a
# 1 000 000-event ledger: 15 % less time per event).
SQLITE_CHECKPOINT_PAGES = 10_000
# SQLite's page cache of a writing connection (its default is 2 MB): a
# batch inserts into a dozen B-trees at places spread over the file, and with
# 2 MB each insert of a 1 000 000-event ledger reads its pages back from the
# OS (measured: a third of the SQL time).  Beyond 16 MB it buys nothing a
# ledger of 10^6 events can measure (the OS's page cache holds the file; 64 MB
# was as fast), and a pipelined writer has two connections that each hold one.
SQLITE_CACHE_KIB = 16 * 1024
# A writer waits this long for SQLite's write lock before it says so in the
# log and waits again: writers never give up on each other.
SQLITE_BUSY_WAIT_S = 30


class AppendConflict(Exception):
    """Another writer appended to the same platform first; nothing was written."""


class OutcomeUnknown(Exception):
    """The connection broke during a commit and the database could not be
    asked whether it happened.  Nothing may be reported for the batch."""


class OffsetsFenced(Exception):
    """Progress stored for a partition is already past the batch's first
    message: another consumer (or an earlier life of this one) handled it.
    The batch is stale; nothing of it was written."""


@dataclass(frozen=True, slots=True)
class OffsetAdvance:
    """How far one batch takes a consumer group through one Kafka partition.

    Stored in the batch's transaction: a batch is appended together with the
    position after it, or neither is.  `first_offset` is the offset of the
    batch's first message in the partition: the stored position must not be
    past it (else `OffsetsFenced`); it may be short of it, because offsets
    have holes (transaction markers, compaction).
    """

    consumer_group: str
    topic: str
    partition: int
    first_offset: int
    next_offset: int  # after the batch's last message in the partition

    def __post_init__(self) -> None:
        assert 0 <= self.first_offset < self.next_offset, self

    @property
    def lock_name(self) -> str:
        """The advisory lock that serialises the partition's writers (PostgreSQL)."""
        return f"peerledger:kafka:{self.consumer_group}/{self.topic}/{self.partition}"


class LogEntry(NamedTuple):
    """One stored event as readers see it (named as eventsourcing's StoredEvent)."""

    originator_version: int  # the event's seq
    topic: str  # its type
    state: bytes  # its canonical bytes


class LogGap(Exception):
    """A seq is missing from a stored log: only tampering with the database makes one."""

    def __init__(self, platform: str, seq: int) -> None:
        super().__init__(f"{platform}: seq {seq} is missing from the stored log")
        self.seq = seq


# One accepted event's row of the log: (platform, seq, type, canonical bytes),
# eventsourcing's stored event (originator_id, originator_version, topic, state).
EventRow = tuple[str, int, str, bytes]
# Its id record: (platform, event id, seq, leaf hash, effect hash, accepted at:
# ledger time, UTC, RFC 3339 with milliseconds).
IdRow = tuple[str, str, int, bytes, bytes, str]


@dataclass(frozen=True, slots=True)
class RejectRecord:
    platform: str | None
    event_id: str | None
    code: str
    message: str
    raw: bytes
    source: str
    received_at: str

    def row(self) -> tuple[Any, ...]:
        truncated = len(self.raw) > REJECT_RAW_MAX_BYTES
        return (
            self.platform,
            self.event_id,
            self.code,
            self.message,
            self.raw[:REJECT_RAW_MAX_BYTES],
            truncated,
            self.source,
            self.received_at,
        )


def ledger_ddl(d: Dialect) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_event_ids ("
        "platform TEXT NOT NULL, event_id TEXT NOT NULL, seq BIGINT NOT NULL, "
        f"leaf_hash {d.blob} NOT NULL, effect_hash {d.blob} NOT NULL, "
        "accepted_at TEXT NOT NULL, PRIMARY KEY (platform, event_id))" + d.clustered,
        "CREATE UNIQUE INDEX IF NOT EXISTS peerledger_event_ids_seq "
        "ON peerledger_event_ids (platform, seq)",
        "CREATE TABLE IF NOT EXISTS peerledger_rejects ("
        f"reject_id {d.serial_pk}, platform TEXT, event_id TEXT, "
        f"code TEXT NOT NULL, message TEXT NOT NULL, raw {d.blob} NOT NULL, "
        "raw_truncated BOOLEAN NOT NULL, source TEXT NOT NULL, "
        "received_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS peerledger_rejects_platform "
        "ON peerledger_rejects (platform, reject_id)",
        "CREATE TABLE IF NOT EXISTS peerledger_merkle_nodes ("
        f"platform TEXT NOT NULL, level INTEGER NOT NULL, idx BIGINT NOT NULL, hash {d.blob} NOT NULL, "
        "PRIMARY KEY (platform, level, idx))",
    ]


def kafka_offsets_ddl() -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_kafka_offsets ("
        "consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL, "
        "next_offset BIGINT NOT NULL, updated_at TEXT NOT NULL, "
        "PRIMARY KEY (consumer_group, topic, partition_id))",
    ]


SELECT_KAFKA_OFFSET = (
    "SELECT next_offset FROM peerledger_kafka_offsets "
    "WHERE consumer_group = ? AND topic = ? AND partition_id = ?"
)
UPSERT_KAFKA_OFFSET = (
    "INSERT INTO peerledger_kafka_offsets (consumer_group, topic, partition_id, next_offset, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (consumer_group, topic, partition_id) "
    "DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at"
)

INSERT_ID = (
    "INSERT INTO peerledger_event_ids "
    "(platform, event_id, seq, leaf_hash, effect_hash, accepted_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# One row per writing Store (process), naming its last committed batch: after
# a connection broke during a commit, the writer asks it whether the batch
# made it (see Store.append).
UPSERT_WRITE = ("INSERT INTO peerledger_writes (writer, token) VALUES (?, ?) "
                "ON CONFLICT (writer) DO UPDATE SET token = excluded.token")
INSERT_MERKLE_NODE = "INSERT INTO peerledger_merkle_nodes (platform, level, idx, hash) VALUES (?, ?, ?, ?)"
# The tree's nodes stored as rows: its perfect aligned subtrees of 2^8 = 256
# leaves and more, about one row per 128 events (all of them would be one per
# event, half of them below 4 leaves).  A smaller one is folded from its at
# most 255 leaf hashes, read in one range of the id records, when a root or a
# proof needs it (`ledger.audit.tree.StoredTree`): a root or a proof reads at
# most a few such ranges.  What no stored node covers yet (the log's last
# partial block) is in the head's tree edge, which verify compares too.
MERKLE_STORED_LEVEL_MIN = 8
INSERT_REJECT = (
    "INSERT INTO peerledger_rejects (platform, event_id, code, message, raw, "
    "raw_truncated, source, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class AppendBatch:
    """Everything one decided batch writes, in one transaction: the accepted
    events (eventsourcing's stored events), their id records, the rejects,
    the Merkle nodes the batch completed, each platform's state changes and,
    for a Kafka batch, each partition's offset after it (stored at ledger
    time `offsets_at`)."""

    events: list[EventRow] = field(default_factory=list)
    id_records: list[IdRow] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)
    merkle_nodes: list[tuple[str, int, int, bytes]] = field(default_factory=list)
    state: state_tables.StateRows | None = None
    offsets: Sequence[OffsetAdvance] = ()
    offsets_at: str = ""

    def __post_init__(self) -> None:
        assert len(self.events) == len(self.id_records)
        assert not self.offsets or self.offsets_at, "offsets are stored with the ledger time"


def _write_batch(c: Any, d: Dialect, batch: AppendBatch, insert_events: Any) -> None:
    """All of a batch's rows with cursor `c`, inside its transaction."""
    if batch.offsets:
        # Checked before the batch was decided, under the partitions' locks;
        # checked again here because on SQLite nothing but this transaction
        # serialises two consumers of one partition (a stale batch must not
        # commit whatever happened in between).
        _check_offsets(c, d, batch.offsets)
    if batch.events:
        insert_events(c, batch.events)
        c.executemany(d.sql(INSERT_ID), batch.id_records)
    if batch.rejects:
        c.executemany(d.sql(INSERT_REJECT), [r.row() for r in batch.rejects])
    if batch.merkle_nodes:
        c.executemany(d.sql(INSERT_MERKLE_NODE), batch.merkle_nodes)
    if batch.state is not None:
        state_tables.write_rows(c, d, batch.state)
    if batch.offsets:
        c.executemany(d.sql(UPSERT_KAFKA_OFFSET), [
            (a.consumer_group, a.topic, a.partition, a.next_offset, batch.offsets_at) for a in batch.offsets])


def _check_offsets(c: Any, d: Dialect, offsets: Sequence[OffsetAdvance]) -> None:
    """Raise OffsetsFenced if a partition is stored past its batch's first message."""
    for a in offsets:
        c.execute(d.sql(SELECT_KAFKA_OFFSET), (a.consumer_group, a.topic, a.partition))
        row = c.fetchone()  # sqlite3.Row or psycopg's dict row: both are read by column name
        if row is not None and int(row["next_offset"]) > a.first_offset:
            raise OffsetsFenced(
                f"{a.topic}/{a.partition}: group {a.consumer_group!r} is stored at offset "
                f"{int(row['next_offset'])}, past this batch's first message at {a.first_offset}"
            )


class SQLiteLedgerRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder plus the ledger's tables."""

    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + ledger_ddl(SQLITE)

    def insert_event_rows(self, c: Any, rows: Sequence[EventRow]) -> None:
        # One executemany of the rows as they are, instead of the library's
        # row-by-row loop over StoredEvents: the ledger never needs the
        # notification ids back, and this is the hot path.
        c.executemany(self.insert_events_statement, rows)


def _postgres_datastore_class() -> type:
    from eventsourcing.postgres import PostgresDatastore

    class LedgerPostgresDatastore(PostgresDatastore):
        """eventsourcing's PostgreSQL datastore whose connections run with
        JIT compilation off.  The ledger's queries are key lookups and short
        walks; the planner's estimate of a walk (`SqlState.works_below`)
        can cross `jit_above_cost`, and compiling then costs 10-15 ms for a
        query that runs in under one."""

        def after_connect_func(self) -> Any:
            library = super().after_connect_func()

            def after_connect(conn: Any) -> None:
                library(conn)
                conn.cursor().execute("SET jit = off")

            return after_connect

    return LedgerPostgresDatastore


def _postgres_recorder_class() -> type:
    from eventsourcing.postgres import PostgresAggregateRecorder
    from psycopg.sql import SQL

    class PostgresLedgerRecorder(PostgresAggregateRecorder):
        """eventsourcing's PostgreSQL aggregate recorder plus the ledger's
        tables: streams without a global notification order (see the
        module doc)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sql_create_statements.extend(SQL(s) for s in ledger_ddl(POSTGRES))  # type: ignore[arg-type]

        def insert_event_rows(self, c: Any, rows: Sequence[EventRow]) -> None:
            # The library's one INSERT … FROM unnest(stored events).
            self._insert_stored_events(c, [StoredEvent(*row) for row in rows])

    return PostgresLedgerRecorder


def _begin_immediate(raw: sqlite3.Connection, path: str) -> None:
    """BEGIN IMMEDIATE, waiting for SQLite's write lock as long as it takes
    (each attempt waits the connection's busy timeout)."""
    waited_s = 0
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            waited_s += SQLITE_BUSY_WAIT_S
            log.warning("%s: waited %d s for the write lock; another writer holds it, waiting on", path, waited_s)


class Store:
    """The ledger's database: log, id records, rejects, state, tracking."""

    def __init__(self, url: str = DEFAULT_DB_URL, *, durable: bool = True) -> None:
        self.url = url
        # A scratch database (a replay's) need not survive a crash: its
        # writes skip the fsync.
        self.durable = durable
        # Names this Store's batches in `peerledger_writes` (see append).
        self.writer_id = uuid.uuid4().hex
        self._wrote = False
        # Schema parts known to be at their version: a part never goes back,
        # so the readers that ensure theirs before each use ask the database once.
        self._parts_ready: set[tuple[str, int]] = set()
        parsed = DbUrl.parse(url)
        self.dialect = parsed.dialect
        self._pg_lock_conn: Any = None
        self._pg = parsed.pg
        self._tuple_rows: Any = None  # psycopg's tuple_row on PostgreSQL
        self._sqlite_path = ""
        if parsed.dialect is SQLITE:
            self.datastore: Any = SQLiteDatastore(
                db_name=parsed.sqlite_path,
                originator_id_type="text",
                lock_timeout=SQLITE_BUSY_WAIT_S,
            )
            self._sqlite_path = parsed.sqlite_path
            self.recorder: Any = SQLiteLedgerRecorder(self.datastore, events_table_name=EVENTS_TABLE)
            self.tracking: Any = SQLiteTrackingRecorder(self.datastore)
        else:
            from eventsourcing.postgres import PostgresTrackingRecorder
            from psycopg.rows import tuple_row

            self._tuple_rows = tuple_row

            assert parsed.pg is not None
            # pre_ping: a pooled connection the network broke while it idled
            # is replaced before use, not handed to the next batch.
            self.datastore = _postgres_datastore_class()(
                **parsed.pg, originator_id_type="text", pool_size=2, max_overflow=2, pre_ping=True
            )
            self.recorder = _postgres_recorder_class()(self.datastore, events_table_name=EVENTS_TABLE)
            self.tracking = PostgresTrackingRecorder(self.datastore)
        # Under the lock from the first query on: the first connection to a
        # new SQLite file switches it to WAL, which two processes must not
        # race to do.
        with self.schema_lock():
            if not self._schema_part_ready("log", LOG_SCHEMA_VERSION):
                self.recorder.create_table()
                self.tracking.create_table()
                self._record_schema_part("log", LOG_SCHEMA_VERSION)
        if self.dialect is POSTGRES:
            self.datastore.register_type_adapters()  # what create_table would have done
        self.state = state_tables.SqlState(self)
        # True for a database written before the state lived in tables: its
        # state must be built from its log once (`ledger.storage.upgrade`)
        # before anything writes to it.
        self.upgrade_pending = self._ensure_state_schema()

    # -- the schema ----------------------------------------------------------

    def ensure_schema(self, part: str, version: int, statements: Sequence[str]) -> None:
        """Run one part's CREATE … IF NOT EXISTS statements once per database
        and version, under the schema lock.

        Why not simply run them at every open: on PostgreSQL, CREATE INDEX IF
        NOT EXISTS takes a SHARE lock on its table even when the index
        exists, and a process opening the store while another appends (which
        holds eventsourcing's table lock and then inserts into the id table)
        could deadlock with it.  The parts done are recorded in
        `peerledger_schema`; bump a part's version when its statements change.
        """
        if (part, version) in self._parts_ready:
            return
        if not self._schema_part_ready(part, version):
            with self.schema_lock():
                if not self._schema_part_ready(part, version):
                    with self.transaction(commit=True) as c:
                        for statement in statements:
                            c.execute(statement)
                    self._record_schema_part(part, version)
        self._parts_ready.add((part, version))

    def _ensure_state_schema(self) -> bool:
        """Create the state tables; True if the database has events whose
        state is not in them yet (an upgrade is pending)."""
        if self._schema_part_ready("state", STATE_SCHEMA_VERSION):
            return False
        with self.schema_lock():
            if self._schema_part_ready("state", STATE_SCHEMA_VERSION):
                return False
            with self.transaction(commit=True) as c:
                # Tables whose shape changed since an older version: their
                # rows are rebuilt from the log by the upgrade anyway.
                for table in state_tables.RESHAPED_TABLES:
                    c.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in state_tables.state_ddl(self.dialect):
                    c.execute(statement)
            if self.query(f"SELECT 1 FROM {EVENTS_TABLE} LIMIT 1"):
                return True
            self._record_schema_part("state", STATE_SCHEMA_VERSION)
            return False

    def state_built(self) -> bool:
        """The state tables are at `STATE_SCHEMA_VERSION` (read now, not at open)."""
        return self._schema_part_ready("state", STATE_SCHEMA_VERSION)

    def record_state_built(self) -> None:
        """The upgrade built every platform's state from its log."""
        self._record_schema_part("state", STATE_SCHEMA_VERSION)
        self.upgrade_pending = False

    def _schema_part_ready(self, part: str, version: int) -> bool:
        exists = (f"SELECT to_regclass('{SCHEMA_TABLE}') IS NOT NULL" if self.dialect is POSTGRES else
                  f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{SCHEMA_TABLE}'")
        if not self.query(exists)[0][0]:
            return False
        rows = self.query(f"SELECT version FROM {SCHEMA_TABLE} WHERE part = ?", (part,))
        return bool(rows) and int(rows[0][0]) >= version

    def _record_schema_part(self, part: str, version: int) -> None:
        with self.transaction(commit=True) as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (part TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            c.execute(self.dialect.sql(
                f"INSERT INTO {SCHEMA_TABLE} (part, version) VALUES (?, ?) "
                "ON CONFLICT (part) DO UPDATE SET version = excluded.version"), (part, version))

    def close(self) -> None:
        if self._wrote:
            # This Store's row in peerledger_writes is needed only while it may
            # still ask about its last batch: gone with it, the table holds a
            # row per running (or crashed) writer, not one per process ever run.
            with contextlib.suppress(Exception):
                with self.write_transaction() as c:
                    c.execute(self.dialect.sql("DELETE FROM peerledger_writes WHERE writer = ?"), (self.writer_id,))
        if self._pg_lock_conn is not None:
            self._pg_lock_conn.close()
        self.datastore.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain SQL through the library's transactions ---------------------

    @contextlib.contextmanager
    def transaction(self, *, commit: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as c:
            yield c

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.transaction(commit=False) as c:
            c.execute(self.dialect.sql(statement), params)
            rows = c.fetchall()
        if self.dialect is POSTGRES:
            return [tuple(r.values()) for r in rows]
        return [tuple(r) for r in rows]

    # -- the log -----------------------------------------------------------

    def append(self, batch: AppendBatch) -> None:
        """Write a decided batch in one transaction (see `AppendBatch`).

        Raises AppendConflict when a seq, an id or a state row was taken by
        another writer meanwhile (only a writer that skipped the platform's
        lock can do that), OffsetsFenced when a partition's stored offset is
        past the batch; the whole transaction is then rolled back.
        """
        if not (batch.events or batch.rejects or batch.state or batch.offsets):
            return  # all duplicates: nothing to write, no commit to wait for
        token = uuid.uuid4().hex
        try:
            with self.write_transaction() as c:
                _write_batch(c, self.dialect, batch, self.recorder.insert_event_rows)
                c.execute(self.dialect.sql(UPSERT_WRITE), (self.writer_id, token))
                self._wrote = True
        except (IntegrityError, sqlite3.IntegrityError) as e:
            raise AppendConflict(str(e)) from e
        except (OperationalError, InterfaceError) as e:
            # The connection broke: before the commit (nothing written),
            # or after the server committed but before it said so.  The
            # batch's token, written in its transaction, tells which.
            if self.dialect is not POSTGRES or not self._committed(token):
                raise
            log.warning("the connection broke after the batch committed (%s): its outcomes stand", e)

    def _committed(self, token: str) -> bool:
        """Whether the batch that wrote `token` committed; raises
        OutcomeUnknown if the database cannot be asked within
        COMMIT_CHECK_S (the caller must not report the batch either way)."""
        deadline = time.monotonic() + COMMIT_CHECK_S
        while True:
            try:
                rows = self.query("SELECT token FROM peerledger_writes WHERE writer = ?", (self.writer_id,))
                return bool(rows) and rows[0][0] == token
            except (OperationalError, InterfaceError) as e:
                if time.monotonic() > deadline:
                    raise OutcomeUnknown(f"the connection broke during a commit and the database has not "
                                         f"answered since ({e}): resend the batch, its accepted events come "
                                         "back as duplicates") from e
                time.sleep(COMMIT_CHECK_PAUSE_S)

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[Any]:
        """A transaction that writes.  On SQLite it takes the file's write
        lock at BEGIN (IMMEDIATE): a transaction that read first and then
        wrote could fail on a snapshot another writer made stale, whereas
        waiting for the lock up front always succeeds in the end."""
        if self.dialect is POSTGRES:
            with self.datastore.transaction(commit=True) as c:
                yield c
            return
        with self.datastore.get_connection(commit=True) as conn:
            raw = conn._sqlite_conn  # noqa: SLF001 — the library's connection, in autocommit mode
            raw.execute("PRAGMA synchronous = " + ("FULL" if self.durable else "OFF"))
            raw.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_CHECKPOINT_PAGES}")
            raw.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            _begin_immediate(raw, self._sqlite_path)
            try:
                yield conn.cursor()
            except BaseException:
                raw.rollback()
                raise
            raw.commit()

    def write_state(self, rows: state_tables.StateRows) -> None:
        """Write state rows alone, in one transaction: a replay's
        (`ledger.storage.replay`), whose events are stored already."""
        with self.write_transaction() as c:
            state_tables.write_rows(c, self.dialect, rows)

    # -- Kafka offsets stored with the ledger -------------------------------

    def ensure_kafka_offsets_schema(self) -> None:
        self.ensure_schema("kafka_offsets", KAFKA_OFFSETS_SCHEMA_VERSION, kafka_offsets_ddl())

    def kafka_offsets(self, consumer_group: str, topic: str) -> dict[int, int]:
        """partition -> the offset after the last message the ledger holds the
        outcome of, for this group and topic (absent: none stored)."""
        rows = self.query(
            "SELECT partition_id, next_offset FROM peerledger_kafka_offsets "
            "WHERE consumer_group = ? AND topic = ?",
            (consumer_group, topic),
        )
        return {int(p): int(o) for p, o in rows}

    def check_offsets(self, offsets: Sequence[OffsetAdvance]) -> None:
        """Raise OffsetsFenced if a partition is stored past its batch (read
        under the partitions' locks, before the batch is decided)."""
        if offsets:  # a file or HTTP batch has none: no transaction for nothing
            with self.transaction(commit=False) as c:
                _check_offsets(c, self.dialect, offsets)

    def head(self, platform: str) -> int:
        rows = self.query(
            f"SELECT MAX(originator_version) FROM {EVENTS_TABLE} WHERE originator_id = ?",
            (platform,),
        )
        return int(rows[0][0] or 0)

    def platforms(self) -> list[str]:
        """Every platform with an accepted event (one row each: their heads)."""
        return [r[0] for r in self.query("SELECT platform FROM peerledger_heads ORDER BY platform")]

    def read_log(
        self, platform: str, after_seq: int = 0, upto_seq: int | None = None
    ) -> Iterator[LogEntry]:
        """The platform's accepted events in seq order, fetched in chunks.

        A plain SELECT of the three columns a reader needs, rather than the
        recorder's `select_events`: building a StoredEvent per row (and
        converting its id) was a tenth of the projector's time.
        """
        position = after_seq
        where = "originator_id = ? AND originator_version > ?"
        if upto_seq is not None:
            where += " AND originator_version <= ?"
        statement = self.dialect.sql(
            f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} WHERE {where} "
            "ORDER BY originator_version LIMIT ?"
        )
        while upto_seq is None or position < upto_seq:
            params = (platform, position, upto_seq, REPLAY_CHUNK_EVENTS) if upto_seq is not None else (
                platform, position, REPLAY_CHUNK_EVENTS)
            with self.transaction(commit=False) as c:
                if self._tuple_rows is not None:
                    c.row_factory = self._tuple_rows  # not the library's dict per row
                c.execute(statement, params)
                rows = c.fetchall()
            if not rows:
                return
            for row in rows:
                entry = LogEntry(*row)
                if type(entry.state) is not bytes:  # a row someone rewrote as TEXT: verify must see it
                    entry = entry._replace(state=str(entry.state).encode("utf-8", "surrogateescape"))
                if entry.originator_version != position + 1:
                    raise LogGap(platform, position + 1)
                position = entry.originator_version
                yield entry

    def known_ids(self, platform: str, event_ids: Sequence[str]) -> dict[str, bytes]:
        """event id -> leaf hash of those of `event_ids` the platform accepted.

        One indexed lookup per batch (the id records' primary key is
        (platform, event_id)), so a writer needs no in-memory index of every
        id its platform ever accepted.
        """
        assert len(event_ids) <= KNOWN_IDS_MAX, "look ids up one batch at a time"
        if not event_ids:
            return {}
        if self.dialect is POSTGRES:
            sql, params = ("SELECT event_id, leaf_hash FROM peerledger_event_ids "
                           "WHERE platform = %s AND event_id = ANY(%s)"), (platform, list(event_ids))
            with self.transaction(commit=False) as c:
                c.execute(sql, params)
                return {r["event_id"]: bytes(r["leaf_hash"]) for r in c.fetchall()}
        marks = ", ".join("?" * len(event_ids))
        rows = self.query(f"SELECT event_id, leaf_hash FROM peerledger_event_ids "
                          f"WHERE platform = ? AND event_id IN ({marks})", (platform, *event_ids))
        return {event_id: bytes(leaf) for event_id, leaf in rows}

    def id_records(self, platform: str, after_seq: int = 0) -> Iterator[tuple[str, int, bytes, bytes, str]]:
        """(event_id, seq, leaf_hash, effect_hash, accepted_at) in seq order."""
        position = after_seq
        while True:
            rows = self.query(
                "SELECT event_id, seq, leaf_hash, effect_hash, accepted_at "
                "FROM peerledger_event_ids WHERE platform = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (platform, position, REPLAY_CHUNK_EVENTS),
            )
            if not rows:
                return
            for event_id, seq, leaf, effect, accepted_at in rows:
                position = seq
                yield event_id, seq, bytes(leaf), bytes(effect), accepted_at

    def rejects(self, platform: str | None, limit: int, after_id: int = 0) -> list[tuple[Any, ...]]:
        where = "WHERE reject_id > ?" + (" AND platform = ?" if platform else "")
        params: tuple[Any, ...] = (after_id, platform) if platform else (after_id,)
        return self.query(
            "SELECT reject_id, platform, event_id, code, message, raw, raw_truncated, "
            f"source, received_at FROM peerledger_rejects {where} ORDER BY reject_id LIMIT ?",
            (*params, limit),
        )

    # -- tracking of read models (eventsourcing's tracking table) ----------

    def tracked_seq(self, name: str) -> int:
        return int(self.tracking.max_tracking_id(name) or 0)

    def insert_tracking(self, c: Any, name: str, seq: int) -> None:
        self.tracking._insert_tracking(c, Tracking(name, seq))  # noqa: SLF001 — the library's in-transaction hook

    # -- serialising writers of one platform --------------------------------

    def _lock_connection(self) -> Any:
        """The connection that holds this Store's advisory locks (locks live
        as long as their session).  One the network broke while it idled is
        replaced: the locks it held died with it, and none is held between
        batches."""
        import psycopg

        conn = self._pg_lock_conn
        if conn is not None and not conn.closed:
            try:
                conn.execute("SELECT 1")
            except psycopg.OperationalError:
                conn.close()
        if conn is None or conn.closed:
            assert self._pg is not None
            conn = self._pg_lock_conn = psycopg.connect(autocommit=True, **self._pg)
        return conn

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Serialise CREATE … IF NOT EXISTS across processes: PostgreSQL's is
        not atomic, and two processes starting at once on a new database
        would otherwise collide on the catalog; on SQLite, eventsourcing's
        tracking-table set-up reads then writes, and two processes creating
        one new file at once would both try to record its migration."""
        if self.dialect is not POSTGRES:
            if self._sqlite_path.startswith(":memory:") or "mode=memory" in self._sqlite_path:
                yield
                return
            import fcntl

            with open(self._sqlite_path + ".lock", "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
                yield
            return
        conn = self._lock_connection()
        conn.execute("SELECT pg_advisory_lock(hashtextextended('peerledger:schema', 7))")
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended('peerledger:schema', 7))")

    @contextlib.contextmanager
    def platform_locks(self, platforms: Sequence[str], also: Sequence[str] = ()) -> Iterator[None]:
        """Hold an exclusive lock per platform while a batch is decided and
        appended, and the locks named in `also` (a Kafka partition's
        `OffsetAdvance.lock_name`), taken in sorted order so two processes
        can never deadlock.

        On PostgreSQL, session advisory locks; on SQLite, `flock` on a file
        per name beside the database (`<db>.locks/`).  Both die with their
        process, so a killed writer never leaves one behind, and both wait
        as long as it takes: writers of one platform queue, they never give
        up on each other.  The platform's state is read under its lock.
        """
        names = sorted({f"peerledger:append:{key}" for key in platforms} | set(also))
        if not names:
            yield
            return
        if self.dialect is not POSTGRES:
            if self._sqlite_path.startswith(":memory:") or "mode=memory" in self._sqlite_path:
                yield  # one connection pool, one process: nothing to serialise against
                return
            directory = self._sqlite_path + ".locks"
            os.makedirs(directory, exist_ok=True)
            with contextlib.ExitStack() as held:
                for name in names:
                    # Names hold any character (a topic, a group): hash them to a file name.
                    lock_file = held.enter_context(open(
                        os.path.join(directory, hashlib.sha256(name.encode()).hexdigest()[:32]), "a"))
                    fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
                yield
            return
        import psycopg

        conn = self._lock_connection()
        for name in names:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7))", (name,))
        try:
            yield
        finally:
            try:
                for name in reversed(names):
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7))", (name,))
            except psycopg.OperationalError:
                # The session died, and its locks with it: nothing to undo,
                # and what went wrong in the block is what the caller must see.
                conn.close()
