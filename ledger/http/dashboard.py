"""What the dashboard shows, computed from the log: where the value went.

For each platform, `FlowProjection` folds the log (the same
`projections.fold.PlatformFold` as everything else) and, at every
`value.realized`, splits the minor units the sale booked by the route they
took, in three columns:

    sold work  ──►  paying work  ──►  recipient

* the **sold work** is the work the value was realized on;
* the **paying work** is the work whose authors the units reached from it: the
  sold work itself (its own authors; all of a contribution), or one of its
  direct components (the remixed works; whatever flows on below a component
  is counted at that component), or `@fee` for the platform's fee.  A retracted
  work pays `@unattributed`;
* the **recipient** is a prosumer, `@platform` or `@unattributed`.

The recipient column is exact: each recipient receives exactly the units the
sale booked to it (`Applied.bookings`).  When one recipient is reached
through several paying works, its units are split among them by largest
remainder in proportion to its exact share through each (ties by work id),
so every link is an integer and every column sums to the value's amount.
The split depends only on the log, so it is deterministic.

Aggregates are kept per (UTC month of the sale's `at`, currency); the
picture of a period is built by keeping the largest nodes of each column and
folding the rest into "other …" nodes (`sankey`).  Reversals are not drawn:
they are reported as the period's `reversed` total.

Cost: the projection lives in the HTTP process, follows the log on request
(only the events since the last request are applied), and holds one fold
per platform (at most `FLOW_PLATFORMS_MAX`, least recently used dropped).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from math import lcm
from typing import Any

import orjson

from attribution import PLATFORM, UNATTRIBUTED, ShareVector, allocate
from ledger.storage.store import Store
from projections.fold import Applied, PlatformFold

# Platforms whose flow projection is kept in memory (each holds a fold).
FLOW_PLATFORMS_MAX = 4
# Per platform: route splits kept per (work, vector version).
SPLIT_CACHE_MAX = 10_000
# Nodes kept per column before the rest is folded into "other …".
TOP_SOLD = 8
TOP_PAYING = 10
TOP_RECIPIENTS = 12
FEE_NODE = "@fee"  # "@" cannot start a work id: no collision


@dataclass
class PeriodFlows:
    """Integer minor units of one (period, currency)."""

    realized: int = 0
    reversed: int = 0  # sum of value.reversed amounts booked in the period (positive)
    values: int = 0
    sold: Counter[str] = field(default_factory=Counter)
    sold_paying: Counter[tuple[str, str]] = field(default_factory=Counter)
    paying_recipient: Counter[tuple[str, str]] = field(default_factory=Counter)


# recipient -> how its units split among paying works: a ShareVector over
# paying work ids (exact weights, summing to 1).
RouteSplit = dict[str, ShareVector]


class FlowProjection:
    """The flows of one platform, following its log."""

    def __init__(self, platform: str) -> None:
        self.fold = PlatformFold(platform)
        self.periods: dict[tuple[str, str], PeriodFlows] = {}
        self._splits: OrderedDict[tuple[str, int], RouteSplit] = OrderedDict()
        self.lock = threading.Lock()

    def advance(self, store: Store) -> int:
        """Apply every event past the fold; returns the log position reached."""
        for stored in store.read_log(self.fold.platform, after_seq=self.fold.seq):
            event = orjson.loads(stored.state)
            applied = self.fold.apply(event, stored.originator_version)
            if event["type"] == "value.realized":
                self._sale(applied)
            elif event["type"] == "value.reversed":
                self._period(applied).reversed += event["data"]["amount"]
        return self.fold.seq

    def _period(self, applied: Applied) -> PeriodFlows:
        key = (applied.month, applied.currency)
        flows = self.periods.get(key)
        if flows is None:
            flows = self.periods[key] = PeriodFlows()
        return flows

    def _sale(self, applied: Applied) -> None:
        value = applied.value
        assert value is not None
        flows = self._period(applied)
        flows.realized += value.amount_minor
        flows.values += 1
        flows.sold[value.work] += value.amount_minor
        split = self._split(value.work, value.vector_version)
        for recipient, units in applied.bookings.items():
            if units == 0:
                continue
            if recipient == PLATFORM:
                routes = {FEE_NODE: units}
            else:
                routes = allocate(units, split[recipient])
            for paying, part in routes.items():
                if part:
                    flows.sold_paying[(value.work, paying)] += part
                    flows.paying_recipient[(paying, recipient)] += part

    def _split(self, work: str, version: int) -> RouteSplit:
        key = (work, version)
        hit = self._splits.get(key)
        if hit is not None:
            self._splits.move_to_end(key)
            return hit
        split = route_split(self.fold, work)
        self._splits[key] = split
        if len(self._splits) > SPLIT_CACHE_MAX:
            self._splits.popitem(last=False)
        return split


def route_split(fold: PlatformFold, work: str) -> RouteSplit:
    """For each recipient of flow(work, 1), its exact shares by paying work,
    normalised to sum to 1 (the graph as it is now, i.e. at the sale)."""
    g = fold.graph
    by_recipient: dict[str, dict[str, Fraction]] = {}

    def add(recipient: str, paying: str, share: Fraction) -> None:
        routes = by_recipient.setdefault(recipient, {})
        routes[paying] = routes.get(paying, Fraction(0)) + share

    if g.is_retracted(work):
        add(UNATTRIBUTED, work, Fraction(1))
    elif g.kind(work) == "contribution":
        for author in g.authors(work):
            add(author, work, Fraction(1))
    else:
        upstream = Fraction(g.upstream_bps(work) or 0, 10_000)
        authors = g.authors(work)
        author_weight = sum(authors.values())
        for author, weight in authors.items():
            if upstream < 1:
                add(author, work, (1 - upstream) * Fraction(weight, author_weight))
        components = g.components(work)
        component_weight = sum(components.values())
        for component, weight in components.items():
            reaching = upstream * Fraction(weight, component_weight)
            if reaching == 0:
                continue
            vector = g.vector(component)
            for recipient, numerator in vector.numerators.items():
                add(recipient, component, reaching * Fraction(numerator, vector.denominator))
    return {recipient: _normalised(routes) for recipient, routes in by_recipient.items()}


def _normalised(routes: dict[str, Fraction]) -> ShareVector:
    total = sum(routes.values())
    shares = {paying: share / total for paying, share in routes.items() if share}
    denominator = lcm(*(s.denominator for s in shares.values()))
    return ShareVector(denominator, {p: s.numerator * (denominator // s.denominator) for p, s in shares.items()})


class FlowCache:
    """Flow projections of the most recently asked platforms (bounded)."""

    def __init__(self, store: Store, max_platforms: int = FLOW_PLATFORMS_MAX) -> None:
        self.store = store
        self.max_platforms = max_platforms
        self._projections: OrderedDict[str, FlowProjection] = OrderedDict()
        self._lock = threading.Lock()

    def flows(self, platform: str, period: str | None, currency: str | None) -> dict[str, Any]:
        """The flow picture of a period (default: the latest period with
        sales, in its currency with the most value), at the log's head."""
        with self._lock:
            projection = self._projections.get(platform)
            if projection is None:
                projection = self._projections[platform] = FlowProjection(platform)
                if len(self._projections) > self.max_platforms:
                    self._projections.popitem(last=False)
            self._projections.move_to_end(platform)
        with projection.lock:
            seq = projection.advance(self.store)
            return flows_doc(platform, seq, projection.periods, period, currency)


