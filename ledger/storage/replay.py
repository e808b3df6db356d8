"""Rebuild a platform's state from its log alone, in bounded memory.

The stored canonical events are folded, in seq order and a batch at a
time, by the same core the writer decides with (`NativeReplay`: the native
engine wherever it is built; `Replay`: the reference,
`projections.fold.PlatformFold`; `PEERLEDGER_ENGINE` chooses), into the
state tables of a *target* store: a scratch SQLite file for `--as-of`
queries, a checkpoint's digest, `verify` and audits, or the ledger's own
database when an old database is upgraded (`ledger.storage.upgrade`).
Memory is the bounded caches plus one batch; the rest is on disk.  Time
grows with the events replayed, which is what the caller asked for.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ledger.contract import rules
from ledger.contract.schema import InvalidEvent, parse_event
from ledger.ops.runtime import cache_budget_bytes
from ledger.storage.native import decide_reading, engine_choice
from ledger.storage.state import StateRows, rows_of
from ledger.storage.store import MERKLE_STORED_LEVEL_MIN, LogEntry, Store, leaf_hash
from projections.balances import balance_rows
from projections.fold import Applied, PlatformFold, keys_of
from projections.state import Figures, PlatformState, StateCaches

# Events folded between two writes of the target's state: large enough that
# a hot account's rows are written rarely, small enough that a batch's
# working set stays a few MB.
REPLAY_BATCH_EVENTS = 5_000

Replayed = tuple[int, dict[str, Any] | None, bytes]  # (seq, event or None: not parsed, stored bytes)


@dataclass(frozen=True, slots=True)
class Decided:
    """What a replay made of one stored event: refused (`invalid`: the shape
    check's message; `refusal`: a rule's code and message) or folded at `seq`
    with its canonical bytes, leaf hash and effect hash."""

    seq: int = 0
    platform: str | None = None
    event_id: str | None = None
    canonical: bytes = b""
    leaf_hash: bytes = b""
    effect_hash: bytes = b""
    invalid: str | None = None
    refusal: tuple[str, str] | None = None


class Replay:
    """One platform's state in `target`, built by folding events in seq order.

    `fold_batch` folds a batch (read ahead with one query per table), then
    writes the state it changed; `begin`, `apply` and `end` are its steps,
    for a caller that checks each event as it goes (`ledger.audit.verify`).
    """

    def __init__(self, target: Store, platform: str, caches: StateCaches | None = None) -> None:
        self.target = target
        self.state = PlatformState(platform, target.state, caches if caches is not None else StateCaches())
        self.state.sync(target.state.head(platform))
        self.fold = PlatformFold(self.state)

    @property
    def seq(self) -> int:
        return self.state.head.seq

    def fold_batch(self, batch: list[Replayed]) -> None:
        self.begin(batch)
        for seq, event, canonical in batch:
            self.apply(seq, event if event is not None else orjson.loads(canonical), canonical)
        self.end()

    def decide(self, batch: list[Replayed]) -> list[Decided]:
        """Each stored event checked (shape, canonical bytes, rules) and folded,
        up to and including the first refused one, then the state written."""
        decided: list[Decided] = []
        parsed: list[tuple[int, dict[str, Any], bytes, bytes]] = []
        for seq, _, stored in batch:
            try:
                p = parse_event(stored)
            except InvalidEvent as e:
                decided.append(Decided(platform=e.platform, event_id=e.event_id, invalid=e.message))
                break
            parsed.append((seq, p.event, stored, p.canonical))
        self.begin([(seq, event, stored) for seq, event, stored, _ in parsed])
        out: list[Decided] = []
        for seq, event, stored, canonical in parsed:
            refusal = rules.check(self.state, event)
            if refusal is not None:
                out.append(Decided(platform=event["platform"], event_id=event["id"],
                                   refusal=(refusal.code, refusal.message)))
                break
            applied = self.apply(seq, event, stored)
            out.append(Decided(seq, event["platform"], event["id"], canonical, leaf_hash(stored),
                               applied.effect_hash()))
        else:
            out.extend(decided)
        self.end()
        return out

    def begin(self, batch: list[Replayed]) -> None:
        """Read ahead every row the batch names (one query per table)."""
        self.state.prefetch(keys_of(event for _, event, _ in batch if event is not None))

    def apply(self, seq: int, event: dict[str, Any], canonical: bytes) -> Applied:
        applied = self.fold.apply(event, seq)
        self.state.head.tree.append(leaf_hash(canonical))
        return applied

    def end(self) -> None:
        """Write what the batch changed to the target."""
        state = self.state
        if state.dirty:
            changes = state.changes()
            self.target.write_state(rows_of(changes))
            state.commit(changes)

    def balances(self) -> dict[tuple[str, str], Figures]:
        """Every balance row of the platform as the replay has it."""
        return dict(self.target.state.all_balances(self.state.platform))


class NativeReplay:
    """`Replay` decided by the native engine (`projections._native.Engine`),
    a batch at a time: the engine checks and folds the stored bytes as the
    writer did when it appended them, and the batch's state rows go to
    `target` in one statement per table."""

    def __init__(self, target: Store, platform: str, cache_bytes: int | None = None) -> None:
        from projections._native import Engine

        self.target = target
        self.platform = platform
        self.engine = Engine(cache_budget_bytes() if cache_bytes is None else cache_bytes, MERKLE_STORED_LEVEL_MIN)
        head = target.state.head(platform)
        self.seq = head.seq if head is not None else 0

    def fold_batch(self, batch: list[Replayed]) -> None:
        self.decide(batch)

    def decide(self, batch: list[Replayed]) -> list[Decided]:
        engine = self.engine
        platforms = [p for p, _ in engine.begin([stored for _, _, stored in batch])]
        heads: dict[str, tuple[int, int, bytes] | None] = dict.fromkeys(platforms)
        heads.update(self.target.state.head_rows(platforms))
        engine.start(heads, {})  # an id twice in the log is verify's to find, not a duplicate
        try:
            decide_reading(engine, self.target)
            out = engine.finish("")
            if out["tables"]:
                self.target.write_state(StateRows(out["tables"], out["digests"]))
        except BaseException:
            engine.rollback()
            raise
        engine.commit()
        folded = {(idr[0], idr[2]): (event[3], idr) for event, idr in zip(out["events"], out["id_records"])}
        outcomes = {row[0]: row[1:] for row in out["outcomes"]}
        decided: list[Decided] = []
        for i, (_, _, stored) in enumerate(batch):
            if i not in outcomes:  # the shape check refused it: the reference's words say why
                try:
                    parse_event(stored)
                except InvalidEvent as e:
                    decided.append(Decided(platform=e.platform, event_id=e.event_id, invalid=e.message))
                    continue
                raise AssertionError(f"the native shape check refused {stored[:200]!r}, which the reference accepts")
            outcome, seq, code, message, platform, event_id = outcomes[i]
            if seq is None or (platform, seq) not in folded:
                decided.append(Decided(platform=platform, event_id=event_id, refusal=(code or outcome, message or "")))
                continue
            canonical, idr = folded[(platform, seq)]
            decided.append(Decided(seq, platform, event_id, bytes(canonical), idr[3], idr[4]))
            if platform == self.platform:
                self.seq = max(self.seq, seq)
        return decided

    def balances(self) -> dict[tuple[str, str], Figures]:
        """Every balance row of the platform as the replay has it."""
        return dict(self.target.state.all_balances(self.platform))


def new_replay(target: Store, platform: str, cache_bytes: int | None = None) -> Replay | NativeReplay:
    """The replay of the engine `PEERLEDGER_ENGINE` chooses, its state caches
    holding `cache_bytes` (the process's budget when None)."""
    if engine_choice() == "native":
        return NativeReplay(target, platform, cache_bytes)
    return Replay(target, platform, None if cache_bytes is None else StateCaches(cache_bytes))


def batches_of(entries: Iterable[LogEntry], stops: Iterable[int] = (), *,
               parsed: bool = True) -> Iterator[list[Replayed]]:
    """Stored events as (seq, event, stored bytes), in batches of at most
    REPLAY_BATCH_EVENTS, a batch also ending at every seq in `stops`;
    without `parsed`, the event is None (a native replay parses itself)."""
    stop_at = set(stops)
    batch: list[Replayed] = []
    for entry in entries:
        batch.append((entry.originator_version, orjson.loads(entry.state) if parsed else None, entry.state))
        if len(batch) >= REPLAY_BATCH_EVENTS or entry.originator_version in stop_at:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def scratch_store() -> Iterator[Store]:
    """An empty ledger database in a temporary SQLite file, removed on exit.

    Not durable (no fsync: a crash only loses a scratch file), so a replay
    into it costs CPU, not disk flushes.
    """
    with tempfile.TemporaryDirectory(prefix="peerledger-replay-") as directory:
        store = Store(f"sqlite:///{os.path.join(directory, 'replay.db')}", durable=False)
        try:
            yield store
        finally:
            store.close()


def rebuild(source: Store, target: Store, platform: str, upto_seq: int | None = None,
            progress: Callable[[int], None] | None = None) -> Replay | NativeReplay:
    """`platform`'s state after `upto_seq` (the head when None), folded from
    `source`'s log into `target` (which has none of it yet)."""
    replay = new_replay(target, platform)
    for batch in batches_of(source.read_log(platform, after_seq=replay.seq, upto_seq=upto_seq),
                            parsed=isinstance(replay, Replay)):
        replay.fold_batch(batch)
        if progress is not None:
            progress(len(batch))
    return replay


@contextlib.contextmanager
def replayed(store: Store, platform: str, upto_seq: int) -> Iterator[Replay | NativeReplay]:
    """The state of `platform` after `upto_seq`, rebuilt in a scratch store."""
    with scratch_store() as scratch:
        yield rebuild(store, scratch, platform, upto_seq)


def balances_as_of(store: Store, platform: str, upto_seq: int, currency: str | None = None) -> list[dict[str, Any]]:
    """The balances JSON (EVENTS.md §5) after the event at `upto_seq`."""
    with replayed(store, platform, upto_seq) as replay:
        return balance_rows(replay.balances(), currency)
