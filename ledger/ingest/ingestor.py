"""Ingest: every offered event gets exactly one outcome (EVENTS.md §4).

A batch of raw lines (or already-parsed JSON values) goes through:

1. shape: `ledger.contract.schema` parses and validates each one (`invalid`);
2. under the locks of the batch's platforms (and, for Kafka, partitions),
   each platform's state (`projections.state.PlatformState`) starts at the
   committed head (if another process wrote the platform since, what this
   process cached of it is dropped), and reads every row the batch names
   (`prefetch`: one query per table for what the caches miss);
3. in input order: `duplicate` or `conflict` by the id records (looked up
   once per batch, plus the ids accepted earlier in the batch), then
   `ledger.contract.rules.check` on the state, and each accepted event is
   folded at once (`projections.fold.PlatformFold`), so later events in the
   same batch see it;
4. one transaction (`Store.append`) writes the accepted events, their id
   records, every reject, the Merkle nodes the batch completed, each
   platform's state after the batch (read models included), and for a
   Kafka batch the partitions' offsets after it.  Only after it commits are
   outcomes returned: that is the acknowledgement, and a read that follows
   it sees the batch.

If the transaction fails, nothing of the batch happened: the states roll
back (and forget what they cached of their platforms) and the error
propagates, or on an `AppendConflict` (a writer that skipped the locks)
the batch is decided again.  A crash at any instant therefore loses no
acknowledged event and duplicates none: an event is either in a committed
batch, whose resend is a `duplicate`, or in none.

A Kafka consumer (`ledger.kafka`) adds three things to a batch: rejects it
decided itself (a mis-keyed message), the `OffsetAdvance` of each partition,
checked under the partitions' locks before anything is decided (a stale
batch raises `OffsetsFenced` and changes nothing), and `before_append`,
called with the outcomes once they are decided and before the transaction
(it copies the rejected messages to the dead-letter topic: a batch whose
dead letters are not acknowledged is not appended).

Back of the envelope (one core, CPython), per event: parse + validate
~20 µs; rules and fold ~20 µs plus the share vector and explanation of a work
sold at a new graph state (~50 µs, once per work and graph state) and ~1 µs
per recipient for allocation and bookings; the SQLite rows of the event, its
id record and Merkle nodes ~20 µs; state rows ~10 µs, fewer than one per
event once aggregated per batch (a hot account's balance is written once per
batch, not once per sale).  One fsync per batch of 1000 is noise.  Measured
figures: bench/results/scale.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from ledger.contract import rules
from ledger.contract.schema import (
    InvalidEvent,
    ParsedEvent,
    parse_event,
)
from ledger.ingest.sources import BATCH_MAX_EVENTS, Offered
from ledger.ops.runtime import cache_budget_bytes
from ledger.storage.store import (
    MERKLE_STORED_LEVEL_MIN,
    AppendBatch,
    AppendConflict,
    OffsetAdvance,
    RejectRecord,
    Store,
    leaf_hash,
)
from projections.fold import PlatformFold, keys_of
from ledger.storage.native import engine_choice
from ledger.storage.state import StateRows, rows_of
from projections.merkle import Frontier
from projections.state import Changes, Head, PlatformState, StateCaches

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"

# A conflict means a writer that skipped the platform's lock appended
# first; each retry starts from the committed state again, so more than a
# few in a row means something is wrong.
APPEND_RETRIES_MAX = 5
# How long a pipelined stream holds its platforms' locks before it lets other
# writers in (`Ingestor.ingest_stream`).
LOCK_HOLD_MAX_S = 1.0
# Platforms whose state objects a writer keeps (their rows live in the
# shared, bounded caches; the objects themselves are small).
PLATFORM_STATES_MAX = 10_000


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


class Decider(Protocol):
    """How a writer decides a batch: the reference (`ReferenceDecider`, the
    pure-Python core) or the native engine (`ledger.ingest.native`).  The
    `Ingestor` holds the locks and the transaction around it."""

    def prepare(self, batch: Sequence[Offered]) -> list[str]:
        """Parse and check the batch's shapes; its platforms, sorted."""
        ...

    def decide(self, batch: Sequence[Offered], heads: dict[str, tuple[int, int, bytes] | None], now: str,
               extra_rejects: Sequence[RejectRecord], settle: Callable[[], None] = ...,
               ) -> tuple[list[Outcome], AppendBatch]:
        """Outcomes in input order and what to append (`extra_rejects` first),
        from the committed `heads` read under the platforms' locks (None: the
        platform has no event yet; a platform left out continues from the
        batch handed off before, which a pipelined decider keeps).  `settle`
        waits for the handed-off batch to commit, for a decision that must
        read the database with that batch in it."""
        ...

    def commit(self) -> None:
        """The batch's transaction committed: its rows become cached."""
        ...

    def rollback(self) -> None:
        """It did not: forget the batch and what is cached of its platforms."""
        ...

    def head_seq(self, platform: str) -> int:
        ...

    def cache_stats(self) -> dict[str, tuple[int, int, int, int]]:
        ...

    # Whether it can decide a batch while the one before it is written
    # (`hand_off` then `confirm`): see `Ingestor.ingest_stream`.
    pipelined: bool


