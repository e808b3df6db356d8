"""Ingest: every offered event gets exactly one outcome (EVENTS.md §4).

A batch of raw lines (or already-parsed JSON values) goes through:

1. shape: `ledger.contract.schema` parses and validates each one (`invalid`);
2. the platform's writer, under the platform's lock and caught up with the
   log head, decides in input order: `duplicate` or `conflict` by the id
   records (looked up once per batch, plus the ids accepted earlier in the
   batch), then `ledger.contract.rules.check` on the fold's current state, and applies
   each accepted event to the fold at once, so later events in the same
   batch see it;
3. one transaction appends the accepted events, their id records and every
   reject (and, for a Kafka batch, the partitions' offsets after it); only
   after it commits are outcomes returned (that is the acknowledgement).
   The read models follow the log (`ledger.ingest.projector`).

A Kafka consumer (`ledger.kafka.consumer`) adds three things to a batch: rejects it
decided itself (a mis-keyed message), the `OffsetAdvance` of each partition,
checked under the partitions' locks before anything is decided (a stale
batch raises `OffsetsFenced` and changes nothing), and `before_append`,
called with the outcomes once they are decided and before the transaction
(it copies the rejected messages to the dead-letter topic: a batch whose
dead letters are not acknowledged is not appended).

If the transaction fails, nothing of the batch happened: the writers of the
batch's platforms are dropped (their folds and Merkle tree edges moved
ahead of the log) and rebuilt from the log, and the batch is decided again.
A crash at any instant therefore loses no acknowledged event and duplicates
none: an event is either in a committed batch, whose resend is a
`duplicate`, or in none.

Back of the envelope (2 cores, CPython), per event: parse + validate ~8 µs,
rules ~3 µs, fold ~10 µs plus the share vector of a newly sold work (~50 µs,
once per work and graph state) and ~1 µs per recipient for allocation and
bookings, SQLite insert of event, id record and Merkle nodes ~10 µs.
Measured on the bench stream (half the events are sales with ~9 recipients
each; bench/results/ingest.md, whose floor rows time the parse and the
insert alone): 55 to 108 µs per event on the write side, by host and hour
(the shared host runs at half speed at times), so 9 000 to 18 700 events/s
per process; one fsync per batch of 1000 is noise.  The read models are
built by the projector in a second process at a similar rate, so
`peerledger ingest` runs at 6 700 to 14 000 events/s end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple, Sequence

import orjson
from eventsourcing.persistence import StoredEvent

from ledger.contract import rules
from ledger.contract.schema import (
    InvalidEvent,
    ParsedEvent,
    parse_event,
    validate_event_obj,
)
from ledger.ingest.sources import BATCH_MAX_EVENTS, Offered
from ledger.storage.store import (
    AppendConflict,
    IdRecord,
    OffsetAdvance,
    RejectRecord,
    Store,
    leaf_hash,
)
from projections.fold import PlatformFold
from projections.merkle import Frontier

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"

# A conflict means another writer appended first; each retry catches up with
# its events, so more than a few in a row means something is wrong.
APPEND_RETRIES_MAX = 5


@dataclass(slots=True)
class Outcome:
    outcome: str
    event_id: str | None
    platform: str | None
    seq: int | None = None
    code: str | None = None
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.event_id, "outcome": self.outcome}
        if self.seq is not None:
            out["seq"] = self.seq
        if self.code is not None:
            out["code"] = self.code
            out["message"] = self.message
        return out


def ledger_time() -> str:
    """The ledger's clock: when an event was accepted (not the platform's `at`)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PlatformWriter:
    """The write side of one platform: its fold at the log head and the right
    edge of its Merkle tree.  Event ids are looked up in the store, one query
    per batch (`Store.known_ids`), not held in memory: a platform accepts
    millions of them."""

    def __init__(self, platform: str, store: Store) -> None:
        self.fold = PlatformFold(platform)
        # Rebuilt from the leaves while catching up (the log is read for the
        # fold anyway); appends report the tree nodes each batch completes.
        self.tree = Frontier()
        self.catch_up(store)

    def catch_up(self, store: Store) -> int:
        """Apply what other writers appended since this writer last looked."""
        start_seq = self.fold.seq
        if store.head(self.fold.platform) == start_seq:
            return 0
        for stored in store.read_log(self.fold.platform, after_seq=start_seq):
            self.fold.apply(orjson.loads(stored.state), stored.originator_version)
            self.tree.append(leaf_hash(stored.state))  # its nodes were stored by whoever appended it
        return self.fold.seq - start_seq


