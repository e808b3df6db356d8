"""The native engine decides a writer's batches (`projections._native.Engine`).

The engine (native/, Rust) does what the reference's `ReferenceDecider`
does, with no I/O: it parses and checks the batch, and whenever it needs
rows it does not hold it says which; `ledger.storage.native` reads
them and hands them over, until the batch is decided.  Then it builds the
`AppendBatch` from what the engine gives back: the events, id records, tree
nodes and state rows, and the rejects with their raw lines.

For a payload the engine's shape check refuses, the reference's
`parse_event` gives the reject its message (rejects are rare; their words
are the reference's).  Were the two ever to disagree on a payload, the batch
fails loudly rather than booking either answer: the differential tests
(`tests/test_native_*.py`) are where such a bug must be caught.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ledger.contract import rules
from ledger.ingest.ingestor import ACCEPTED, REJECTED, Outcome
from ledger.contract.schema import InvalidEvent, parse_event
from ledger.ingest.sources import Offered
from ledger.storage.native import decide_reading
from ledger.storage.state import StateRows
from ledger.storage.store import MERKLE_STORED_LEVEL_MIN, AppendBatch, RejectRecord, Store
from projections._native import Engine

class NativeDisagreement(AssertionError):
    """The native shape check refused a payload the reference accepts."""


class NativeDecider:
    """`ledger.ingest.ingestor.Decider` over the native engine."""

    pipelined = True

    def __init__(self, store: Store, cache_budget_bytes: int) -> None:
        self.store = store
        self.engine = Engine(cache_budget_bytes, MERKLE_STORED_LEVEL_MIN)
        self._ids: list[tuple[str, list[str]]] = []
        self._heads: dict[str, int] = {}
        self._pending: dict[str, int] = {}  # heads of the decided batch
        self._flying: dict[str, int] = {}  # heads of the handed-off batch

    def head_seq(self, platform: str) -> int:
        return self._heads.get(platform, 0)

    def cache_stats(self) -> dict[str, tuple[int, int, int, int]]:
        return {kind: tuple(stats) for kind, stats in self.engine.cache_stats()}

    def prepare(self, batch: Sequence[Offered]) -> list[str]:
        self._ids = self.engine.begin([o.payload for o in batch])
        return [platform for platform, _ in self._ids]

    def decide(self, batch: Sequence[Offered], heads: dict[str, tuple[int, int, bytes] | None], now: str,
               extra_rejects: Sequence[RejectRecord], settle: Callable[[], None] = lambda: None,
               ) -> tuple[list[Outcome], AppendBatch]:
        engine = self.engine
        known = {platform: self.store.known_ids(platform, ids) for platform, ids in self._ids}
        engine.start(heads, known)
        decide_reading(engine, self.store, settle)
        out = engine.finish(now)
        return self._outcomes(batch, out, now, extra_rejects)

    def commit(self) -> None:
        self.hand_off()
        self.confirm()

    def hand_off(self) -> None:
        """The decided batch goes to the database; the next may be decided."""
        self.engine.hand_off()
        self._flying, self._pending = self._pending, {}

    def confirm(self) -> None:
        """The handed-off batch committed."""
        self.engine.confirm()
        self._heads.update(self._flying)
        self._flying = {}

    def rollback(self) -> None:
        """Forget the batch (and the one in flight) and what is known of their
        platforms: read again under the lock at the next batch."""
        self.engine.rollback()
        for platform in [*self._flying, *(p for p, _ in self._ids)]:
            self._heads.pop(platform, None)
        self._pending, self._flying = {}, {}

    # -- results -------------------------------------------------------------

    def _outcomes(self, batch: Sequence[Offered], out: dict[str, Any], now: str,
                  extra_rejects: Sequence[RejectRecord]) -> tuple[list[Outcome], AppendBatch]:

        decided = {row[0]: row[1:] for row in out["outcomes"]}
        appending = AppendBatch(
            events=out["events"],
            id_records=out["id_records"],
            rejects=list(extra_rejects),
            merkle_nodes=out["tree_nodes"],
        )
        if out["tables"]:
            appending.state = StateRows(out["tables"], out["digests"])
        outcomes: list[Outcome] = []
        for i, offered in enumerate(batch):
            if i not in decided:
                try:
                    parsed = parse_event(offered.payload)
                except InvalidEvent as e:
                    outcomes.append(Outcome(REJECTED, e.event_id, e.platform, code=rules.INVALID, message=e.message))
                    appending.rejects.append(RejectRecord(e.platform, e.event_id, rules.INVALID, e.message,
                                                          offered.payload, offered.source, now))
                    continue
                raise NativeDisagreement(f"the native shape check refused {parsed.id!r} of {parsed.platform!r}, "
                                         "which the reference accepts")
            outcome, seq, code, message, platform, event_id = decided[i]
            outcomes.append(Outcome(outcome, event_id, platform, seq=seq, code=code, message=message))
            if outcome == REJECTED:
                appending.rejects.append(RejectRecord(platform, event_id, code, message, offered.payload,
                                                      offered.source, now))
            elif outcome == ACCEPTED:
                self._pending[platform] = max(self._pending.get(platform, 0), seq)
        return outcomes, appending