class Ingestor:
    """Decides and appends batches of offered events; see the module doc."""

    def __init__(self, store: Store, caches: StateCaches | None = None, engine: str | None = None) -> None:
        if store.upgrade_pending:
            raise RuntimeError(f"{store.url} was written by an older peerledger: run `peerledger upgrade` first")
        self.store = store
        budget = caches.budget_bytes if caches is not None else cache_budget_bytes()
        self.engine = engine or engine_choice()
        if self.engine == "native":
            from ledger.ingest.native import NativeDecider

            self.decider: Decider = NativeDecider(store, budget)
        else:
            self.decider = ReferenceDecider(store, caches if caches is not None else StateCaches(budget))

    def head_seq(self, platform: str) -> int:
        """The seq of `platform`'s last event this process appended or saw."""
        return self.decider.head_seq(platform)

    def cache_stats(self) -> dict[str, tuple[int, int, int, int]]:
        """kind -> (rows, entries, estimated bytes, budget bytes) of the state caches."""
        return self.decider.cache_stats()

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
        decider = self.decider
        for _attempt in range(APPEND_RETRIES_MAX):
            platforms = decider.prepare(batch)
            try:
                with self.store.platform_locks(platforms, also=[a.lock_name for a in offsets]):
                    self.store.check_offsets(offsets)
                    heads: dict[str, tuple[int, int, bytes] | None] = dict.fromkeys(platforms)
                    heads.update(self.store.state.head_rows(platforms))
                    outcomes, appending = decider.decide(batch, heads, now, extra_rejects)
                    if before_append is not None:
                        before_append(outcomes)
                    appending.offsets, appending.offsets_at = offsets, now
                    self.store.append(appending)
            except AppendConflict:
                decider.rollback()
                continue
            except BaseException:
                decider.rollback()
                raise
            decider.commit()
            return outcomes
        raise RuntimeError(f"gave up after {APPEND_RETRIES_MAX} append conflicts: a writer is not taking the "
                           "platform locks")

    def ingest_stream(self, batches: Iterable[Sequence[Offered]]) -> Iterator[list[Outcome]]:
        """`ingest` of each batch, in order, the outcomes of each once durable;
        with the native engine, batch N+1 is parsed and decided while batch
        N's transaction runs (in a thread: the engine and SQLite's C code both
        let go of the GIL), so the two cores work at once.

        Every guarantee of `ingest` holds: a batch's outcomes are yielded only
        after its transaction committed; N+1 is decided on top of N's rows,
        which the engine keeps pending (read before anything else) until N
        commits, so it never reads N's rows from a database that lacks them;
        N+1's transaction starts only after N's committed; if N's fails, N+1
        is dropped with it and the engine forgets both.  The platforms' locks
        are held across consecutive batches of the same platforms for at most
        `LOCK_HOLD_MAX_S` (other writers queue behind them), then released
        and taken again, the heads read again under them.
        """
        if not self.decider.pipelined:
            for batch in batches:
                yield self.ingest(batch)
            return
        decider = self.decider
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="peerledger-append") as pool, \
                contextlib.ExitStack() as held:
            locked: set[str] = set()
            locked_at = 0.0
            flight: tuple[Future[None], list[Outcome], Sequence[Offered]] | None = None
            for batch in batches:
                assert len(batch) <= BATCH_MAX_EVENTS, "split input with batches()"
                now = ledger_time()
                platforms = decider.prepare(batch)
                try:
                    if not locked or not set(platforms) <= locked or time.monotonic() - locked_at > LOCK_HOLD_MAX_S:
                        if flight is not None:
                            yield self._landed(flight, decider)
                            flight = None
                        held.close()
                        held.enter_context(self.store.platform_locks(platforms))
                        locked, locked_at = set(platforms), time.monotonic()
                        heads: dict[str, tuple[int, int, bytes] | None] = dict.fromkeys(platforms)
                        heads.update(self.store.state.head_rows(platforms))
                    else:
                        heads = {}  # every platform continues from the batch in flight
                    landed: list[list[Outcome]] = []

                    def settle() -> None:
                        nonlocal flight
                        if flight is not None:
                            landed.append(self._landed(flight, decider))
                            flight = None

                    outcomes, appending = decider.decide(batch, heads, now, (), settle)
                    yield from landed
                    if flight is not None:
                        yield self._landed(flight, decider)
                        flight = None
                except _Replay as again:
                    held.close()
                    locked = set()
                    for replayed in again.batches:
                        yield self.ingest(replayed)
                    yield self.ingest(batch)
                    continue
                except BaseException:
                    decider.rollback()
                    raise
                decider.hand_off()
                flight = (pool.submit(self.store.append, appending), outcomes, batch)
            if flight is not None:
                try:
                    yield self._landed(flight, decider)
                except _Replay as again:
                    held.close()
                    for replayed in again.batches:
                        yield self.ingest(replayed)

    @staticmethod
    def _landed(flight: tuple[Future[None], list[Outcome], Sequence[Offered]], decider: Any) -> list[Outcome]:
        """The outcomes of the batch in flight, once its transaction committed."""
        future, outcomes, batch = flight
        try:
            future.result()
        except AppendConflict:
            # A writer that skipped the locks: decide the batch again, alone.
            decider.rollback()
            raise _Replay([batch]) from None
        except BaseException:
            decider.rollback()
            raise
        decider.confirm()
        return outcomes