def flows_doc(platform: str, seq: int, periods: dict[tuple[str, str], PeriodFlows],
              period: str | None, currency: str | None) -> dict[str, Any]:
    available = [
        {"period": p, "currency": c, "realized": f.realized, "values": f.values}
        for (p, c), f in sorted(periods.items())
    ]
    candidates = [a for a in available if (period is None or a["period"] == period)
                  and (currency is None or a["currency"] == currency)]
    if period is None and candidates:
        latest = max(a["period"] for a in candidates)
        candidates = [a for a in candidates if a["period"] == latest]
    chosen = max(candidates, key=lambda a: (a["realized"], a["currency"]), default=None)
    if chosen is None:
        p, c, flows = period, currency, PeriodFlows()
    else:
        p, c = chosen["period"], chosen["currency"]
        flows = periods[(p, c)]
    nodes, links = sankey(flows)
    return {
        "platform": platform, "seq": seq, "period": p, "currency": c,
        "realized": flows.realized, "reversed": flows.reversed, "values": flows.values,
        "nodes": nodes, "links": links, "available": available,
    }


def _top(totals: Counter[str], keep: int, always: tuple[str, ...] = ()) -> set[str]:
    ranked = sorted((k for k in totals if k not in always), key=lambda k: (-totals[k], k))
    return set(ranked[:keep]) | {k for k in always if k in totals}


