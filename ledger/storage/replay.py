"""Rebuild a platform's state from its log alone, in bounded memory.

The stored canonical events are folded, in seq order and a batch at a
time, by the same `projections.fold.PlatformFold` the writer uses, into the
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
from typing import Any

import orjson

from ledger.storage.state import rows_of
from ledger.storage.store import LogEntry, Store, leaf_hash
from projections.balances import balance_rows
from projections.fold import Applied, PlatformFold, keys_of
from projections.state import Figures, PlatformState, StateCaches

# Events folded between two writes of the target's state: large enough that
# a hot account's rows are written rarely, small enough that a batch's
# working set stays a few MB.
REPLAY_BATCH_EVENTS = 5_000

Replayed = tuple[int, dict[str, Any], bytes]  # (seq, event, canonical bytes)


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
            self.apply(seq, event, canonical)
        self.end()

    def begin(self, batch: list[Replayed]) -> None:
        """Read ahead every row the batch names (one query per table)."""
        self.state.prefetch(keys_of(event for _, event, _ in batch))

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


def batches_of(entries: Iterable[LogEntry], stops: Iterable[int] = ()) -> Iterator[list[Replayed]]:
    """Stored events as (seq, event, canonical bytes), in batches of at most
    REPLAY_BATCH_EVENTS, a batch also ending at every seq in `stops`."""
    stop_at = set(stops)
    batch: list[Replayed] = []
    for entry in entries:
        batch.append((entry.originator_version, orjson.loads(entry.state), entry.state))
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
            progress: Callable[[int], None] | None = None) -> Replay:
    """`platform`'s state after `upto_seq` (the head when None), folded from
    `source`'s log into `target` (which has none of it yet)."""
    replay = Replay(target, platform)
    for batch in batches_of(source.read_log(platform, after_seq=replay.seq, upto_seq=upto_seq)):
        replay.fold_batch(batch)
        if progress is not None:
            progress(len(batch))
    return replay


@contextlib.contextmanager
def replayed(store: Store, platform: str, upto_seq: int) -> Iterator[Replay]:
    """The state of `platform` after `upto_seq`, rebuilt in a scratch store."""
    with scratch_store() as scratch:
        yield rebuild(store, scratch, platform, upto_seq)


def balances_as_of(store: Store, platform: str, upto_seq: int, currency: str | None = None) -> list[dict[str, Any]]:
    """The balances JSON (EVENTS.md §5) after the event at `upto_seq`."""
    with replayed(store, platform, upto_seq) as replay:
        return balance_rows(replay.balances(), currency)