class _Replay(Exception):
    """Batches to ingest again one at a time (their pipelined append conflicted)."""

    def __init__(self, batches: list[Sequence[Offered]]) -> None:
        self.batches = batches


class ReferenceDecider:
    """The pure-Python core decides: `PlatformState`, `rules.check`, `PlatformFold`."""

    pipelined = False

    def __init__(self, store: Store, caches: StateCaches) -> None:
        self.store = store
        self.caches = caches
        self._states: dict[str, PlatformState] = {}
        self._parsed: list[ParsedEvent | InvalidEvent] = []
        self._changed: list[Changes] = []
        self._touched: list[PlatformState] = []

    def state(self, platform: str) -> PlatformState:
        """This process's window on `platform`'s state (see projections.state)."""
        state = self._states.get(platform)
        if state is None:
            if len(self._states) >= PLATFORM_STATES_MAX:
                self._states.clear()  # their rows stay cached; the objects are cheap to make again
            state = self._states[platform] = PlatformState(platform, self.store.state, self.caches)
        return state

    def head_seq(self, platform: str) -> int:
        state = self._states.get(platform)
        return state.head.seq if state is not None else 0

    def cache_stats(self) -> dict[str, tuple[int, int, int, int]]:
        return {kind: (*stats, getattr(self.caches, kind).max_bytes) for kind, stats in self.caches.stats().items()}

    def prepare(self, batch: Sequence[Offered]) -> list[str]:
        parsed: list[ParsedEvent | InvalidEvent] = []
        for offered in batch:
            try:
                parsed.append(parse_event(offered.payload))
            except InvalidEvent as e:  # the only thing parse_event raises, whatever the bytes
                parsed.append(e)
        self._parsed = parsed
        return sorted({p.platform for p in parsed if isinstance(p, ParsedEvent)})

    def commit(self) -> None:
        for changes in self._changed:
            self._states[changes.platform].commit(changes)
        self._changed, self._touched = [], []

    def rollback(self) -> None:
        for state in self._touched:
            state.rollback()
        self._changed, self._touched = [], []

    def decide(self, batch: Sequence[Offered], heads: dict[str, tuple[int, int, bytes] | None], now: str,
               extra_rejects: Sequence[RejectRecord], settle: Callable[[], None] = lambda: None,
               ) -> tuple[list[Outcome], AppendBatch]:
        parsed = self._parsed
        by_platform: dict[str, list[ParsedEvent]] = {}
        for item in parsed:
            if isinstance(item, ParsedEvent):
                by_platform.setdefault(item.platform, []).append(item)
        self._touched = [self.state(p) for p in sorted(by_platform)]
        for state in self._touched:
            row = heads.get(state.platform)
            state.sync(Head(row[0], row[1], Frontier.restore(row[0], row[2])) if row is not None else None)
        folds: dict[str, PlatformFold] = {}
        known_ids: dict[str, dict[str, bytes]] = {}
        for platform, items in by_platform.items():
            state = self._states[platform]
            state.prefetch(keys_of(item.event for item in items))
            folds[platform] = PlatformFold(state)
            # event id -> leaf hash of the accepted canonical bytes: equal
            # hashes are equal JSON values (canonical bytes are a function of
            # the value).  Ids accepted earlier in this batch are added below.
            known_ids[platform] = self.store.known_ids(platform, sorted({i.event["id"] for i in items}))
        appending = AppendBatch(rejects=list(extra_rejects))
        outcomes: list[Outcome] = []
        for offered, item in zip(batch, parsed):
            if isinstance(item, InvalidEvent):
                outcomes.append(Outcome(REJECTED, item.event_id, item.platform, code=rules.INVALID, message=item.message))
                appending.rejects.append(RejectRecord(item.platform, item.event_id, rules.INVALID, item.message,
                                                      offered.payload, offered.source, now))
                continue
            fold = folds[item.platform]
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
                refusal = rules.check(fold.state, event)
            if refusal is not None:
                outcomes.append(Outcome(REJECTED, event_id, item.platform, code=refusal.code, message=refusal.message))
                appending.rejects.append(RejectRecord(item.platform, event_id, refusal.code, refusal.message,
                                                      offered.payload, offered.source, now))
                continue
            seq = fold.seq + 1
            applied = fold.apply(event, seq)
            known_ids[item.platform][event_id] = leaf
            appending.merkle_nodes.extend(
                (item.platform, level, idx, h) for level, idx, h in fold.state.head.tree.append(leaf)
                if level >= MERKLE_STORED_LEVEL_MIN)
            appending.events.append((item.platform, seq, event["type"], item.canonical))
            appending.id_records.append((item.platform, event_id, seq, leaf, applied.effect_hash(), now))
            outcomes.append(Outcome(ACCEPTED, event_id, item.platform, seq=seq))
        self._changed = [folds[p].state.changes() for p in sorted(folds) if folds[p].state.dirty]
        if self._changed:
            appending.state = StateRows.merged([rows_of(changes) for changes in self._changed])
        return outcomes, appending