def sankey(flows: PeriodFlows) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes (id, label, column, kind, amount) and links (source, target,
    amount) of the picture; columns 0 sold works, 1 paying works, 2 recipients."""
    paying_totals: Counter[str] = Counter()
    recipient_totals: Counter[str] = Counter()
    for (paying, recipient), units in flows.paying_recipient.items():
        paying_totals[paying] += units
        recipient_totals[recipient] += units
    sold_keep = _top(flows.sold, TOP_SOLD)
    paying_keep = _top(paying_totals, TOP_PAYING, always=(FEE_NODE,))
    recipient_keep = _top(recipient_totals, TOP_RECIPIENTS, always=(PLATFORM, UNATTRIBUTED))

    def sold_node(work: str) -> str:
        return f"s:{work}" if work in sold_keep else "s:*"

    def paying_node(work: str) -> str:
        return f"p:{work}" if work in paying_keep else "p:*"

    def recipient_node(account: str) -> str:
        return f"r:{account}" if account in recipient_keep else "r:*"

    left: Counter[tuple[str, str]] = Counter()
    for (sold, paying), units in flows.sold_paying.items():
        left[(sold_node(sold), paying_node(paying))] += units
    right: Counter[tuple[str, str]] = Counter()
    for (paying, recipient), units in flows.paying_recipient.items():
        right[(paying_node(paying), recipient_node(recipient))] += units

    amounts: Counter[str] = Counter()
    for (source, _), units in left.items():
        amounts[source] += units
    for (paying, target), units in right.items():
        amounts[paying] += units
        amounts[target] += units
    nodes = [_node(node_id, amounts[node_id]) for node_id in amounts]
    nodes.sort(key=lambda n: (n["column"], n["id"].endswith(":*"), -n["amount"], n["id"]))
    links = [{"source": s, "target": t, "amount": units} for (s, t), units in (*left.items(), *right.items())]
    links.sort(key=lambda link: (link["source"], -link["amount"], link["target"]))
    return nodes, links


_OTHER_LABELS = {"s": "other sold works", "p": "other works", "r": "other prosumers"}
_COLUMNS = {"s": 0, "p": 1, "r": 2}


def _node(node_id: str, amount: int) -> dict[str, Any]:
    prefix, name = node_id.split(":", 1)
    if name == "*":
        label, kind = _OTHER_LABELS[prefix], "other"
    elif prefix == "p" and name == FEE_NODE:
        label, kind = "platform fee", "fee"
    elif prefix == "r" and name.startswith("@"):
        label, kind = name, "system"
    else:
        label, kind = name, {"s": "sold", "p": "work", "r": "prosumer"}[prefix]
    return {"id": node_id, "label": label, "column": _COLUMNS[prefix], "kind": kind, "amount": amount}


# -- the other panels ---------------------------------------------------------


def top_earners(store: Store, platform: str, period: str, currency: str, limit: int) -> list[dict[str, Any]]:
    """The prosumers who earned most in a period and currency (from the
    statements read model), with their period figures."""
    rows = store.query(
        "SELECT account, earned, reversed, paid FROM peerledger_statements "
        "WHERE platform = ? AND period = ? AND currency = ?",
        (platform, period, currency),
    )
    # Money is decimal TEXT on SQLite: rank in Python, exactly.
    figures = [(int(e), a, int(r), int(p)) for a, e, r, p in rows if not a.startswith("@")]
    figures.sort(key=lambda f: (-f[0], f[1]))
    return [{"prosumer": a, "earned": e, "reversed": r, "paid": p, "net": e + r - p}
            for e, a, r, p in figures[:limit]]


# Only this many of the newest events and rejects are looked at for the rate.
RATE_SCAN_MAX_ROWS = 200_000


def ingest_rate(store: Store, platform: str, since: str) -> dict[str, dict[str, int]]:
    """Accepted events and rejects per minute (ledger time, "YYYY-MM-DDTHH:MM")
    since the instant `since`, from the newest RATE_SCAN_MAX_ROWS of each."""
    head = store.head(platform)
    accepted = store.query(
        "SELECT substr(accepted_at, 1, 16), COUNT(*) FROM peerledger_event_ids "
        "WHERE platform = ? AND seq > ? AND accepted_at >= ? GROUP BY substr(accepted_at, 1, 16)",
        (platform, head - RATE_SCAN_MAX_ROWS, since),
    )
    newest = store.query("SELECT MAX(reject_id) FROM peerledger_rejects WHERE platform = ?", (platform,))
    rejected = store.query(
        "SELECT substr(received_at, 1, 16), COUNT(*) FROM peerledger_rejects "
        "WHERE platform = ? AND reject_id > ? AND received_at >= ? GROUP BY substr(received_at, 1, 16)",
        (platform, int(newest[0][0] or 0) - RATE_SCAN_MAX_ROWS, since),
    )
    return {"accepted": {m: int(n) for m, n in accepted}, "rejected": {m: int(n) for m, n in rejected}}