class Ingestor:
    """Decides and appends batches of offered events; see the module doc."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writers: dict[str, PlatformWriter] = {}

    def writer(self, platform: str) -> PlatformWriter:
        w = self.writers.get(platform)
        if w is None:
            w = self.writers[platform] = PlatformWriter(platform, self.store)
        return w

    def ingest(
        self,
        batch: Sequence[Offered],
        *,
        extra_rejects: Sequence[RejectRecord] = (),
        offsets: Sequence[OffsetAdvance] = (),
        before_append: Callable[[list[Outcome]], None] | None = None,
    ) -> list[Outcome]:
        """Give every offered event its outcome; durable when this returns.

        `extra_rejects` (decided by the caller), `offsets` and
        `before_append` are a Kafka batch's; see the module doc.
        `before_append` runs again if the append conflicts with another
        writer's and the batch is decided again (its outcomes may differ).
        """
        assert len(batch) <= BATCH_MAX_EVENTS, "split input with batches()"
        assert len(extra_rejects) <= BATCH_MAX_EVENTS
        now = ledger_time()
        parsed: list[ParsedEvent | InvalidEvent] = []
        for offered in batch:
            try:
                if isinstance(offered.payload, (bytes, bytearray, memoryview)):
                    parsed.append(parse_event(bytes(offered.payload)))
                else:
                    parsed.append(validate_event_obj(offered.payload))
            except InvalidEvent as e:
                parsed.append(e)
        platforms = sorted({p.platform for p in parsed if isinstance(p, ParsedEvent)})
        for _attempt in range(APPEND_RETRIES_MAX):
            try:
                with self.store.platform_locks(platforms, also=[a.lock_name for a in offsets]):
                    self.store.check_offsets(offsets)
                    outcomes, appending = self._decide(batch, parsed, platforms, now, extra_rejects)
                    if before_append is not None:
                        before_append(outcomes)
                    self.store.append(*appending, offsets=offsets, offsets_at=now)
                    return outcomes
            except AppendConflict:
                for p in platforms:  # their folds ran ahead of the log: rebuild
                    self.writers.pop(p, None)
            except BaseException:
                for p in platforms:
                    self.writers.pop(p, None)
                raise
        raise RuntimeError(f"gave up after {APPEND_RETRIES_MAX} append conflicts")

    def _decide(
        self,
        batch: Sequence[Offered],
        parsed: list[ParsedEvent | InvalidEvent],
        platforms: list[str],
        now: str,
        extra_rejects: Sequence[RejectRecord],
    ) -> tuple[list[Outcome], "_Appending"]:
        """Outcomes in input order, and what to append (`extra_rejects`
        first); the writers' folds and trees are moved to the batch's end
        (dropped if it is not appended)."""
        writers = {p: self.writer(p) for p in platforms}
        for w in writers.values():
            w.catch_up(self.store)
        # event id -> leaf hash of the accepted canonical bytes, per platform:
        # equal hashes are equal JSON values (canonical bytes are a function
        # of the value).  Ids accepted earlier in this batch are added below.
        offered_ids: dict[str, set[str]] = {p: set() for p in platforms}
        for item in parsed:
            if isinstance(item, ParsedEvent):
                offered_ids[item.platform].add(item.event["id"])
        known_ids = {p: self.store.known_ids(p, sorted(ids)) for p, ids in offered_ids.items()}
        events: list[StoredEvent] = []
        id_records: list[IdRecord] = []
        outcomes: list[Outcome] = []
        rejects: list[RejectRecord] = list(extra_rejects)
        merkle_nodes: list[tuple[str, int, int, bytes]] = []
        for offered, item in zip(batch, parsed):
            if isinstance(item, InvalidEvent):
                outcomes.append(Outcome(REJECTED, item.event_id, item.platform, code=rules.INVALID, message=item.message))
                rejects.append(RejectRecord(item.platform, item.event_id, rules.INVALID, item.message,
                                            _raw(offered.payload), offered.source, now))
                continue
            w = writers[item.platform]
            event = item.event
            event_id = event["id"]
            leaf = leaf_hash(item.canonical)
            known = known_ids[item.platform].get(event_id)
            refusal: rules.Refusal | None
            if known == leaf:
                outcomes.append(Outcome(DUPLICATE, event_id, item.platform))
                continue
            if known is not None:
                refusal = rules.Refusal(rules.CONFLICT, f"event id {event_id!r} was accepted before with different content")
            else:
                refusal = rules.check(w.fold, event)
            if refusal is not None:
                outcomes.append(Outcome(REJECTED, event_id, item.platform, code=refusal.code, message=refusal.message))
                rejects.append(RejectRecord(item.platform, event_id, refusal.code, refusal.message,
                                            _raw(offered.payload), offered.source, now))
                continue
            seq = w.fold.seq + 1
            applied = w.fold.apply(event, seq)
            known_ids[item.platform][event_id] = leaf
            merkle_nodes.extend((item.platform, level, idx, h) for level, idx, h in w.tree.append(leaf))
            events.append(StoredEvent(item.platform, seq, event["type"], item.canonical))
            id_records.append(IdRecord(item.platform, event_id, seq, leaf, applied.effect_hash(), now))
            outcomes.append(Outcome(ACCEPTED, event_id, item.platform, seq=seq))
        return outcomes, _Appending(events, id_records, rejects, merkle_nodes)


class _Appending(NamedTuple):
    """A decided batch's rows, in `Store.append`'s argument order."""

    events: list[StoredEvent]
    id_records: list[IdRecord]
    rejects: list[RejectRecord]
    merkle_nodes: list[tuple[str, int, int, bytes]]


def _raw(payload: bytes | object) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    try:
        return orjson.dumps(payload)
    except TypeError:
        return repr(payload).encode("utf-8", "replace")
