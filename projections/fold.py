"""The deterministic fold of one platform's log.

`PlatformFold.apply` applies one accepted event, in log order, to the
platform's state (`projections.state.PlatformState`): the registered
prosumers, the work graph, every realized value with its fixed share
vector, the payouts, the fee in force, and the balances and statement
figures per account.  It is the single place where the rules of EVENTS.md §3
turn events into bookings.  Everything folds through it:

* the write side (`ledger.ingest`) asks the state whether an offered event
  may be accepted (`ledger.contract.rules`), then applies it here, so
  decisions are taken in log order on exactly the state the log implies;
  the state's changes, bookings included, are written with the events:
  the read models (balances, statements, explanations) *are* that state;
* `verify`, `--as-of` queries and audits replay the stored log through a
  fresh state (`ledger.storage.replay`).

The fold trusts its input: it is only ever given events that the schema
accepted and the rules allowed.  It asserts the invariants it relies on
rather than re-checking ledger rules.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import orjson

from attribution import (
    PLATFORM,
    PoolSplitter,
    ShareVector,
    WorkGraph,
    allocate,
    reversal_bookings,
    split_pool,
    to_json_obj,
    used_works,
)
from attribution.allocation import MAX_AMOUNT_MINOR
from projections.explain import work_explanation
from projections.periods import utc_month
from projections.state import (
    EARNED,
    PAID,
    POOL_WORK_PREFIX,
    REVERSED,
    PayoutRecord,
    PlatformState,
    PoolRecord,
    PrefetchKeys,
    ValueRecord,
)

NO_BOOKINGS: dict[str, int] = {}


@dataclass(slots=True)
class Applied:
    """What applying one event booked.

    An event books into one column (`kind`: earned for value.realized and
    pool.closed, reversed for value.reversed, usually negative, paid for
    payout.issued, negative for payout.returned)
    of one currency; `bookings` maps each account to its signed minor
    units, in account order.  A booking of 0 units is still a booking: it
    gives the account a row.
    """

    seq: int
    month: str  # statement period: UTC month of the event's `at`
    kind: str = ""
    currency: str = ""
    bookings: dict[str, int] = field(default_factory=lambda: NO_BOOKINGS)
    value: ValueRecord | None = None  # the value created or reversed
    # pool.closed: the split stored with the pool (`method`, stage 1's `works`,
    # the `alternative`), for observers of the fold (insights).
    pool: dict[str, Any] | None = None

    def effect_hash(self) -> bytes:
        """A digest of this event's bookings, recorded per seq when the event
        is appended, so a replay can name the first seq whose effect differs."""
        if not self.bookings:
            return EMPTY_EFFECT
        # Bookings are in account order and within ±(2^63 - 1): orjson's
        # output is a faithful, fast serialisation of them.
        return hashlib.blake2b(orjson.dumps((self.kind, self.currency, self.bookings)), digest_size=16).digest()


EMPTY_EFFECT = hashlib.blake2b(b"", digest_size=16).digest()


class PlatformFold:
    """Applies a platform's events to its state, in log order."""

    def __init__(self, state: PlatformState) -> None:
        self.state = state

    @property
    def platform(self) -> str:
        return self.state.platform

    @property
    def seq(self) -> int:
        return self.state.head.seq

    def apply(self, event: dict[str, Any], seq: int) -> Applied:
        """Apply one accepted event at log position `seq`."""
        state = self.state
        head = state.head
        assert seq == head.seq + 1, f"log order broken: {seq} after {head.seq}"
        assert event["platform"] == state.platform
        data = event["data"]
        kind = event["type"]
        graph = state.graph
        applied = Applied(seq, utc_month(event["at"]))
        if kind == "value.realized":
            record = applied.value = self._realize(data, seq)
            applied.kind, applied.currency = EARNED, record.currency
            applied.bookings = allocate(record.amount_minor, state.shares(record.work, record.vector_version,
                                                                          record.fee_bps))
        elif kind == "value.reversed":
            before = state.value(data["value"])
            assert before is not None
            reversal_minor = data["amount"]
            assert before.reversed_minor + reversal_minor <= before.amount_minor
            shares = state.shares(before.work, before.vector_version, before.fee_bps)
            applied.kind, applied.currency = REVERSED, before.currency
            applied.bookings = reversal_bookings(shares, before.reversed_minor, reversal_minor)
            record = applied.value = replace(before, reversed_minor=before.reversed_minor + reversal_minor)
            state.put_value(record)
        elif kind == "payout.issued":
            state.put_payout(PayoutRecord(data["payout"], data["prosumer"], data["amount"], data["currency"], seq))
            applied.kind, applied.currency = PAID, data["currency"]
            applied.bookings = {data["prosumer"]: data["amount"]}
        elif kind == "payout.returned":
            # §8: the payout's amount is owed again, booked as a negative
            # payment in the month of the return (not of the payout).
            payout = state.payout(data["payout"])
            assert payout is not None and not payout.returned_seq
            state.put_payout(replace(payout, returned_seq=seq))
            applied.kind, applied.currency = PAID, payout.currency
            applied.bookings = {payout.prosumer: -payout.amount_minor}
        elif kind == "prosumer.registered":
            state.add_prosumer(data["prosumer"])
        elif kind == "contribution.recorded":
            graph.add_contribution(data["work"], data["authors"])
        elif kind == "output.composed":
            graph.add_output(data["work"], data["components"], data.get("authors", {}),
                             data.get("upstream_bps", 10_000))
        elif kind == "policy.set":
            head.fee_bps = data["platform_fee_bps"]
        elif kind == "work.retracted":
            graph.retract(data["work"])
        elif kind == "work.reinstated":
            graph.reinstate(data["work"])
        elif kind == "work.reassigned":
            graph.reassign(data["work"], data["authors"])
        elif kind == "pool.opened":
            state.put_pool(PoolRecord(data["pool"], data["currency"], data["method"], 0, False, seq))
        elif kind == "pool.funded":
            pool = state.pool(data["pool"])
            assert pool is not None and not pool.closed
            assert pool.funded_minor + data["amount"] <= MAX_AMOUNT_MINOR
            state.put_pool(replace(pool, funded_minor=pool.funded_minor + data["amount"]))
            state.fund(pool.pool, data["subscriber"], data["amount"])
        elif kind == "usage.recorded":
            pool = state.pool(data["pool"])
            assert pool is not None and not pool.closed
            state.use(pool.pool, data["subscriber"], data["uses"])
        elif kind == "pool.closed":
            record, applied.pool = self._close(data["pool"], seq)
            applied.value = record
            applied.kind, applied.currency = EARNED, record.currency
            shares = state.vectors(((record.work, 0),)).get((record.work, 0))
            applied.bookings = allocate(record.amount_minor, shares) if shares is not None else NO_BOOKINGS
        else:  # the schema admits no other type
            raise AssertionError(f"unknown event type {kind!r}")
        if applied.bookings:
            state.book(applied.kind, applied.currency, applied.month, applied.bookings)
        head.seq = seq
        return applied

    def _realize(self, data: dict[str, Any], seq: int) -> ValueRecord:
        state = self.state
        work = data["work"]
        version = state.graph.vector_version(work)
        if not state.vector_stored((work, version)):
            # The first sale at this graph state: its vector and explanation
            # are written with it, so later sales, refunds and `explain`
            # find them whatever the graph has become.  (The explanation's
            # propagation gives the vector too: explained first, it is known.)
            explanation = work_explanation(state.graph, work)
            state.store_vector(work, version, state.graph.vector(work), explanation)
        record = ValueRecord(
            value=data["value"],
            work=work,
            amount_minor=data["amount"],
            currency=data["currency"],
            fee_bps=state.head.fee_bps,
            vector_version=version,
            reversed_minor=0,
            seq=seq,
        )
        state.put_value(record)
        return record


    def _close(self, pool_id: str, seq: int) -> tuple[ValueRecord, dict[str, Any]]:
        """Split a pool at its close (EVENTS.md §7): stage 1 from its
        subscribers, streamed in order; stage 2 on the graph as it stands,
        with the fee in force.  The pool becomes a value of its total
        funding whose shares are S (fee included, so its `fee_bps` is 0),
        stored with the pool's explanation; and with it V(w) of the
        POOL_VECTORS_KEPT works the booked method gave most, as they were
        at the close (the dashboard draws the pool's flows through them)."""
        state = self.state
        pool = state.pool(pool_id)
        assert pool is not None and not pool.closed
        splitter = PoolSplitter()
        for subscriber, funded_minor, uses in state.pool_members(pool_id):
            splitter.add(subscriber, funded_minor, uses)
        splits = splitter.finish()
        assert splits.amount_minor == pool.funded_minor, "the pool's rows disagree with its total"
        vectors = _VectorsInChunks(state.graph, used_works(splits))
        booked, alternative = split_pool(splits, pool.method, vectors.vector, state.head.fee_bps)
        work = POOL_WORK_PREFIX + pool_id
        if booked.shares is not None:
            state.store_vector(work, 0, booked.shares, {})
        largest = heapq.nsmallest(POOL_VECTORS_KEPT, (w for w, units in booked.works.items() if units),
                                  key=lambda w: (-booked.works[w], w))
        split = {
            "method": booked.method,
            "works": booked.works,
            "alternative": {"method": alternative.method, "works": alternative.works,
                            "allocation": alternative.allocation},
        }
        state.explain_pool(pool_id, {**split, "vectors": {w: to_json_obj(v) for w, v in
                                                          state.graph.vectors(largest).items()}})
        state.put_pool(replace(pool, closed=True))
        record = ValueRecord(pool_id, work, splits.amount_minor, pool.currency, 0, 0, 0, seq)
        state.put_value(record)
        return record, split


