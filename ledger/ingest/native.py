"""The native engine decides a writer's batches (`projections._native.Engine`).

The engine (native/, Rust) does what the reference's `ReferenceDecider`
does, with no I/O: it parses and checks the batch, and whenever it needs
rows it does not hold it says which; this module reads them (one query per
table and round, many keys at once, through `ledger.storage.state.SqlState`)
and hands them over, until the batch is decided.  Then it builds the
`AppendBatch` from what the engine gives back: the events, id records, tree
nodes and state rows, and the rejects with their raw lines.

For a payload the engine's shape check refuses, the reference's
`parse_event` gives the reject its message (rejects are rare; their words
are the reference's).  Were the two ever to disagree on a payload, the batch
fails loudly rather than booking either answer: the differential tests
(`tests/test_native_*.py`) are where such a bug must be caught.

Cost per round trip: one query per table with missing rows; a batch of
1000 events usually needs two to four rounds (its rows, the vectors of what
it sells, the balances it changes), more when it sells works at new graph
states deep below (one round per level of the sub-DAG) or closes a pool
(one round per page of 10 000 members or 2 000 works' vectors).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ledger.contract import rules
from ledger.ingest.ingestor import ACCEPTED, REJECTED, Outcome
from ledger.contract.schema import InvalidEvent, parse_event
from ledger.ingest.sources import Offered
from ledger.storage.state import POOL_PAGE_ROWS, StateRows
from ledger.storage.store import MERKLE_STORED_LEVEL_MIN, AppendBatch, RejectRecord, Store
from projections._native import Engine

# Rounds of reads one batch may take before something is wrong: a sub-DAG
# 3000 works deep takes 3000 (one level each); a pool of 10^8 usage rows
# 10 000 pages.
ROUNDS_MAX = 1_000_000


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
        members: dict[tuple[str, str], Iterator[tuple[str, int, list[tuple[str, int]]]]] = {}
        for _round in range(ROUNDS_MAX):
            requests = engine.step()
            if requests is None:
                break
            for platform, wanted in requests:
                if wanted.pop("settle", False):
                    settle()  # the batch in flight commits (and is confirmed) first
                self._read(platform, wanted, members)
        else:
            raise RuntimeError(f"a batch took more than {ROUNDS_MAX} rounds of reads")
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

    # -- reads ---------------------------------------------------------------

    def _read(self, platform: str, wanted: dict[str, Any],
              members: dict[tuple[str, str], Iterator[tuple[str, int, list[tuple[str, int]]]]]) -> None:
        state = self.store.state
        provide = self.engine.provide
        for table, keys in wanted.items():
            if table == "pool_members":
                stream = members.get((platform, keys))
                if stream is None:
                    stream = members[(platform, keys)] = state.pool_members(platform, keys)
                page = list(itertools.islice(stream, POOL_PAGE_ROWS))
                provide(platform, table, [], page, len(page) < POOL_PAGE_ROWS)
                continue
            columns, key_columns, convert = READS[table]
            rows = state.select("peerledger_" + table, columns, key_columns, platform, keys)
            provide(platform, table, keys, convert(rows) if convert is not None else rows)

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


def _bools(index: int) -> Any:
    def convert(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [r[:index] + (bool(r[index]),) + r[index + 1:] for r in rows]
    return convert


def _money(first: int) -> Any:
    def convert(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [r[:first] + tuple(int(x) for x in r[first:]) for r in rows]
    return convert


def _blobs(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(w, int(v), bytes(b)) for w, v, b in rows]


# table -> (columns the engine takes, key columns, conversion of the database's values)
READS: dict[str, tuple[str, tuple[str, ...], Any]] = {
    "prosumers": ("prosumer", ("prosumer",), None),
    "works": ("work, kind, authors, components, upstream_bps, retracted, version", ("work",), _bools(5)),
    "dependents": ("work, dependent", ("work",), None),
    "values": ("value, work, amount, currency, fee_bps, vector_version, reversed, seq", ("value",), None),
    "payouts": ("payout, prosumer, amount, currency, seq, returned_seq", ("payout",), None),
    "pools": ("pool, currency, method, funded, closed, seq", ("pool",), _bools(4)),
    "vectors": ("work, version, vector", ("work", "version"), _blobs),
    "balances": ("account, currency, earned, reversed, paid", ("account", "currency"), _money(2)),
    "statements": ("account, period, currency, earned, reversed, paid", ("account", "period", "currency"), _money(3)),
}
