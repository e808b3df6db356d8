"""Insights: does recombination create value, and is it shared fairly?

`InsightsFold` is a read model like the others: it folds a platform's
canonical events in log order, so it can be rebuilt from the log at any time
and two rebuilds give the same report, figure for figure.  It drives the
ledger's own fold (`PlatformFold`, the one place where EVENTS.md §3 books
money) over a `PlatformState`, whose rows live in a database (the shell
replays the log into a scratch one), and observes what each event did; it
never re-derives a booking.  `report()` turns what it observed, and the
state's statements, into a JSON-ready document.  Definitions, with a worked
example, are in docs/insights.md; in short:

Recombination dividend (exact)
    A value of A minor units realized on work w at fee f is split into
    ``A·f`` for ``@platform`` and ``A·(1 − f)·flow(w, 1)``.  We decompose
    flow(w, 1) by **depth**: a path of EVENTS.md §3 ``flow`` goes from w
    down through components; its depth is the number of component edges
    it followed (w itself is depth 0, w's components depth 1, their
    components depth 2, …).  ``by_depth[d]`` is the share that reaches
    *authors* along paths of depth d; a work reached along paths of
    several depths contributes to each depth with the mass of those paths,
    so the decomposition is exact and sums, with ``unattributed`` (mass
    entering retracted works), to 1.  For a sale of an output, depth 0 is
    its own authors' cut and depths >= 1 are the **recombination dividend**:
    value that reached earlier works only because they were recombined.  A
    sale of a contribution is **direct** value.  Reversals subtract
    ``R·(1 − f)·by_depth`` of the value's split at realize time, in the
    month of the reversal, as statements do.

Reuse
    uses(work) = the number of outputs that list the work as a component.
    An output's depth (its *height*) is 1 + the largest depth of its
    components, a contribution's is 0.

Network effect
    A prosumer is active in a month when an event with its ``at`` in that
    month names them as an author (contribution.recorded, output.composed,
    work.reassigned).  Per currency we fit ln(value realized per active
    prosumer) = a + b·ln(active prosumers) by least squares over the months
    where both are positive; b is the elasticity, with a 95 % confidence
    interval from Student's t.  Floats here are statistics, not money.

Fairness and capture
    take rate = ``@platform``'s net bookings / net value realized (exact);
    Gini and top 1 % / 10 % shares of prosumers' net earnings (earned +
    reversed bookings), over every registered prosumer; ``@unattributed``'s
    net bookings.

Money stays exact (int minor units or Fractions) and is shown rounded
down to minor units with the exact remainder; this package never imports
`ledger`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from attribution import (
    PLATFORM,
    PRO_RATA,
    UNATTRIBUTED,
    USER_CENTRIC,
    Work,
    fraction_str,
)
from attribution.graph import CONTRIBUTION, OUTPUT
from attribution.shares import BPS_PER_UNIT
from projections.fold import Applied, PlatformFold
from projections.state import Figures, PlatformState

# Depths 0 .. DEPTHS_LISTED - 1 are listed one by one in reports; deeper
# flows (and output heights) are summed into one "DEPTHS_LISTED+" bucket so
# a remix chain thousands deep still gives a report of bounded size.
DEPTHS_LISTED = 10
# Longest lists in a report: top reused works.
TOP_N = 10
# Lorenz curve: earnings share at 0 %, 1 %, …, 100 % of prosumers.
LORENZ_STEPS = 100
# Decimal places of a ratio's display text (the exact fraction is beside it).
RATIO_DECIMALS = 6
# Depth splits of sold works, kept to speed up later sales (a cached split
# is a leaf of a later propagation); bounded by the Fractions they hold.
SPLIT_CACHE_MAX_ENTRIES = 1_000_000
# Works read from the state at once when a report counts reuse.
REUSE_READ_WORKS = 1_000
# The two ways of splitting a usage pool, in the order reports list them.
POOL_METHODS = (PRO_RATA, USER_CENTRIC)

ZERO = Fraction(0)


# -- exact flow by depth ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepthSplit:
    """flow(work, 1) of EVENTS.md §3 by path depth, before the platform fee.

    Integers over one denominator D, like a ShareVector (and for the same
    reason: no gcd per step):
    ``numerators[d] / D`` is the share reaching authors along paths of d
    component edges, ``unattributed / D`` the share entering retracted
    works; they sum to exactly D.  ``sold_kind``: whether the split work is
    a contribution (everything at depth 0: direct value) or an output.

    Worked example of EVENTS.md: o1 = {c1: 1, c2: 1}, authors {carol: 1},
    upstream 4000: shares (3/5, 2/5) (carol's cut; then alice, bob and
    carol via c1 and c2), nothing unattributed.
    """

    denominator: int
    numerators: tuple[int, ...]
    unattributed: int
    sold_kind: str

    def __post_init__(self) -> None:
        assert sum(self.numerators) + self.unattributed == self.denominator, "a split must sum to 1"

    def shares(self) -> tuple[Fraction, ...]:
        """The share at each depth, reduced."""
        return tuple(Fraction(n, self.denominator) for n in self.numerators)

    def unattributed_share(self) -> Fraction:
        return Fraction(self.unattributed, self.denominator)


@dataclass(frozen=True, slots=True)
class PoolSplit:
    """A closed pool's S (EVENTS.md §7) by bucket, integers over one denominator.

    S = {@platform: f} + (1 − f) · Σ_w (m(w) / X) · V(w): the fee, then each
    work's V(w) by depth, weighted by what stage 1 gave it.  Contributions'
    authors are ``direct``, outputs' flows go by depth into ``numerators``,
    retracted works to ``unattributed``; everything after the fee goes to
    ``unattributed`` when nothing was used.  The parts sum to exactly
    ``denominator``.

    Worked example (EVENTS.md §7, pro_rata): m = {o1: 10, c2: 91} of X = 101
    at fee 1000; V(o1) is 1/2 at depth 0 (carol) and 1/2 at depth 1 (alice),
    c2 a contribution: platform 1/10, direct 9/10 · 91/101, depth 0 and depth 1
    9/10 · 5/101 each.
    """

    denominator: int
    platform: int
    unattributed: int
    direct: int
    numerators: tuple[int, ...]

    def __post_init__(self) -> None:
        assert self.platform + self.unattributed + self.direct + sum(self.numerators) == self.denominator, \
            "a pool's split must sum to 1"

    def platform_share(self) -> Fraction:
        return Fraction(self.platform, self.denominator)

    def unattributed_share(self) -> Fraction:
        return Fraction(self.unattributed, self.denominator)


def _add_at(target: list[Any], depth: int, amount: Any) -> None:
    """target[depth] += amount, growing the list with zeros (ints or Fractions alike)."""
    while len(target) <= depth:
        target.append(0)
    target[depth] += amount


@dataclass(slots=True)
class FlowTotals:
    """Exact flows of one (month, currency), or of a whole window.

    Every value realized adds, every reversal subtracts (in its own month),
    so ``realized_minor - reversed_minor == platform + unattributed + direct
    + sum(by_depth)`` holds exactly: every minor unit is somewhere.
    ``by_depth`` is for sales of outputs only (depth 0: the output's own
    authors); ``direct`` is sales of contributions to their authors.
    """

    realized_minor: int = 0
    reversed_minor: int = 0
    values_realized: int = 0
    platform: Fraction = ZERO
    unattributed: Fraction = ZERO
    direct: Fraction = ZERO
    by_depth: list[Fraction] = field(default_factory=list)

    def book(self, signed_minor: int, fee_bps: int, split: DepthSplit | PoolSplit) -> None:
        """Add ``signed_minor`` (net of reversals) of values realized at ``fee_bps`` with ``split``
        (a closed pool: its own split, the fee inside it)."""
        if isinstance(split, PoolSplit):
            over = split.denominator
            self.platform += Fraction(signed_minor * split.platform, over)
            self.unattributed += Fraction(signed_minor * split.unattributed, over)
            self.direct += Fraction(signed_minor * split.direct, over)
            for depth, numerator in enumerate(split.numerators):
                if numerator:
                    _add_at(self.by_depth, depth, Fraction(signed_minor * numerator, over))
            return
        self.platform += Fraction(signed_minor * fee_bps, BPS_PER_UNIT)
        # The rest, (1 - f) of the amount, over the split's denominator:
        # one Fraction (one gcd) per depth.
        rest = signed_minor * (BPS_PER_UNIT - fee_bps)
        over = BPS_PER_UNIT * split.denominator
        self.unattributed += Fraction(rest * split.unattributed, over)
        if split.sold_kind == CONTRIBUTION:
            if split.numerators:  # empty when the contribution was retracted
                self.direct += Fraction(rest * split.numerators[0], over)
            return
        for depth, numerator in enumerate(split.numerators):
            if numerator:
                _add_at(self.by_depth, depth, Fraction(rest * numerator, over))

    def merge(self, other: FlowTotals) -> None:
        self.realized_minor += other.realized_minor
        self.reversed_minor += other.reversed_minor
        self.values_realized += other.values_realized
        self.platform += other.platform
        self.unattributed += other.unattributed
        self.direct += other.direct
        for depth, amount in enumerate(other.by_depth):
            _add_at(self.by_depth, depth, amount)

    @property
    def net_minor(self) -> int:
        return self.realized_minor - self.reversed_minor

    @property
    def dividend(self) -> Fraction:
        """The recombination dividend: output sales' flow at depth >= 1."""
        return sum(self.by_depth[1:], ZERO)


