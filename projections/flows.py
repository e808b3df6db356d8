"""The dashboard's flows: where each sale's minor units went, by route.

A sale's units are split in three columns:

    sold work  ──►  paying work  ──►  recipient

* the **sold work** is the work the value was realized on;
* the **paying work** is the work whose authors the units reached from it:
  the sold work itself (its own authors; all of a contribution), or one of
  its direct components (whatever flows on below a component counts at that
  component), or `@fee` for the platform's fee.  A retracted work pays
  `@unattributed`;
* the **recipient** is a prosumer, `@platform` or `@unattributed`.

The recipient column is exact: each recipient receives exactly the units
the sale booked to it (the fold's `allocate` of the amount by the value's
share vector with its fee).  When one recipient is reached through several
paying works, its units are split among them by largest remainder in
proportion to its exact share through each (ties by work id), so every link
is an integer and every column sums to the value's amount.  The routes of a
(work, vector version) are fixed at its first sale and stored with its
explanation (`projections.explain.work_routes`), so the split depends only
on the log.

A closed usage pool (EVENTS.md §7) counts like a sale of its total funding
in the month of its close: its sold node is the pool (`@pool:<id>`, the
work of its value) and its one paying node is the pool's works taken
together (`@pool:<id>` again, in the middle column), since its shares mix
every work its usage names; each recipient gets exactly what the close
booked.  Which works the money went to, and what the other method would
have given, is the pool's own view (`ledger.http.dashboard.pool_doc`).

`FlowDeltas` adds up what a run of events contributes per (UTC month of the
event, currency): totals, per-node units and per-link units.  The shell
(`ledger.ingest.projector`) adds the deltas to stored rows.  Reversals are
not routed: they count in their month's `reversed` total.

Worked example (EVENTS.md): 1001 on o1 = {c1: 1, c2: 1} by carol passing
4000 bps upstream, fee 1000: bookings @platform 100, carol 601, alice 180,
bob 120.  carol's share comes 3/5 through o1 (her own cut) and 1/15 through
c2 (as one of its authors): her 601 units split 541 (o1) and 60 (c2).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from attribution import PLATFORM, ShareVector, allocate

FEE_NODE = "@fee"  # "@" cannot start a work id: no collision
# Node kinds (the three columns) and link kinds (the two gaps between them).
SOLD = "sold"
PAYING = "paying"
RECIPIENT = "recipient"
SOLD_PAYING = "sold_paying"
PAYING_RECIPIENT = "paying_recipient"

# recipient -> how its units split among paying works: a ShareVector over
# paying work ids (exact weights, summing to 1).
RouteSplit = dict[str, ShareVector]

PeriodKey = tuple[str, str]  # (UTC month "YYYY-MM", currency)
NodeKey = tuple[str, str, str, str]  # (month, currency, node kind, node)
LinkKey = tuple[str, str, str, str, str]  # (month, currency, link kind, source, target)


def route_split(routes: dict[str, dict[str, str]]) -> RouteSplit:
    """The stored routes of a (work, version) (`work_routes`: recipient ->
    paying work -> hex weight) as share vectors, one per recipient."""
    split: RouteSplit = {}
    for recipient, weights in routes.items():
        numerators = {paying: int(text, 16) for paying, text in weights.items()}
        split[recipient] = ShareVector(sum(numerators.values()), numerators)
    return split


def pool_route_split(pool_work: str, shares: ShareVector) -> RouteSplit:
    """The routes of a closed pool's value (`pool_work` is its `@pool:<id>`):
    every recipient is paid through the pool's works taken together."""
    return {recipient: ShareVector(1, {pool_work: 1}) for recipient in shares.recipients() if recipient != PLATFORM}


OTHERS = "*"  # the works, or the recipients, a pool's picture gathers into one node


