"""The deterministic fold of one platform's log.

`PlatformFold` applies accepted events, in log order, to an in-memory state:
the registered prosumers, the work graph, every realized value with its fixed
share vector, the payouts, the fee in force, and the balances and statement
figures per account.  It is the single place where the rules of EVENTS.md §3
turn events into bookings.  Everything else folds through it:

* the write side (`ledger.ingest.ingestor`) asks the fold's *current* state whether an
  offered event may be accepted, then applies it, so decisions are taken in
  log order on exactly the state the log implies;
* the read models (`projections.views`) are the fold's figures written out;
* `verify` and audits replay the stored log through a fresh fold.

The fold trusts its input: it is only ever given events that the schema
accepted and the rules allowed (`ledger.contract.rules`).  It asserts the invariants
it relies on rather than re-checking ledger rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from attribution import (
    PLATFORM,
    ShareVector,
    WorkGraph,
    allocate,
    reversal_bookings,
)
from projections.periods import utc_month

EARNED = "earned"
REVERSED = "reversed"
PAID = "paid"


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


NO_BOOKINGS: dict[str, int] = {}


@dataclass(slots=True)
class Applied:
    """What applying one event booked, for the read models.

    An event books into one column (`kind`: earned for value.realized,
    reversed for value.reversed, usually negative, paid for payout.issued)
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

    def effect_hash(self) -> bytes:
        """A digest of this event's bookings, recorded per seq when the event
        is appended, so a replay can name the first seq whose effect differs."""
        if not self.bookings:
            return EMPTY_EFFECT
        # Bookings are in account order and within ±(2^63 - 1): orjson's
        # output is a faithful, fast serialisation of them.
        return hashlib.blake2b(orjson.dumps((self.kind, self.currency, self.bookings)), digest_size=16).digest()


EMPTY_EFFECT = hashlib.blake2b(b"", digest_size=16).digest()


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
        applied = Applied(seq, utc_month(event["at"]))
        if kind == "value.realized":
            record = applied.value = self._realize(data, seq)
            applied.kind, applied.currency = EARNED, record.currency
            applied.bookings = allocate(record.amount_minor, record.shares)
        elif kind == "value.reversed":
            record = applied.value = self.values[data["value"]]
            reversal_minor = data["amount"]
            assert record.reversed_minor + reversal_minor <= record.amount_minor
            applied.kind, applied.currency = REVERSED, record.currency
            applied.bookings = reversal_bookings(record.shares, record.reversed_minor, reversal_minor)
            record.reversed_minor += reversal_minor
        elif kind == "payout.issued":
            self.payouts.add(data["payout"])
            applied.kind, applied.currency = PAID, data["currency"]
            applied.bookings = {data["prosumer"]: data["amount"]}
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
        if applied.bookings:
            self._book(applied)
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

    def _realize(self, data: dict[str, Any], seq: int) -> ValueRecord:
        shares, version = self._shares(data["work"])
        record = ValueRecord(
            value=data["value"],
            work=data["work"],
            amount_minor=data["amount"],
            currency=data["currency"],
            fee_bps=self.fee_bps,
            shares=shares,
            vector_version=version,
            reversed_minor=0,
            seq=seq,
        )
        self.values[record.value] = record
        return record

    def _book(self, applied: Applied) -> None:
        # One event books one column of one currency: pick the column once,
        # then it is two dict lookups and an add per account.
        column = applied.kind
        assert column in (EARNED, REVERSED, PAID), column
        currency, month = applied.currency, applied.month
        balances, statements = self.balances, self.statements
        for account, units in applied.bookings.items():
            figures = balances.get((account, currency))
            if figures is None:
                figures = balances[(account, currency)] = Figures()
            period = statements.get((account, month, currency))
            if period is None:
                period = statements[(account, month, currency)] = Figures()
            if column == EARNED:
                figures.earned += units
                period.earned += units
            elif column == REVERSED:
                figures.reversed += units
                period.reversed += units
            else:
                figures.paid += units
                period.paid += units


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
    "Figures",
    "PlatformFold",
    "ValueRecord",
]