@dataclass(slots=True)
class MonthSales:
    """The sales of one (month, currency) as the fold records them: integers only.

    ``net_by_split`` sums, per (work, vector_version, fee_bps), the minor units
    realized minus reversed: the fold only adds integers per event, and the
    exact Fraction flows are formed once per split when a report asks
    (``flows``), not once per sale.
    """

    realized_minor: int = 0
    reversed_minor: int = 0
    values_realized: int = 0
    net_by_split: dict[tuple[str, int, int], int] = field(default_factory=dict)

    def add(self, key: tuple[str, int, int], signed_minor: int) -> None:
        self.net_by_split[key] = self.net_by_split.get(key, 0) + signed_minor


@dataclass(slots=True)
class MonthActivity:
    """What prosumers did in one UTC month (of the events' `at`)."""

    active: set[str] = field(default_factory=set)
    registered: int = 0
    contributions: int = 0
    outputs: int = 0
    component_links: int = 0
    values_realized: int = 0


# -- the fold --------------------------------------------------------------------


# The statement rows of one UTC month as committed: (account, currency,
# figures), in any order (the shell reads them from the state's database).
MonthStatements = Callable[[str], Iterable[tuple[str, str, Figures]]]


class InsightsFold:
    """The insights of one platform's log up to ``seq``.

    ``apply(event, seq)`` applies the event to ``fold``, the ledger's fold
    over ``state`` (so balances and statements are exactly the ledger's),
    and records what the insights need from it.  The caller batches the
    state's changes (prefetch, write, commit: `ledger.storage.replay`) and
    gives ``statements``, which ``report()`` reads month by month, so a
    report is asked for between batches.  Deterministic: the same events
    in the same order give the same ``report()``.

    Memory: the ledger's state is in the database; this object keeps, per
    work, its month and height, per sold (work, version) its depth split,
    per prosumer its registration month and the months it was active in,
    and per (month, currency) the net sales per split: O(works + prosumers
    × active months), as docs/insights.md says.
    """

    def __init__(self, state: PlatformState, statements: MonthStatements) -> None:
        self.state = state
        self.fold = PlatformFold(state)
        self._statements = statements
        # (work, vector_version) -> its split: a version names one graph
        # state below the work, so a value's split is found again, exactly,
        # when it is reversed (ValueRecord keeps work and version).
        self._splits: dict[tuple[str, int], DepthSplit | PoolSplit] = {}
        # The same splits, LRU, as leaves for later propagations (a bounded
        # speed-up; the dict above is what reversals need).
        self._leaves: OrderedDict[str, tuple[int, DepthSplit]] = OrderedDict()
        self._leaf_entries = 0
        self._sales: dict[tuple[str, str], MonthSales] = {}
        self._activity: dict[str, MonthActivity] = {}
        self._registered_month: dict[str, str] = {}
        # work -> (UTC month created, height: 0 for contributions, >= 1 for outputs)
        self._works: dict[str, tuple[str, int]] = {}
        # (month, currency) of every booking: where the statements have rows.
        self._booked: set[tuple[str, str]] = set()
        # Closed pools: each one's comparison of the two methods (a bounded
        # summary), and per (month, currency) of the closes each prosumer's
        # units under [pro_rata, user_centric], summed over the pools.
        self._pools: list[dict[str, Any]] = []
        self._pool_units: dict[tuple[str, str], dict[str, list[int]]] = {}

    @property
    def platform(self) -> str:
        return self.state.platform

    @property
    def seq(self) -> int:
        return self.state.head.seq

    def apply(self, event: dict[str, Any], seq: int) -> Applied:
        """Apply one accepted event at log position ``seq``; returns the ledger's bookings."""
        applied = self.fold.apply(event, seq)
        data, kind, month = event["data"], event["type"], applied.month
        if applied.bookings:
            self._booked.add((month, applied.currency))
        activity = self._activity.get(month)
        if activity is None:
            activity = self._activity[month] = MonthActivity()
        if kind == "value.realized":
            record = applied.value
            assert record is not None
            self._splits[(record.work, record.vector_version)] = self.depth_split(record.work)
            sales = self._month_sales(month, record.currency)
            sales.values_realized += 1
            sales.realized_minor += record.amount_minor
            sales.add((record.work, record.vector_version, record.fee_bps), record.amount_minor)
            activity.values_realized += 1
        elif kind == "pool.closed":
            record = applied.value
            assert record is not None and applied.pool is not None
            # The fee in force at the close is inside the pool's split.
            self._splits[(record.work, record.vector_version)] = self.pool_split(
                record.amount_minor, applied.pool["works"], self.state.head.fee_bps)
            sales = self._month_sales(month, record.currency)
            sales.values_realized += 1
            sales.realized_minor += record.amount_minor
            sales.add((record.work, record.vector_version, record.fee_bps), record.amount_minor)
            activity.values_realized += 1
            self._compare_methods(data["pool"], month, record.currency, record.amount_minor, applied.bookings,
                                  applied.pool)
        elif kind == "value.reversed":
            record = applied.value
            assert record is not None
            sales = self._month_sales(month, record.currency)
            sales.reversed_minor += data["amount"]
            sales.add((record.work, record.vector_version, record.fee_bps), -data["amount"])
        elif kind == "prosumer.registered":
            self._registered_month[data["prosumer"]] = month
            activity.registered += 1
        elif kind == "contribution.recorded":
            self._works[data["work"]] = (month, 0)
            activity.contributions += 1
            activity.active.update(data["authors"])
        elif kind == "output.composed":
            components = data["components"]
            height = 1 + max(self._works[c][1] for c in components)
            self._works[data["work"]] = (month, height)
            activity.outputs += 1
            activity.component_links += len(components)
            activity.active.update(data.get("authors", {}))
        elif kind == "work.reassigned":
            activity.active.update(data["authors"])
        return applied

    def _month_sales(self, month: str, currency: str) -> MonthSales:
        sales = self._sales.get((month, currency))
        if sales is None:
            sales = self._sales[(month, currency)] = MonthSales()
        return sales

    def value_split(self, value: str) -> DepthSplit | PoolSplit:
        """The split a realized value was booked with (fixed at realize time; a
        pool's at its close)."""
        record = self.state.value(value)
        assert record is not None, f"unknown value {value!r}"
        return self._splits[(record.work, record.vector_version)]

    def flows(self, month: str, currency: str) -> FlowTotals:
        """The exact flows of one month and currency."""
        sales = self._sales.get((month, currency), MonthSales())
        totals = FlowTotals(sales.realized_minor, sales.reversed_minor, sales.values_realized)
        for (work, version, fee_bps), net_minor in sales.net_by_split.items():
            if net_minor:
                totals.book(net_minor, fee_bps, self._splits[(work, version)])
        return totals

    def pool_split(self, amount_minor: int, works: dict[str, int], fee_bps: int) -> PoolSplit:
        """A closed pool's S by bucket (`PoolSplit`), from stage 1's ``works``
        (m, summing to ``amount_minor``), the fee at the close and each
        used work's depth split on the graph as it stands (the close's).

        Like `attribution.pool_shares`, no Fraction per work: m(w) times each
        split's numerators is summed per distinct split denominator, and the
        sums are brought over their lcm once.
        """
        rest = BPS_PER_UNIT - fee_bps
        # [unattributed, direct, depth 0, depth 1, …] numerators per split denominator
        by_denominator: dict[int, list[int]] = {}
        for work, units in works.items():
            if not units:
                continue  # nobody is reached through a work that got nothing
            split = self.depth_split(work)
            acc = by_denominator.setdefault(split.denominator, [0, 0])
            acc[0] += units * split.unattributed
            if split.sold_kind == CONTRIBUTION:
                acc[1] += units * sum(split.numerators)  # a contribution's authors: depth 0, or nothing if retracted
            else:
                for depth, numerator in enumerate(split.numerators):
                    _add_at(acc, 2 + depth, units * numerator)
        if not by_denominator:  # nothing used (or nothing funded): after the fee, @unattributed
            return PoolSplit(BPS_PER_UNIT, fee_bps, rest, 0, ())
        common = math.lcm(*by_denominator)
        parts = [0, 0]
        for d, acc in by_denominator.items():
            for i, n in enumerate(acc):
                _add_at(parts, i, n * (common // d))
        whole = amount_minor * common  # each V(w) sums to 1: the parts sum to X · common
        assert sum(parts) == whole, "stage 1 must place every unit of the pool"
        reduce = math.gcd(BPS_PER_UNIT * whole, fee_bps * whole, *(rest * n for n in parts))
        return PoolSplit(BPS_PER_UNIT * whole // reduce, fee_bps * whole // reduce, rest * parts[0] // reduce,
                         rest * parts[1] // reduce, tuple(rest * n // reduce for n in parts[2:]))

    def _compare_methods(self, pool: str, month: str, currency: str, amount_minor: int, booked: dict[str, int],
                         split: dict[str, Any]) -> None:
        """Record how the closed pool's prosumers fare under each method:
        the booked allocation beside the alternative (both exact, ints)."""
        method, alternative = split["method"], split["alternative"]
        allocations = {method: booked, alternative["method"]: alternative["allocation"]}
        prosumers = sorted({a for allocation in allocations.values() for a in allocation if not a.startswith("@")})
        units = {m: [allocations[m].get(p, 0) for p in prosumers] for m in POOL_METHODS}
        self._pools.append({
            "pool": pool, "month": month, "currency": currency, "method": method, "amount_minor": amount_minor,
            **methods_fairness(units),
            "other_method": {"method": alternative["method"],
                             **gain_lose(units[method], units[alternative["method"]])},
        })
        period = self._pool_units.setdefault((month, currency), {})
        for i, p in enumerate(prosumers):
            row = period.setdefault(p, [0, 0])
            for j, m in enumerate(POOL_METHODS):
                row[j] += units[m][i]

    def depth_split(self, work: str) -> DepthSplit:
        """flow(work, 1) by depth, at the graph's current state.

        Mass is pushed one depth at a time: ``frontier`` holds, for each work,
        the mass arriving over paths of exactly the current depth.  A work
        reached over paths of different depths is in several frontiers, each
        time with that depth's mass (cost: O(depth × edges) of the sub-DAG
        below ``work`` at worst).  A work whose split is cached is a leaf:
        its split, shifted by the current depth and scaled by the mass, is
        added at once (flow is linear in the mass).

        Exact integers: masses and sums are numerators over G.  Before a
        depth is expanded, G (and every numerator) is multiplied by the lcm
        of the local denominators of that depth's works, so every division
        of the step is exact.  A path crosses each depth once, so G is the
        product of one lcm per depth, as in ``WorkGraph.vector``.
        """
        graph = self.state.graph
        version = graph.vector_version(work)
        hit = self._leaves.get(work)
        if hit is not None and hit[0] == version:
            self._leaves.move_to_end(work)
            return hit[1]
        g = 1
        sums: list[int] = []
        unattributed = 0
        frontier: dict[str, int] = {work: 1}
        depth = 0
        while frontier:
            rows = self.state.works(frontier)  # one read per depth for what the caches miss
            steps = {node: self._step(node, rows[node], node == work) for node in frontier}
            scale = math.lcm(*(q for q, _ in steps.values()))
            if scale > 1:
                g *= scale
                sums = [n * scale for n in sums]
                unattributed *= scale
                frontier = {node: m * scale for node, m in frontier.items()}
            reached: dict[str, int] = {}
            for node, mass in frontier.items():
                q, step = steps[node]
                if step is None:  # retracted
                    unattributed += mass
                elif isinstance(step, DepthSplit):  # a cached leaf
                    per = mass // q  # exact: q divides the scale
                    for below, n in enumerate(step.numerators):
                        _add_at(sums, depth + below, per * n)
                    unattributed += per * step.unattributed
                else:  # (authors' numerator, [(component, numerator)]) over q
                    per = mass // q
                    _add_at(sums, depth, per * step[0])
                    for component, n in step[1]:
                        reached[component] = reached.get(component, 0) + per * n
            frontier = reached
            depth += 1
        while sums and not sums[-1]:
            sums.pop()  # a last level of retracted works adds a 0
        common = math.gcd(g, unattributed, *sums)
        split = DepthSplit(g // common, tuple(n // common for n in sums), unattributed // common, graph.kind(work))
        self._cache_leaf(work, version, split)
        return split

    def _step(self, node: str, w: Work, is_top: bool) -> tuple[int, Any]:
        """How ``node`` (its row ``w``) passes on the mass reaching it, over a local denominator q.

        (1, None): retracted, all to @unattributed; (D, split): a cached
        split (not for the work being split, whose cache entry is stale);
        (q, (a, [(component, k), ...])): a / q to authors at this depth and
        k / q on to each component.  A contribution keeps everything (its
        authors' weights do not matter by depth).  For an output, u =
        upstream_bps / 10 000; the authors keep (1 - u) and component c gets
        u · k_c / K; q = 10 000 · K / gcd(10 000 · K, upstream_bps) is a common
        denominator of both.
        """
        if w.retracted:
            return 1, None
        if not is_top:
            cached = self._leaves.get(node)
            if cached is not None and cached[0] == w.version:
                return cached[1].denominator, cached[1]
        if w.kind == CONTRIBUTION or not w.upstream_bps:  # passes nothing on: its authors keep it all
            return 1, (1, [])
        whole = BPS_PER_UNIT * w.component_weight
        q = whole // math.gcd(whole, w.upstream_bps)
        per_weight = w.upstream_bps * q // whole  # exact: whole / gcd divides q · upstream
        kept = q - per_weight * w.component_weight
        return q, (kept, [(c, per_weight * k) for c, k in w.components])

    def _cache_leaf(self, work: str, version: int, split: DepthSplit) -> None:
        old = self._leaves.pop(work, None)
        if old is not None:
            self._leaf_entries -= len(old[1].numerators) + 1
        entries = len(split.numerators) + 1
        while self._leaves and self._leaf_entries + entries > SPLIT_CACHE_MAX_ENTRIES:
            _, (_, evicted) = self._leaves.popitem(last=False)
            self._leaf_entries -= len(evicted.numerators) + 1
        if entries <= SPLIT_CACHE_MAX_ENTRIES:
            self._leaves[work] = (version, split)
            self._leaf_entries += entries

    # -- the report --------------------------------------------------------------

    def months(self) -> list[str]:
        """Every UTC month in which some event happened, in order."""
        return sorted(self._activity)

    def report(self, from_month: str | None = None, to_month: str | None = None, top_n: int = TOP_N) -> dict[str, Any]:
        """The insights over the months ``from_month``..``to_month`` (inclusive, "YYYY-MM").

        The fold always covers the whole log (a window cannot change how a
        value was split); the window selects the months reported and summed
        into ``overall``.  Reuse counts works created and outputs composed
        in the window.
        """
        assert top_n >= 0
        months = [m for m in self.months() if (from_month is None or m >= from_month)
                  and (to_month is None or m <= to_month)]
        in_window = set(months)
        currencies = sorted({c for (m, c) in self._sales if m in in_window}
                            | {c for (m, c) in self._booked if m in in_window})

        month_docs = []
        window_flows: dict[str, FlowTotals] = {c: FlowTotals() for c in currencies}
        window_earnings: dict[str, dict[str, int]] = {c: {} for c in currencies}
        for month in months:
            activity = self._activity[month]
            population = self._population(month)
            per_currency: dict[str, Any] = {}
            earnings = self._earnings(month)
            for currency in currencies:
                flows = self.flows(month, currency)
                month_earnings = earnings.get(currency, {})
                if not flows.values_realized and not flows.reversed_minor and not month_earnings:
                    continue
                window_flows[currency].merge(flows)
                for account, units in month_earnings.items():
                    window_earnings[currency][account] = window_earnings[currency].get(account, 0) + units
                block = _currency_block(flows, month_earnings, population)
                active = len(activity.active)
                block["network"] = {
                    "active_prosumers": active,
                    "value_realized_per_active_prosumer": (
                        money_doc(Fraction(flows.realized_minor, active)) if active else None),
                }
                per_currency[currency] = block
            month_docs.append({"month": month, "activity": _activity_doc(activity), "currencies": per_currency})

        last = months[-1] if months else None
        overall_currencies = {}
        for currency in currencies:
            block = _currency_block(window_flows[currency], window_earnings[currency], self._population(last))
            block["fairness"]["lorenz"] = lorenz_points(
                _population_earnings(window_earnings[currency], self._population(last)))
            overall_currencies[currency] = block
        everyone_active: set[str] = set()
        for month in months:
            everyone_active |= self._activity[month].active
        return {
            "platform": self.platform,
            "seq": self.seq,
            "window": {"from": from_month, "to": to_month, "months": months},
            "months": month_docs,
            "overall": {
                "activity": {**_activity_doc(_sum_activity(self._activity[m] for m in months)),
                             "active_prosumers": len(everyone_active)},
                "currencies": overall_currencies,
                "reuse": self._reuse(in_window, top_n),
                "network_effect": {c: self._network_effect(months, c) for c in currencies},
            },
            "pools": self._pools_report(in_window),
        }

    def _pools_report(self, in_window: set[str]) -> dict[str, Any]:
        """The closed pools of the window, each method side by side: per pool,
        per (month, currency) of the closes over all its pools, and per
        currency over the window (with Lorenz curves)."""
        closed = [p for p in self._pools if p["month"] in in_window]
        by_period = []
        window: dict[str, dict[str, list[int]]] = {}
        totals: dict[str, list[int]] = {}  # currency -> [pools, amount]
        for month, currency in sorted(self._pool_units):
            if month not in in_window:
                continue
            units = self._pool_units[(month, currency)]
            here = [p for p in closed if (p["month"], p["currency"]) == (month, currency)]
            amount = sum(p["amount_minor"] for p in here)
            by_period.append({"month": month, "currency": currency, "pools": len(here), "amount_minor": amount,
                              **_prosumer_units_doc(units)})
            merged = window.setdefault(currency, {})
            for prosumer, row in units.items():
                into = merged.setdefault(prosumer, [0, 0])
                into[0] += row[0]
                into[1] += row[1]
            total = totals.setdefault(currency, [0, 0])
            total[0] += len(here)
            total[1] += amount
        overall = {currency: {"pools": totals[currency][0], "amount_minor": totals[currency][1],
                              **_prosumer_units_doc(units, lorenz=True)}
                   for currency, units in sorted(window.items())}
        return {"closed": closed, "by_period": by_period, "overall": overall}

    def _earnings(self, month: str) -> dict[str, dict[str, int]]:
        """currency -> account -> net bookings (earned + reversed) of one
        month, from the statements: one month's accounts at a time."""
        out: dict[str, dict[str, int]] = {}
        for account, currency, figures in self._statements(month):
            out.setdefault(currency, {})[account] = figures.earned + figures.reversed
        return out

    def _population(self, upto_month: str | None) -> set[str]:
        """Prosumers registered in or before ``upto_month``: whom a Gini counts."""
        return {p for p, m in self._registered_month.items() if upto_month is not None and m <= upto_month}

    def _kind(self, work: str) -> str:
        return CONTRIBUTION if self._works[work][1] == 0 else OUTPUT

    def _reuse(self, in_window: set[str], top_n: int) -> dict[str, Any]:
        uses: dict[str, int] = {}
        contributions = links = 0
        heights: list[int] = []
        outputs: list[str] = []
        for work, (month, height) in self._works.items():
            if month not in in_window:
                continue
            uses.setdefault(work, 0)
            if height == 0:
                contributions += 1
            else:
                outputs.append(work)
                heights.append(height)
        for start in range(0, len(outputs), REUSE_READ_WORKS):
            rows = self.state.works(outputs[start:start + REUSE_READ_WORKS])  # components are read, not kept
            for work in outputs[start:start + REUSE_READ_WORKS]:
                for component, _ in rows[work].components:
                    links += 1
                    # A component created outside the window is not counted.
                    if self._works[component][0] in in_window:
                        uses[component] += 1
        contribution_uses = [n for w, n in uses.items() if self._kind(w) == CONTRIBUTION]
        never = sum(1 for n in contribution_uses if n == 0)
        ranked = sorted(((n, w) for w, n in uses.items() if n), key=lambda nw: (-nw[0], nw[1]))[:top_n]
        return {
            "contributions": contributions,
            "outputs": len(outputs),
            "component_links": links,
            "contributions_never_reused": never,
            "never_reused_share": ratio_doc(Fraction(never, contributions)) if contributions else None,
            "mean_uses_per_contribution": (
                ratio_doc(Fraction(sum(contribution_uses), contributions)) if contributions else None),
            "outputs_reused": sum(1 for w, n in uses.items() if n and self._kind(w) == OUTPUT),
            "uses_histogram": uses_histogram(contribution_uses),
            "top_reused": [{"work": w, "kind": self._kind(w), "uses": n} for n, w in ranked],
            "output_depth_histogram": depth_histogram(heights),
            "max_output_depth": max(heights, default=None),
        }

    def _network_effect(self, months: list[str], currency: str) -> dict[str, Any]:
        points = []
        for month in months:
            active = len(self._activity[month].active)
            sales = self._sales.get((month, currency))
            if active and sales is not None and sales.realized_minor > 0:
                points.append((month, active, sales.realized_minor))
        fit = loglog_fit([(n, Fraction(v, n)) for _, n, v in points])
        return {"months_used": [m for m, _, _ in points], **fit}


# -- report pieces -------------------------------------------------------------


def money_doc(amount: Fraction) -> dict[str, Any]:
    """An exact amount of minor units: rounded down, and what was left off.

    ``{"minor": floor(amount), "remainder": "n/d"}`` with 0 <= remainder < 1,
    so minor + remainder is the amount exactly (also when it is negative:
    -7/2 is minor -4, remainder 1/2).
    """
    minor = math.floor(amount)
    return {"minor": minor, "remainder": fraction_str(Fraction(amount) - minor)}


def ratio_doc(ratio: Fraction) -> dict[str, str]:
    """An exact ratio and its decimal text rounded down to RATIO_DECIMALS places."""
    scale = 10**RATIO_DECIMALS
    scaled = math.floor(ratio * scale)
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), scale)
    return {"exact": fraction_str(Fraction(ratio)), "decimal": f"{sign}{whole}.{frac:0{RATIO_DECIMALS}d}"}


def _flow_doc(flows: FlowTotals) -> dict[str, Any]:
    net = flows.net_minor
    dividend = flows.dividend
    return {
        "platform": money_doc(flows.platform),
        "unattributed": money_doc(flows.unattributed),
        "direct_on_contributions": money_doc(flows.direct),
        "on_outputs_by_depth": [
            {"depth": depth, **money_doc(amount)} for depth, amount in _depth_buckets(flows.by_depth, first=0)
        ],
        "recombination_dividend": money_doc(dividend),
        "dividend_share_of_net": ratio_doc(dividend / net) if net else None,
    }


def _depth_buckets(amounts: list[Any], first: int) -> list[tuple[int | str, Any]]:
    """(depth, amount) for depths first..DEPTHS_LISTED-1, then ("DEPTHS_LISTED+", the rest summed)."""
    listed: list[tuple[int | str, Any]] = [(d, amounts[d]) for d in range(first, min(len(amounts), DEPTHS_LISTED))]
    if len(amounts) > DEPTHS_LISTED:
        listed.append((f"{DEPTHS_LISTED}+", sum(amounts[DEPTHS_LISTED:])))
    return listed


def depth_histogram(heights: list[int]) -> list[dict[str, Any]]:
    """How many outputs have each depth (1, 2, …), the deep tail in one bucket."""
    counts = [0] * (max(heights, default=0) + 1)
    for h in heights:
        counts[h] += 1
    return [{"depth": d, "outputs": n} for d, n in _depth_buckets(counts, first=1) if n]


def uses_histogram(uses: list[int]) -> list[dict[str, int]]:
    """Contributions per number of uses, in power-of-two buckets: 0, 1, 2-3, 4-7, …

    Bounded (about log2 of the largest count) and readable on a log scale.
    """
    buckets: dict[int, int] = {}
    for n in uses:
        key = n.bit_length()  # 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, ...
        buckets[key] = buckets.get(key, 0) + 1
    return [
        {"uses_from": 0 if k == 0 else 1 << (k - 1), "uses_to": 0 if k == 0 else (1 << k) - 1,
         "contributions": buckets[k]}
        for k in sorted(buckets)
    ]


def _activity_doc(activity: MonthActivity) -> dict[str, int]:
    return {
        "active_prosumers": len(activity.active),
        "registered": activity.registered,
        "contributions_recorded": activity.contributions,
        "outputs_composed": activity.outputs,
        "component_links": activity.component_links,
        "values_realized": activity.values_realized,
    }


def _sum_activity(activities: Any) -> MonthActivity:
    total = MonthActivity()
    for a in activities:
        total.registered += a.registered
        total.contributions += a.contributions
        total.outputs += a.outputs
        total.component_links += a.component_links
        total.values_realized += a.values_realized
    return total


def _population_earnings(earnings: dict[str, int], population: set[str]) -> list[int]:
    """Net earnings of every prosumer counted: the registered ones (0 if they
    earned nothing) and anyone else booked (system accounts excluded)."""
    counted = population | {a for a in earnings if not a.startswith("@")}
    return sorted(earnings.get(p, 0) for p in counted)


def _currency_block(flows: FlowTotals, earnings: dict[str, int], population: set[str]) -> dict[str, Any]:
    net = flows.net_minor
    platform = earnings.get(PLATFORM, 0)
    unattributed = earnings.get(UNATTRIBUTED, 0)
    values = _population_earnings(earnings, population)
    return {
        "realized_minor": flows.realized_minor,
        "reversed_minor": flows.reversed_minor,
        "net_minor": net,
        "values_realized": flows.values_realized,
        "flow": _flow_doc(flows),
        "fairness": {
            "platform_booked_minor": platform,
            "take_rate": ratio_doc(Fraction(platform, net)) if net else None,
            "unattributed_booked_minor": unattributed,
            "unattributed_share": ratio_doc(Fraction(unattributed, net)) if net else None,
            "prosumers": len(values),
            "earners": sum(1 for v in values if v > 0),
            "gini": _maybe_ratio(gini(values)),
            "top_1pct_share": _maybe_ratio(top_share(values, Fraction(1, 100))),
            "top_10pct_share": _maybe_ratio(top_share(values, Fraction(1, 10))),
        },
    }


def _maybe_ratio(x: Fraction | None) -> dict[str, str] | None:
    return None if x is None else ratio_doc(x)


def method_fairness(units: list[int]) -> dict[str, Any]:
    """How one method shares a pool (or pools) among its prosumers: units in
    all, how many got any, Gini and top shares (exact)."""
    return {
        "to_prosumers_minor": sum(units),
        "paid": sum(1 for u in units if u > 0),
        "gini": _maybe_ratio(gini(units)),
        "top_1pct_share": _maybe_ratio(top_share(units, Fraction(1, 100))),
        "top_10pct_share": _maybe_ratio(top_share(units, Fraction(1, 10))),
    }


def methods_fairness(units: dict[str, list[int]]) -> dict[str, Any]:
    """Each method's `method_fairness` over the same prosumers (``units[m][i]``:
    prosumer i's units under method m)."""
    return {"prosumers": len(units[PRO_RATA]), **{m: method_fairness(units[m]) for m in POOL_METHODS}}


def gain_lose(before: list[int], after: list[int]) -> dict[str, int]:
    """Prosumers who get more, less and the same under ``after`` than under ``before``."""
    gain = sum(1 for b, a in zip(before, after) if a > b)
    lose = sum(1 for b, a in zip(before, after) if a < b)
    return {"gain": gain, "lose": lose, "same": len(before) - gain - lose}


def _prosumer_units_doc(units: dict[str, list[int]], lorenz: bool = False) -> dict[str, Any]:
    """Both methods over prosumer -> [pro_rata, user_centric] units; who
    gains and who loses going from pro_rata to user_centric; with
    ``lorenz``, each method's Lorenz curve (floats, for plotting)."""
    by_method = {m: [row[i] for row in units.values()] for i, m in enumerate(POOL_METHODS)}
    doc = {**methods_fairness(by_method), "user_centric_vs_pro_rata": gain_lose(by_method[PRO_RATA],
                                                                              by_method[USER_CENTRIC])}
    if lorenz:
        doc["lorenz"] = {m: lorenz_points(sorted(by_method[m])) for m in POOL_METHODS}
    return doc


# -- fairness statistics (exact) ------------------------------------------------------


def gini(earnings: list[int]) -> Fraction | None:
    """The Gini coefficient of integer earnings, exactly.

    G = sum_i (2i - n - 1) x_(i) / (n · sum x) with x sorted ascending, i =
    1..n: half the mean absolute difference between two prosumers, over
    the mean.  0: everybody earned the same; (n-1)/n: one earned it all.
    None when the total is not positive (nothing to share).  Net earnings
    can be negative after a clawback; the formula still holds (G may then
    exceed 1).
    """
    xs = sorted(earnings)
    n, total = len(xs), sum(xs)
    if n == 0 or total <= 0:
        return None
    return Fraction(sum((2 * i - n - 1) * x for i, x in enumerate(xs, start=1)), n * total)


def top_share(earnings: list[int], fraction: Fraction) -> Fraction | None:
    """The share of all earnings held by the top ceil(n · fraction) earners (at least one)."""
    xs = sorted(earnings, reverse=True)
    total = sum(xs)
    if not xs or total <= 0:
        return None
    k = max(1, math.ceil(len(xs) * fraction))
    return Fraction(sum(xs[:k]), total)


def lorenz_points(sorted_earnings: list[int]) -> list[list[float]]:
    """The Lorenz curve: [share of prosumers, share of earnings] at 0, 1, …, 100 %
    of prosumers (poorest first).  Floats: for plotting only."""
    n, total = len(sorted_earnings), sum(sorted_earnings)
    if n == 0 or total <= 0:
        return []
    cumulative = [0]
    for x in sorted_earnings:
        cumulative.append(cumulative[-1] + x)
    return [[step / LORENZ_STEPS, cumulative[n * step // LORENZ_STEPS] / total] for step in range(LORENZ_STEPS + 1)]


# -- network effect statistics (floats) ------------------------------------------------


def loglog_fit(points: list[tuple[int, Fraction]]) -> dict[str, Any]:
    """OLS of ln(y) on ln(x): the elasticity b with its 95 % confidence interval.

    Points are (active prosumers, value per active prosumer).  b = Sxy/Sxx;
    the slope's standard error is sqrt(SSE / (n - 2) / Sxx) and the interval
    b ± t(0.975, n - 2) · SE.  Needs 2 points with different x for b and 3
    for the interval (None otherwise).
    """
    n = len(points)
    result: dict[str, Any] = {"points": n, "elasticity": None, "intercept": None, "ci95": None, "r_squared": None}
    if n < 2:
        return result
    xs = [math.log(x) for x, _ in points]
    # ln of a Fraction without going through a float that might overflow.
    ys = [math.log(y.numerator) - math.log(y.denominator) for _, y in points]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return result  # every month had the same number of active prosumers
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    sse = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    syy = sum((y - mean_y) ** 2 for y in ys)
    result.update(elasticity=slope, intercept=intercept, r_squared=1 - sse / syy if syy else 1.0)
    if n >= 3:
        half_width = student_t_quantile(0.975, n - 2) * math.sqrt(sse / (n - 2) / sxx)
        result["ci95"] = [slope - half_width, slope + half_width]
    return result


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < eps:
            break
    return h


def _regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast only below the mean; use the symmetry above it.
    if x < (a + 1) / (a + b + 2):
        return front * _continued_fraction(a, b, x) / a
    return 1 - front * _continued_fraction(b, a, 1 - x) / b


def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _regularized_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def student_t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p, for 0.5 <= p < 1 (bisection on the cdf).

    Pure Python, because scipy is not a dependency; t(0.975, 1) = 12.7062,
    t(0.975, 2) = 4.3027, t(0.975, 10) = 2.2281.
    """
    assert 0.5 <= p < 1 and df >= 1
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


__all__ = [
    "DEPTHS_LISTED",
    "DepthSplit",
    "FlowTotals",
    "InsightsFold",
    "MonthActivity",
    "POOL_METHODS",
    "PoolSplit",
    "depth_histogram",
    "gain_lose",
    "gini",
    "loglog_fit",
    "lorenz_points",
    "method_fairness",
    "methods_fairness",
    "money_doc",
    "ratio_doc",
    "student_t_cdf",
    "student_t_quantile",
    "top_share",
    "uses_histogram",
]
