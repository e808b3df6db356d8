"""The deterministic fold of one platform's log.

`PlatformFold` applies accepted events, in log order, to an in-memory state:
the registered prosumers, the work graph, every realized value with its fixed
share vector, the payouts, the fee in force, and the balances and statement
figures per account.  It is the single place where the rules of EVENTS.md §3
turn events into bookings.  Everything else folds through it:

* the write side (`ledger.ingest`) asks the fold's *current* state whether an
  offered event may be accepted, then applies it, so decisions are taken in
  log order on exactly the state the log implies;
* the read models (`projections.views`) are the fold's figures written out;
* `verify` and audits replay the stored log through a fresh fold.

The fold trusts its input: it is only ever given events that the schema
accepted and the rules allowed (`ledger.rules`).  It asserts the invariants
it relies on rather than re-checking ledger rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from projections.periods import utc_month
from attribution import (
    PLATFORM,
    ShareVector,
    WorkGraph,
    allocate,
    reversal_bookings,
)

EARNED = "earned"
REVERSED = "reversed"
PAID = "paid"


@dataclass(frozen=True, slots=True)
class Booking:
    """One signed movement of minor units on (account, currency).

    `kind` says which balance column it lands in: earned (value.realized),
    reversed (value.reversed, usually negative) or paid (payout.issued).
    A booking of 0 units is still a booking: it gives the account a row.
    """

    account: str
    currency: str
    kind: str
    amount_minor: int


@dataclass(slots=True)
class ValueRecord:
    """A realized value: its share vector is fixed when it is realized."""

    value: str
    work: str
    amount_minor: int
    currency: str
    fee_bps: int
    shares: ShareVector
    vector_version: int
    reversed_minor: int
    seq: int


@dataclass(slots=True)
class Figures:
    """earned, reversed and paid of one (account, currency), in minor units."""

    earned: int = 0
    reversed: int = 0
    paid: int = 0

    @property
    def balance(self) -> int:
        return self.earned + self.reversed - self.paid

    def add(self, kind: str, amount_minor: int) -> None:
        if kind == EARNED:
            self.earned += amount_minor
        elif kind == REVERSED:
            self.reversed += amount_minor
        else:
            assert kind == PAID, kind
            self.paid += amount_minor


@dataclass(slots=True)
class Applied:
    """What applying one event changed, for the read models."""

    seq: int
    month: str  # statement period: UTC month of the event's `at`
    bookings: list[Booking]
    value: ValueRecord | None = None  # the value created or reversed

    def effect_hash(self) -> bytes:
        """A digest of this event's bookings, recorded per seq when the event
        is appended, so a replay can name the first seq whose effect differs."""
        h = hashlib.blake2b(digest_size=16)
        for b in self.bookings:
            h.update(f"{b.account}\x1f{b.currency}\x1f{b.kind}\x1f{b.amount_minor}\x1e".encode())
        return h.digest()


@dataclass
class PlatformFold:
    """The state implied by one platform's log up to `seq`."""

    platform: str
    seq: int = 0
    fee_bps: int = 0
    prosumers: set[str] = field(default_factory=set)
    graph: WorkGraph = field(default_factory=WorkGraph)
    values: dict[str, ValueRecord] = field(default_factory=dict)
    payouts: set[str] = field(default_factory=set)
    balances: dict[tuple[str, str], Figures] = field(default_factory=dict)
    # (account, "YYYY-MM", currency) -> figures booked in that UTC month
    statements: dict[tuple[str, str, str], Figures] = field(default_factory=dict)
    # A ShareVector with the fee applied is shared by every sale of the same
    # work at the same graph state and fee: one object, not one per value.
    _fee_vectors: dict[tuple[str, int, int], ShareVector] = field(
        default_factory=dict, repr=False
    )

    # -- queries the write side asks ---------------------------------------

    def balance_minor(self, account: str, currency: str) -> int:
        figures = self.balances.get((account, currency))
        return figures.balance if figures is not None else 0

    # -- the fold ----------------------------------------------------------

    def apply(self, event: dict[str, Any], seq: int) -> Applied:
        """Apply one accepted event at log position `seq`."""
        assert seq == self.seq + 1, f"log order broken: {seq} after {self.seq}"
        assert event["platform"] == self.platform
        data = event["data"]
        kind = event["type"]
        applied = Applied(seq=seq, month=utc_month(event["at"]), bookings=[])
        if kind == "value.realized":
            applied.value, applied.bookings = self._realize(data, seq)
        elif kind == "value.reversed":
            applied.value, applied.bookings = self._reverse(data)
        elif kind == "payout.issued":
            self.payouts.add(data["payout"])
            applied.bookings = [
                Booking(data["prosumer"], data["currency"], PAID, data["amount"])
            ]
        elif kind == "prosumer.registered":
            self.prosumers.add(data["prosumer"])
        elif kind == "contribution.recorded":
            self.graph.add_contribution(data["work"], data["authors"])
        elif kind == "output.composed":
            self.graph.add_output(
                data["work"],
                data["components"],
                data.get("authors", {}),
                data.get("upstream_bps", 10_000),
            )
        elif kind == "policy.set":
            self.fee_bps = data["platform_fee_bps"]
        elif kind == "work.retracted":
            self.graph.retract(data["work"])
        elif kind == "work.reinstated":
            self.graph.reinstate(data["work"])
        elif kind == "work.reassigned":
            self.graph.reassign(data["work"], data["authors"])
        else:  # the schema admits exactly the ten types
            raise AssertionError(f"unknown event type {kind!r}")
        self._book(applied.bookings, applied.month)
        self.seq = seq
        return applied

    def _shares(self, work: str) -> tuple[ShareVector, int]:
        version = self.graph.vector_version(work)
        key = (work, version, self.fee_bps)
        shares = self._fee_vectors.get(key)
        if shares is None:
            shares = self.graph.vector(work).with_fee(self.fee_bps)
            if len(self._fee_vectors) >= FEE_VECTOR_CACHE_MAX:
                self._fee_vectors.clear()
            self._fee_vectors[key] = shares
        return shares, version

    def _realize(self, data: dict[str, Any], seq: int) -> tuple[ValueRecord, list[Booking]]:
        shares, version = self._shares(data["work"])
        amount_minor = data["amount"]
        currency = data["currency"]
        record = ValueRecord(
            value=data["value"],
            work=data["work"],
            amount_minor=amount_minor,
            currency=currency,
            fee_bps=self.fee_bps,
            shares=shares,
            vector_version=version,
            reversed_minor=0,
            seq=seq,
        )
        self.values[record.value] = record
        allocation = allocate(amount_minor, shares)
        return record, [
            Booking(account, currency, EARNED, units)
            for account, units in allocation.items()
        ]

    def _reverse(self, data: dict[str, Any]) -> tuple[ValueRecord, list[Booking]]:
        record = self.values[data["value"]]
        reversal_minor = data["amount"]
        assert record.reversed_minor + reversal_minor <= record.amount_minor
        deltas = reversal_bookings(record.shares, record.reversed_minor, reversal_minor)
        record.reversed_minor += reversal_minor
        return record, [
            Booking(account, record.currency, REVERSED, units)
            for account, units in deltas.items()
        ]

    def _book(self, bookings: Iterable[Booking], month: str) -> None:
        for b in bookings:
            figures = self.balances.get((b.account, b.currency))
            if figures is None:
                figures = self.balances[(b.account, b.currency)] = Figures()
            figures.add(b.kind, b.amount_minor)
            key = (b.account, month, b.currency)
            period = self.statements.get(key)
            if period is None:
                period = self.statements[key] = Figures()
            period.add(b.kind, b.amount_minor)


# Sales of one work at one graph state and fee share one vector object; the
# bound keeps a platform with millions of distinct (work, version, fee) keys
# from growing the cache without limit (vectors are rebuilt on a miss).
FEE_VECTOR_CACHE_MAX = 100_000

__all__ = [
    "EARNED",
    "PAID",
    "PLATFORM",
    "REVERSED",
    "Applied",
    "Booking",
    "Figures",
    "PlatformFold",
    "ValueRecord",
]