def pool_links(amount_minor: int, shares: ShareVector, allocation: Mapping[str, int], works: Mapping[str, int],
               vectors: Mapping[str, ShareVector], recipients: Sequence[str]) -> dict[tuple[str, str], int]:
    """A closed pool's money from its works to its recipients, in whole units:
    (work, recipient) -> units, for the works of `vectors` (each with its
    V(w) at the close) and the `recipients` named, every other work and
    every other recipient gathered into `OTHERS`.

    Exactly, X = `amount_minor` reaches recipient r through work w as
    E(w, r) = m(w) · f for @platform and m(w) · (1 − f) · V(w)[r] for the
    others (f = S[@platform], m = `works`, stage 1), so each work passes on
    m(w) and each recipient receives X · S[r].  The picture keeps what was
    booked: each named recipient's `allocation`, and the others' X less
    theirs, is split over the works by largest remainder in proportion to
    E (ties by work id, `OTHERS` first), as a sale's units are split over
    its paying works.  Every link is a non-negative integer, each
    recipient's links sum to its units and all of them to X; a work's
    links sum to m(w) give or take the roundings.

    Cost: O(len(vectors) · len(recipients)) Fractions: a picture's nodes.
    """
    f = shares.share(PLATFORM)
    x = Fraction(amount_minor)
    exact: dict[tuple[str, str], Fraction] = {}
    for work, vector in vectors.items():
        units = works[work]
        for r in recipients:
            exact[(work, r)] = units * f if r == PLATFORM else units * (1 - f) * vector.share(r)
        exact[(work, OTHERS)] = units - sum(exact[(work, r)] for r in recipients)
    for r in recipients:
        exact[(OTHERS, r)] = x * shares.share(r) - sum(exact[(w, r)] for w in vectors)
    rest = x - sum(works[w] for w in vectors)  # the other works' money
    exact[(OTHERS, OTHERS)] = rest - sum(exact[(OTHERS, r)] for r in recipients)
    columns = {r: allocation[r] for r in recipients}
    columns[OTHERS] = amount_minor - sum(columns.values())
    links: dict[tuple[str, str], int] = {}
    for r, units in columns.items():
        weights = {w: exact[(w, r)] for w in (OTHERS, *vectors) if exact[(w, r)] > 0}
        if not units:
            continue
        common = math.lcm(*(e.denominator for e in weights.values()))
        numerators = {w: int(e * common) for w, e in weights.items()}
        for w, part in allocate(units, ShareVector(sum(numerators.values()), numerators)).items():
            if part:
                links[(w, r)] = part
    return links


def sale_routes(amount_minor: int, shares: ShareVector, split: RouteSplit) -> Iterator[tuple[str, str, int]]:
    """(paying work, recipient, units) of a sale of `amount_minor` with
    `shares` (the value's vector with its fee) and the sold work's `split`;
    only positive units, summing to `amount_minor`."""
    for recipient, units in allocate(amount_minor, shares).items():
        if units == 0:
            continue
        routes = {FEE_NODE: units} if recipient == PLATFORM else allocate(units, split[recipient])
        for paying, part in routes.items():
            if part:
                yield paying, recipient, part


@dataclass
class FlowDeltas:
    """What a run of events adds to the flows: per (month, currency) the
    [realized, reversed, sales] totals, and units per node and per link.
    Memory is what the run touched: the caller flushes it every few
    thousand events."""

    totals: dict[PeriodKey, list[int]] = field(default_factory=dict)
    nodes: Counter[NodeKey] = field(default_factory=Counter)
    links: Counter[LinkKey] = field(default_factory=Counter)

    def _totals(self, month: str, currency: str) -> list[int]:
        totals = self.totals.get((month, currency))
        if totals is None:
            totals = self.totals[(month, currency)] = [0, 0, 0]
        return totals

    def realized(self, month: str, currency: str, work: str, amount_minor: int, shares: ShareVector,
                 split: RouteSplit) -> None:
        """A value of `amount_minor` realized on `work`, booked by `shares`."""
        totals = self._totals(month, currency)
        totals[0] += amount_minor
        totals[2] += 1
        nodes, links = self.nodes, self.links
        nodes[(month, currency, SOLD, work)] += amount_minor
        for paying, recipient, units in sale_routes(amount_minor, shares, split):
            nodes[(month, currency, PAYING, paying)] += units
            nodes[(month, currency, RECIPIENT, recipient)] += units
            links[(month, currency, SOLD_PAYING, work, paying)] += units
            links[(month, currency, PAYING_RECIPIENT, paying, recipient)] += units

    def reversed(self, month: str, currency: str, amount_minor: int) -> None:
        """A reversal of `amount_minor` (positive) booked in `month`."""
        self._totals(month, currency)[1] += amount_minor


__all__ = [
    "FEE_NODE",
    "OTHERS",
    "PAYING",
    "PAYING_RECIPIENT",
    "RECIPIENT",
    "SOLD",
    "SOLD_PAYING",
    "FlowDeltas",
    "RouteSplit",
    "pool_links",
    "pool_route_split",
    "route_split",
    "sale_routes",
]
