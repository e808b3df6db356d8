"""The state a platform's fold reads and changes, kept outside the process.

A ledger runs for years, so no process may hold a platform's whole state:
not its works, values, prosumers or balances.  The state lives in a
database (the ledger's tables, `ledger.storage.state`), and a
`PlatformState` is one process's window on it for one platform:

* reads go through a batch's own changes, then a bounded cache shared by
  every platform of the process (`StateCaches`), then the `StateSource`,
  which answers many keys with one query;
* `prefetch(events)` reads, before a batch is decided, every row its events
  name (one query per table for the rows the caches miss), so deciding and
  folding the batch does no I/O except to walk the work graph below a work
  sold at a new graph state, or above a retracted one;
* the fold's changes stay in the batch until the shell writes them
  (`changes()`, in the same transaction as the batch's events) and then
  calls `commit()` (they become cached) or `rollback()` (they vanish, and so
  does everything cached of the platform, which may have moved meanwhile).

Cached rows are always committed rows, so a cache can never make two
processes disagree: a process that finds the platform's head moved since it
last wrote (`sync`) drops its cached rows of the platform.

Money is exact: figures are Python ints, stored as NUMERIC or decimal text.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from attribution import BoundedCache, ShareVector, Work, WorkGraph
from attribution.graph import VectorKey, vector_size
from projections.merkle import Frontier

EARNED = "earned"
REVERSED = "reversed"
PAID = "paid"
_COLUMN = {EARNED: 0, REVERSED: 1, PAID: 2}


@dataclass(frozen=True, slots=True)
class Figures:
    """earned, reversed and paid of one (account, currency), in minor units."""

    earned: int = 0
    reversed: int = 0
    paid: int = 0

    @property
    def balance(self) -> int:
        return self.earned + self.reversed - self.paid

    def plus(self, delta: list[int]) -> Figures:
        return Figures(self.earned + delta[0], self.reversed + delta[1], self.paid + delta[2])


NO_FIGURES = Figures()


@dataclass(frozen=True, slots=True)
class ValueRecord:
    """A realized value: its share vector is the work's at (`work`,
    `vector_version`) with the fee `fee_bps`, fixed when it was realized."""

    value: str
    work: str
    amount_minor: int
    currency: str
    fee_bps: int
    vector_version: int
    reversed_minor: int
    seq: int


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """A usage pool (EVENTS.md §7): its currency and method, the total funded
    so far (X), whether it is closed, and the seq that opened it.  Its
    funding per subscriber and usage per (subscriber, work) are rows of
    their own, read in subscriber order when it closes (`pool_members`)."""

    pool: str
    currency: str
    method: str
    funded_minor: int
    closed: bool
    seq: int


@dataclass(frozen=True, slots=True)
class PayoutRecord:
    """An issued payout (EVENTS.md §2): to whom, how much, in which currency,
    the seq that issued it, and the seq of its `payout.returned` (§8; 0 while
    it stands).  A return books its amount back, so the row carries it."""

    payout: str
    prosumer: str
    amount_minor: int
    currency: str
    seq: int
    returned_seq: int = 0


# The vector and value of a closed pool are kept under this work key: "@"
# cannot start a work id, so it never meets one.
POOL_WORK_PREFIX = "@pool:"


@dataclass(slots=True)
class Head:
    """Where a platform's log is: its last seq, the fee in force, and the
    right edge of its Merkle tree (`projections.merkle.Frontier`)."""

    seq: int = 0
    fee_bps: int = 0
    tree: Frontier = field(default_factory=Frontier)

    def copy(self) -> Head:
        return Head(self.seq, self.fee_bps, self.tree.copy())


StatementKey = tuple[str, str, str]  # (account, "YYYY-MM", currency)
BalanceKey = tuple[str, str]  # (account, currency)


class StateSource(Protocol):
    """The committed state of a database.  Every read takes many keys and
    returns only the rows that exist; a stored implementation answers each
    call with one query (or one per chunk of keys)."""

    def head(self, platform: str) -> Head | None: ...

    def prosumers(self, platform: str, ids: Collection[str]) -> set[str]: ...

    def works(self, platform: str, ids: Collection[str]) -> dict[str, Work]: ...

    def dependents(self, platform: str, ids: Collection[str]) -> dict[str, list[str]]: ...

    def values(self, platform: str, ids: Collection[str]) -> dict[str, ValueRecord]: ...

    def payouts(self, platform: str, ids: Collection[str]) -> dict[str, PayoutRecord]: ...

    def vectors(self, platform: str, keys: Collection[VectorKey]) -> dict[VectorKey, ShareVector]: ...

    def balances(self, platform: str, keys: Collection[BalanceKey]) -> dict[BalanceKey, Figures]: ...

    def statements(self, platform: str, keys: Collection[StatementKey]) -> dict[StatementKey, Figures]: ...

    def all_balances(self, platform: str) -> Iterator[tuple[BalanceKey, Figures]]: ...

    def pools(self, platform: str, ids: Collection[str]) -> dict[str, PoolRecord]: ...

    def pool_members(self, platform: str, pool: str) -> Iterator[tuple[str, int, list[tuple[str, int]]]]:
        """(subscriber, total funded, [(work, uses)]) of every subscriber who
        funded or used `pool`, in subscriber id order (code point order),
        read a page at a time."""
        ...


@dataclass
class Changes:
    """What one batch changed in one platform's state: the rows to write,
    in the batch's transaction, as they are after the batch (absolute
    figures, whole rows), each once."""

    platform: str
    head: Head
    prosumers: list[tuple[str, int]]  # (prosumer, seq registered)
    works: dict[str, tuple[Work, int]]  # work -> (row after the batch, seq it was created; 0: before the batch)
    dependents: list[tuple[str, str]]  # (component, output listing it)
    values: dict[str, ValueRecord]
    payouts: dict[str, PayoutRecord]  # rows after the batch
    bookings: list[tuple[int, str, str, str]]  # (seq, column, currency, entries JSON) of each event that booked
    vectors: list[tuple[str, int, ShareVector, dict[str, Any]]]  # (work, version, vector, explanation)
    balances: dict[BalanceKey, Figures]
    statements: dict[StatementKey, Figures]
    pools: dict[str, PoolRecord]  # rows after the batch
    pool_explanations: dict[str, dict[str, Any]]  # pool -> its explanation, at its close
    funding: dict[tuple[str, str], int]  # (pool, subscriber) -> minor units the batch added
    usage: dict[tuple[str, str, str], int]  # (pool, subscriber, work) -> uses the batch added
    digest_due: bool  # the batch crossed a multiple of DIGEST_EVERY_SEQ


def _text_bytes(*texts: str) -> int:
    return sum(len(t) for t in texts)


# Estimated bytes per cached row beside its text: the key tuple, the row
# object and the cache's own slot.  Estimates, not measurements: they keep
# a cache's budget honest to within a small factor.
ROW_OVERHEAD_BYTES = 250
# Split of the state cache budget, by what a writer looks up most.
CACHE_SHARES = {"works": 0.25, "vectors": 0.26, "fee_vectors": 0.08, "values": 0.12, "balances": 0.12,
                "statements": 0.08, "prosumers": 0.08, "pools": 0.01}
# Default budget of one process's state caches (estimated bytes: the real
# cost is about twice that).  With the interpreter, SQLite's and a batch's
# working set, a writer on a 1 000 000-event ledger peaked at 308 MiB with
# 64 MiB and at 294 MiB with 48 MiB, no slower (bench/results/
# chunked-sqlite-cache48.md); 96 MiB was no faster either
# (`PEERLEDGER_CACHE_MIB` changes it; bench/chunked_bench.py measures it).
# Since the native engine's allocator gives freed pages back at once, the
# same writer peaks at 243 MiB (chunked-sqlite-allocator.md), and 264 MiB
# ingesting all 1M events in one process.
CACHE_DEFAULT_BYTES = 48 * 1024 * 1024
# Rows per cache are bounded too: many tiny rows cost more than their bytes.
CACHE_MAX_ROWS = 2_000_000


def _work_size(work: Work) -> tuple[int, int]:
    return 1, ROW_OVERHEAD_BYTES + 80 * (len(work.authors) + len(work.components))


def _row_size(_row: object) -> tuple[int, int]:
    return 1, ROW_OVERHEAD_BYTES


def _vector_size(vector: ShareVector) -> tuple[int, int]:
    entries, size = vector_size(vector)
    return entries, size + ROW_OVERHEAD_BYTES


def _cached_vector_size(item: tuple[ShareVector | None, bool]) -> tuple[int, int]:
    if item[0] is None:
        return 1, ROW_OVERHEAD_BYTES
    entries, size = vector_size(item[0])
    return entries, size + ROW_OVERHEAD_BYTES


class StateCaches:
    """The bounded caches of one process, shared by all its platforms.

    Keys start with (platform, generation): a platform whose cached rows may
    be stale gets a new generation, and its old rows age out unread.
    """

    def __init__(self, budget_bytes: int = CACHE_DEFAULT_BYTES) -> None:
        assert budget_bytes >= 0

        def cache(kind: str, size_of: Any) -> BoundedCache:
            return BoundedCache(CACHE_MAX_ROWS, int(budget_bytes * CACHE_SHARES[kind]), size_of)

        self.budget_bytes = budget_bytes
        self.prosumers: BoundedCache[tuple, bool] = cache("prosumers", _row_size)
        self.works: BoundedCache[tuple, Work] = cache("works", _work_size)
        self.values: BoundedCache[tuple, ValueRecord] = cache("values", _row_size)
        # (vector, stored): stored says the vectors table has its row; a
        # vector of None says the table has none and none was computed.
        self.vectors: BoundedCache[tuple, tuple[ShareVector | None, bool]] = cache("vectors", _cached_vector_size)
        self.balances: BoundedCache[tuple, Figures] = cache("balances", _row_size)
        self.statements: BoundedCache[tuple, Figures] = cache("statements", _row_size)
        self.pools: BoundedCache[tuple, PoolRecord] = cache("pools", _row_size)
        # (work, version, fee) -> the shares of a sale: the vector with the fee.
        self.fee_vectors: BoundedCache[tuple, ShareVector] = cache("fee_vectors", _vector_size)
        self._generations = itertools.count(1)

    def new_generation(self) -> int:
        return next(self._generations)

    def stats(self) -> dict[str, tuple[int, int, int]]:
        """(rows, entries, estimated bytes) per cache: for tests and metrics."""
        return {kind: getattr(self, kind).stats() for kind in CACHE_SHARES}


# A balances digest is recorded whenever a batch crosses a multiple of this
# seq; `verify` compares its rebuild with every recorded one.  It reads every
# balance row of the platform: once per 100 000 events keeps that under a few
# µs per event on a platform of 100 000 accounts (every 10 000 cost 45 µs).
DIGEST_EVERY_SEQ = 100_000


class PlatformState:
    """One platform's state as one process sees it: see the module doc.

    It is also the `WorkStore` of the platform's `WorkGraph` (`graph`), so
    the graph's works and vectors are the platform's rows.
    """

    def __init__(self, platform: str, source: StateSource, caches: StateCaches) -> None:
        self.platform = platform
        self.source = source
        self.caches = caches
        self.graph = WorkGraph(self)
        self._generation = caches.new_generation()
        self._committed: Head | None = None  # None: not read yet, or unknown after a failed batch
        self.head = Head()
        self._begin()

    # -- the batch's life ----------------------------------------------------

    def _begin(self) -> None:
        self._prosumers: dict[str, int] = {}
        self._works: dict[str, Work] = {}
        self._created_works: dict[str, int] = {}
        self._edges: list[tuple[str, str]] = []
        self._values: dict[str, ValueRecord] = {}
        self._payouts: dict[str, PayoutRecord] = {}
        self._vectors: dict[VectorKey, ShareVector] = {}
        self._explained: dict[VectorKey, dict[str, Any]] = {}
        self._balance_delta: dict[BalanceKey, list[int]] = {}
        self._statement_delta: dict[StatementKey, list[int]] = {}
        self._bookings: list[tuple[int, str, str, str]] = []
        self._pools: dict[str, PoolRecord] = {}
        self._pool_explanations: dict[str, dict[str, Any]] = {}
        self._funding: dict[tuple[str, str], int] = {}
        self._usage: dict[tuple[str, str, str], int] = {}
        # Rows the source said do not exist, and committed rows this batch
        # read: during this batch only.
        kinds = ("prosumers", "works", "values", "payouts", "vectors", "balances", "statements", "pools")
        self._absent: dict[str, set[Any]] = {kind: set() for kind in kinds}
        self._seen: dict[str, dict[Any, Any]] = {kind: {} for kind in kinds}
        if self._committed is not None:
            self.head = self._committed.copy()

    def sync(self, head: Head | None) -> None:
        """Start a batch at the committed head `head` (read under the
        platform's lock).  If another process moved the platform since this
        one last wrote it, what is cached of it is dropped."""
        head = head if head is not None else Head()
        if self._committed is None or self._committed.seq != head.seq:
            self._generation = self.caches.new_generation()
        self._committed = head
        self._begin()

    @property
    def dirty(self) -> bool:
        """Whether the batch accepted an event of the platform (only
        accepted events change its state)."""
        committed_seq = self._committed.seq if self._committed is not None else 0
        return self.head.seq != committed_seq

    def changes(self) -> Changes:
        """The batch's rows, read-modify-write of its figures (one source
        read per table for the rows the caches miss)."""
        base = self._figures("balances", self.caches.balances, self.source.balances, self._balance_delta)
        balances = {key: base.get(key, NO_FIGURES).plus(delta) for key, delta in self._balance_delta.items()}
        base_s = self._figures("statements", self.caches.statements, self.source.statements, self._statement_delta)
        statements = {key: base_s.get(key, NO_FIGURES).plus(delta) for key, delta in self._statement_delta.items()}
        committed_seq = self._committed.seq if self._committed is not None else 0
        return Changes(
            platform=self.platform,
            head=self.head,
            prosumers=sorted(self._prosumers.items()),
            works={w: (work, self._created_works.get(w, 0)) for w, work in sorted(self._works.items())},
            dependents=list(self._edges),
            values=dict(sorted(self._values.items())),
            payouts=dict(sorted(self._payouts.items())),
            bookings=self._bookings,
            vectors=[(w, v, self._vectors[(w, v)], ex) for (w, v), ex in sorted(self._explained.items())],
            balances=dict(sorted(balances.items())),
            statements=dict(sorted(statements.items())),
            pools=dict(sorted(self._pools.items())),
            pool_explanations=dict(self._pool_explanations),
            funding=dict(sorted(self._funding.items())),
            usage=dict(sorted(self._usage.items())),
            digest_due=self.head.seq // DIGEST_EVERY_SEQ != committed_seq // DIGEST_EVERY_SEQ,
        )

    def commit(self, changes: Changes) -> None:
        """The batch's transaction committed: its rows become cached."""
        c, g, p = self.caches, self._generation, self.platform
        for prosumer, _ in changes.prosumers:
            c.prosumers.put((p, g, prosumer), True)
        for w, work in self._works.items():
            c.works.put((p, g, w), work)
        for v, record in self._values.items():
            c.values.put((p, g, v), record)
        for key in self._absent["vectors"]:
            if key not in self._vectors:
                c.vectors.put((p, g, key), (None, False))
        for key, vector in self._vectors.items():
            c.vectors.put((p, g, key), (vector, key in self._explained))
        for key, figures in changes.balances.items():
            c.balances.put((p, g, key), figures)
        for key, figures in changes.statements.items():
            c.statements.put((p, g, key), figures)
        for pool, record in self._pools.items():
            c.pools.put((p, g, pool), record)
        self._committed = self.head
        self._begin()

    def rollback(self) -> None:
        """The batch was not written: forget it, and everything cached of
        the platform (whoever else wrote meanwhile may have changed it)."""
        self._committed = None
        self._generation = self.caches.new_generation()
        self.head = Head()
        self._begin()

    # -- reading, many keys at once --------------------------------------------

    def _read(self, kind: str, cache: BoundedCache, load: Any, keys: Iterable[Any],
              overlay: dict[Any, Any]) -> dict[Any, Any]:
        """Rows of `keys`: the batch's own, those it read already, the
        cache's, then the source's (one call for all misses, which are
        cached; absent ones are remembered for the batch)."""
        p, g = self.platform, self._generation
        absent = self._absent[kind]
        seen = self._seen[kind]
        found: dict[Any, Any] = {}
        missing: list[Any] = []
        for key in keys:
            hit = overlay.get(key)
            if hit is None:
                hit = seen.get(key)
                if hit is None:
                    hit = cache.get((p, g, key))
                    if hit is not None:
                        seen[key] = hit
            if hit is not None:
                found[key] = hit
            elif key not in absent and key not in found:
                missing.append(key)
        if missing:
            loaded = load(p, missing)
            for key in missing:
                row = loaded.get(key) if type(loaded) is dict else (True if key in loaded else None)
                if row is None:
                    absent.add(key)
                    continue
                found[key] = seen[key] = row
                cache.put((p, g, key), row)
        return found

    def _one(self, kind: str, cache: BoundedCache, load: Any, key: Any, overlay: dict[Any, Any]) -> Any:
        """One row, or None: `_read` for the common case, in a few dict
        lookups (a batch's rows were read ahead by `prefetch`)."""
        hit = overlay.get(key)
        if hit is not None:
            return hit
        hit = self._seen[kind].get(key)
        if hit is not None:
            return hit
        if key in self._absent[kind]:
            return None
        return self._read(kind, cache, load, (key,), overlay).get(key)

    def _figures(self, kind: str, cache: BoundedCache, load: Any,
                 keys: Iterable[Any]) -> dict[Any, Figures]:
        return self._read(kind, cache, load, keys, {})

    def prefetch(self, keys: PrefetchKeys) -> None:
        """Read every row a batch names, before it is decided."""
        if keys.prosumers:
            self._read("prosumers", self.caches.prosumers, self.source.prosumers, keys.prosumers, self._prosumers)
        if keys.works:
            self.works(keys.works)
        if keys.values:
            self._read("values", self.caches.values, self.source.values, keys.values, self._values)
        if keys.payouts:
            self._read("payouts", _NO_CACHE, self.source.payouts, keys.payouts, self._payouts)
        if keys.balances:
            self._figures("balances", self.caches.balances, self.source.balances, keys.balances)
        if keys.pools:
            self._read("pools", self.caches.pools, self.source.pools, keys.pools, self._pools)
        # Second round: the vectors of the works sold and of the values
        # reversed, at the versions just read.
        wanted: list[VectorKey] = []
        works = self.works(keys.sold_works)
        wanted.extend((w, works[w].version) for w in keys.sold_works if w in works)
        values = self._read("values", self.caches.values, self.source.values, keys.values, self._values)
        wanted.extend((r.work, r.vector_version) for r in values.values() if r.value in keys.reversed_values)
        known = self.vectors(wanted) if wanted else {}
        # Third round: a sold output whose vector is not known is walked
        # down its components; read the first level for all of them at once
        # (most outputs are one level above contributions or sold works).
        below = {c for w, work in works.items() if (w, work.version) not in known and work.passes_on()
                 for c, _ in work.components}
        if below:
            rows = self.works(below)
            self.vectors([(c, row.version) for c, row in rows.items()])

    # -- what the rules and the fold ask ----------------------------------------

    def prosumer_exists(self, prosumer: str) -> bool:
        return self._one("prosumers", self.caches.prosumers, self.source.prosumers, prosumer,
                         self._prosumers) is not None

    def value(self, value: str) -> ValueRecord | None:
        return self._one("values", self.caches.values, self.source.values, value, self._values)

    def payout(self, payout: str) -> PayoutRecord | None:
        return self._one("payouts", _NO_CACHE, self.source.payouts, payout, self._payouts)

    def balance(self, account: str, currency: str) -> Figures:
        key = (account, currency)
        base = self._one("balances", self.caches.balances, self.source.balances, key, _EMPTY) or NO_FIGURES
        delta = self._balance_delta.get(key)
        return base if delta is None else base.plus(delta)

    def shares(self, work: str, version: int, fee_bps: int) -> ShareVector:
        """The share vector of a sale of `work` at `version` with `fee_bps`:
        the work's stored (or computed) vector with the fee applied."""
        key = (self.platform, self._generation, (work, version, fee_bps))
        cached = self.caches.fee_vectors.get(key)
        if cached is not None:
            return cached
        vector = self.vectors(((work, version),)).get((work, version))
        if vector is None:  # not known anywhere: only the current version can be computed
            assert self.graph.vector_version(work) == version, "a past version's vector must be stored"
            vector = self.graph.vector(work)
        # Every sale of a work at one graph state and fee has these shares:
        # building them (the fee applied, recipients sorted) once, not per sale.
        shares = vector.with_fee(fee_bps)
        self.caches.fee_vectors.put(key, shares)
        return shares

    def vector_stored(self, key: VectorKey) -> bool:
        """Whether the vectors table has (or this batch writes) the row of `key`."""
        if key in self._explained:
            return True
        hit = self.caches.vectors.get((self.platform, self._generation, key))
        if hit is not None:
            return hit[1]
        if key in self._absent["vectors"]:
            return False
        return key in self.source.vectors(self.platform, (key,))

    def pool(self, pool: str) -> PoolRecord | None:
        return self._one("pools", self.caches.pools, self.source.pools, pool, self._pools)

    def pool_members(self, pool: str) -> Iterator[tuple[str, int, list[tuple[str, int]]]]:
        """Every subscriber of `pool` with what they funded and used, in
        subscriber order: the stored rows merged with this batch's."""
        funding = {s: units for (p, s), units in self._funding.items() if p == pool}
        usage: dict[str, list[tuple[str, int]]] = {}
        for (p, s, work), count in self._usage.items():
            if p == pool:
                usage.setdefault(s, []).append((work, count))
        batch = sorted(set(funding) | set(usage))
        position = 0
        for subscriber, funded, uses in self.source.pool_members(self.platform, pool):
            while position < len(batch) and batch[position] < subscriber:
                s = batch[position]
                yield s, funding.get(s, 0), usage.get(s, [])
                position += 1
            if position < len(batch) and batch[position] == subscriber:
                funded += funding.get(subscriber, 0)
                uses = uses + usage.get(subscriber, [])
                position += 1
            yield subscriber, funded, uses
        for s in batch[position:]:
            yield s, funding.get(s, 0), usage.get(s, [])

    # -- the fold's changes -----------------------------------------------------

    def put_pool(self, record: PoolRecord) -> None:
        self._pools[record.pool] = record

    def fund(self, pool: str, subscriber: str, amount_minor: int) -> None:
        key = (pool, subscriber)
        self._funding[key] = self._funding.get(key, 0) + amount_minor

    def use(self, pool: str, subscriber: str, uses: dict[str, int]) -> None:
        usage = self._usage
        for work, count in uses.items():
            key = (pool, subscriber, work)
            usage[key] = usage.get(key, 0) + count

    def explain_pool(self, pool: str, explanation: dict[str, Any]) -> None:
        self._pool_explanations[pool] = explanation

    def add_prosumer(self, prosumer: str) -> None:
        self._prosumers[prosumer] = self.head.seq + 1

    def put_payout(self, record: PayoutRecord) -> None:
        self._payouts[record.payout] = record

    def put_value(self, record: ValueRecord) -> None:
        self._values[record.value] = record

    def store_vector(self, work: str, version: int, vector: ShareVector, explanation: dict[str, Any]) -> None:
        """Write the vector of (work, version) and its explanation with the
        batch: the first sale at a graph state fixes them for good."""
        self._vectors[(work, version)] = vector
        self._explained[(work, version)] = explanation

    def book(self, column: str, currency: str, month: str, bookings: dict[str, int]) -> None:
        """Add the next event's bookings to the figures, and keep them as
        that event's entries (EVENTS.md §9: its booking document)."""
        i = _COLUMN[column]
        self._bookings.append((self.head.seq + 1, column, currency, bookings_json(bookings)))
        balances, statements = self._balance_delta, self._statement_delta
        for account, units in bookings.items():
            delta = balances.get((account, currency))
            if delta is None:
                delta = balances[(account, currency)] = [0, 0, 0]
            delta[i] += units
            period = statements.get((account, month, currency))
            if period is None:
                period = statements[(account, month, currency)] = [0, 0, 0]
            period[i] += units

    # -- WorkStore: the graph's rows are the platform's ------------------------

    def works(self, ids: Collection[str]) -> dict[str, Work]:
        if len(ids) == 1:  # the graph's common question: one work
            (work_id,) = ids
            row = self._one("works", self.caches.works, self.source.works, work_id, self._works)
            return {work_id: row} if row is not None else {}
        return self._read("works", self.caches.works, self.source.works, ids, self._works)

    def put_work(self, work_id: str, work: Work) -> None:
        before = self.works((work_id,)).get(work_id)
        if before is None:
            self._created_works[work_id] = self.head.seq + 1
        self._works[work_id] = work
        if before is None or before.version != work.version:
            # A new work, or a new version of one, has no stored vector yet:
            # known without asking (sales store them through this state).
            self._absent["vectors"].add((work_id, work.version))

    def dependents(self, ids: Collection[str]) -> dict[str, list[str]]:
        found = self.source.dependents(self.platform, ids)
        wanted = set(ids)
        for component, dependent in self._edges:
            if component in wanted:
                found.setdefault(component, []).append(dependent)
        return found

    def add_dependent(self, component: str, dependent: str) -> None:
        self._edges.append((component, dependent))

    def vectors(self, keys: Collection[VectorKey]) -> dict[VectorKey, ShareVector]:
        p, g = self.platform, self._generation
        absent = self._absent["vectors"]
        found: dict[VectorKey, ShareVector] = {}
        missing: list[VectorKey] = []
        for key in keys:
            vector = self._vectors.get(key)
            if vector is None:
                hit = self.caches.vectors.get((p, g, key))
                if hit is not None:
                    vector = hit[0]
                    if vector is None:  # known not to be stored, nor computed yet
                        continue
            if vector is not None:
                found[key] = vector
            elif key not in absent:
                missing.append(key)
        if missing:
            loaded = self.source.vectors(p, missing)
            for key in missing:
                vector = loaded.get(key)
                if vector is None:
                    absent.add(key)
                    # Remembered across batches: only this process can store
                    # it while the platform's head is the one it knows.
                    self.caches.vectors.put((p, g, key), (None, False))
                else:
                    found[key] = vector
                    self.caches.vectors.put((p, g, key), (vector, True))
        return found

    def put_vector(self, key: VectorKey, vector: ShareVector) -> None:
        """A vector the graph computed, not stored: kept in the bounded cache
        at once, under this batch's generation (a failed batch drops it with
        the rest), not with the batch, which writes only stored vectors
        (`store_vector`): a pool's close computes one per work it paid."""
        self.caches.vectors.put((self.platform, self._generation, key), (vector, False))
        self._absent["vectors"].discard(key)  # known now: commit must not mark it unknown