class _VectorsInChunks:
    """V(w) for a pool's works, asked for once each in `order` (`split_pool`
    asks in `used_works` order): read (or computed) a chunk at a time, so a
    pool over 200 000 works holds one chunk of vectors, and the store
    answers a chunk with one query per table."""

    def __init__(self, graph: WorkGraph, order: list[str]) -> None:
        self.graph = graph
        self.order = order
        self.next = 0  # where the next chunk starts in `order`
        self.chunk: dict[str, ShareVector] = {}

    def vector(self, work: str) -> ShareVector:
        found = self.chunk.get(work)
        if found is None:
            assert self.order[self.next] == work, f"V({work!r}) asked out of order"
            chunk = self.order[self.next:self.next + POOL_VECTORS_CHUNK]
            self.chunk = self.graph.vectors(chunk)
            self.next += len(chunk)
            found = self.chunk[work]
        return found


# Works whose vectors a pool's close holds at once (see _VectorsInChunks).
POOL_VECTORS_CHUNK = 2_000
# Works whose V(w) is stored with a closed pool: its largest, the flows the
# dashboard draws through them (ledger.http.dashboard.pool_doc).
POOL_VECTORS_KEPT = 10


def keys_of(events: Iterable[dict[str, Any]]) -> PrefetchKeys:
    """Every row of the state that `events` name, by table: what a writer
    reads (`PlatformState.prefetch`) before it decides them."""
    keys = PrefetchKeys()
    for event in events:
        data = event["data"]
        kind = event["type"]
        if kind == "value.realized":
            keys.values.add(data["value"])
            keys.pools.add(data["value"])  # nor a value a pool's (EVENTS.md §7)
            keys.works.add(data["work"])
            keys.sold_works.add(data["work"])
        elif kind == "value.reversed":
            keys.values.add(data["value"])
            keys.pools.add(data["value"])  # an open pool is no value yet
            keys.reversed_values.add(data["value"])
        elif kind == "pool.opened":
            keys.pools.add(data["pool"])
            keys.values.add(data["pool"])  # a pool may not take a value's id
        elif kind in ("pool.funded", "pool.closed"):
            keys.pools.add(data["pool"])
        elif kind == "usage.recorded":
            keys.pools.add(data["pool"])
            keys.works.update(data["uses"])
        elif kind == "payout.issued":
            keys.payouts.add(data["payout"])
            keys.prosumers.add(data["prosumer"])
            keys.balances.add((data["prosumer"], data["currency"]))
        elif kind == "payout.returned":
            keys.payouts.add(data["payout"])
        elif kind == "prosumer.registered":
            keys.prosumers.add(data["prosumer"])
        elif kind in ("contribution.recorded", "output.composed", "work.reassigned"):
            keys.works.add(data["work"])
            keys.works.update(data.get("components", ()))
            keys.prosumers.update(data.get("authors", ()))
        elif kind in ("work.retracted", "work.reinstated"):
            keys.works.add(data["work"])
    return keys


__all__ = [
    "EARNED",
    "PAID",
    "PLATFORM",
    "REVERSED",
    "Applied",
    "PlatformFold",
    "ValueRecord",
    "keys_of",
]