def bookings_json(bookings: dict[str, int]) -> str:
    """An event's bookings as stored: `[[account, units], …]` in account
    (code point) order, 0-unit bookings included."""
    return orjson.dumps(sorted(bookings.items())).decode()


class _NoCache:
    """A cache that keeps nothing: a payout's row is asked for when it is
    issued and, rarely, when it is returned, so caching it would only hold
    memory."""

    def get(self, _key: Any) -> None:
        return None

    def put(self, _key: Any, _value: Any) -> None:
        pass


_NO_CACHE: Any = _NoCache()
_EMPTY: dict[Any, Any] = {}  # an overlay with nothing in it (balances: the batch keeps deltas, not rows)


@dataclass
class PrefetchKeys:
    """The rows a batch of events names, by table (`projections.fold.keys_of`)."""

    prosumers: set[str] = field(default_factory=set)
    works: set[str] = field(default_factory=set)
    sold_works: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    reversed_values: set[str] = field(default_factory=set)
    payouts: set[str] = field(default_factory=set)
    balances: set[BalanceKey] = field(default_factory=set)
    pools: set[str] = field(default_factory=set)


__all__ = [
    "CACHE_DEFAULT_BYTES",
    "POOL_WORK_PREFIX",
    "PayoutRecord",
    "PoolRecord",
    "DIGEST_EVERY_SEQ",
    "EARNED",
    "PAID",
    "REVERSED",
    "Changes",
    "Figures",
    "Head",
    "PlatformState",
    "PrefetchKeys",
    "StateCaches",
    "StateSource",
    "ValueRecord",
]
