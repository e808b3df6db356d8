"""Splitting a usage pool (EVENTS.md section 7): money to works, works to recipients.

A pool collects money from subscribers (X in total, F(s) from subscriber s)
and usage of works (u(s, w) uses of work w by s; u(w) = sum over s, U(s) =
sum over w, U = sum of everything).  At its close it is split in two stages:

* **stage 1**, money to works in whole minor units, by one of two methods:

  - ``pro_rata``: m = alloc(X, {w: u(w) / U});
  - ``user_centric``: each subscriber who paid is split by their own usage,
    m_s = alloc(F(s), {w: u(s, w) / U(s)}), or by everyone's usage,
    alloc(F(s), {w: u(w) / U}), when they used nothing; m = sum of the m_s;

  with no stage 1 at all (m = {}) when nothing was used (U = 0);
* **stage 2**, works to recipients, exact and rounded once for the whole
  pool: S = {@platform: f} + (1 - f) * sum_w (m(w) / X) * V(w), with
  V(w) = flow(w, 1) of section 3 (``WorkGraph.vector``); S = {@platform: f,
  @unattributed: 1 - f} when U = 0, and no recipient at all when X = 0.
  The pool books alloc(X, S).

``alloc`` is the largest remainder of section 3 (``allocation.allocate``):
works are its recipients in stage 1, ties broken by work id.

Worked example (EVENTS.md section 7)
------------------------------------
Fee 1000 bps, V(o1) = {alice: 1/2, carol: 1/2}, V(c2) = {bob: 1}.  s1 funds 60
and uses o1 once, s2 funds 30 and uses c2 nine times, s3 funds 11 and uses
nothing: X = 101, U = 10.

* pro_rata: alloc(101, {o1: 1/10, c2: 9/10}) = {c2: 91, o1: 10} (exact 10.1
  and 90.9: the unit left goes to c2's .9).  Stage 2: sum_w m(w) V(w) =
  {alice: 5, carol: 5, bob: 91} over 101; with the fee S = {@platform: 1/10,
  alice: 9/202, carol: 9/202, bob: 819/1010}; alloc(101, S) = {@platform: 10,
  alice: 5, bob: 82, carol: 4}.
* user_centric: s1 gives {o1: 60}, s2 {c2: 30}, s3 follows everyone's usage,
  alloc(11, {o1: 1/10, c2: 9/10}) = {c2: 10, o1: 1}: m = {c2: 40, o1: 61}; S =
  {@platform: 1/10, alice: 549/2020, carol: 549/2020, bob: 36/101};
  alloc(101, S) = {@platform: 10, alice: 28, bob: 36, carol: 27}.

Which works get an entry
------------------------
``allocate`` names every recipient of its vector, 0 units included, so
summing allocations gives exactly the entries section 7 asks for: under
pro_rata every used work; under user_centric every work used by a subscriber
who paid, and every used work when some subscriber paid but used nothing.
Read literally, a pool with X = 0 but some usage has pro_rata works {w: 0}
for every used work and user_centric works {} (nobody paid); both have no
stage 2 (S is empty) and book nothing.

Streaming, and what it costs
----------------------------
A pool may have 100 000 subscribers and millions of usage rows.  Nothing
here needs the rows at once:

* ``PoolSplitter`` takes the subscribers one at a time, in subscriber order,
  each with F(s) and an iterable of their (work, count) rows (a work may
  repeat: rows add up), and computes *both* methods' stage 1 in that one
  pass.  Memory: u(w) and the two m, O(works used); the current
  subscriber's works; one counter per distinct amount paid by subscribers
  who used nothing.  Time: O(k log k) per subscriber with k distinct works
  (aggregation, the vector's sort, the allocation), O(1) per row.
  The subscribers who paid but used nothing follow u(w) / U, which is known
  only at the end: they are counted by the amount they paid, and each
  distinct amount is allocated once, at ``finish``, and multiplied by its
  count (equal F(s) give equal m_s), so ``finish`` costs O(W log W) for
  pro_rata plus O(G * W) for G distinct such amounts over W used works.
  A subscription has a few price points, so G is small.
* ``pool_shares`` (stage 2) asks for V(w) once per work with m(w) > 0 and
  keeps no vector: it sums m(w) * V(w) per distinct denominator d of the
  V(w) (small integers; works of one kind share a handful of denominators),
  then brings those sums over D = lcm of the distinct d, once, and reduces
  the result once (``ShareVector.in_lowest_terms``) before the fee
  (``ShareVector.with_fee`` keeps a reduced vector reduced).  No Fraction
  is added per work: that would cost a gcd of growing numbers at every step.
  Time: O(sum of |V(w)|) small multiply-adds, O(distinct d * recipients)
  big-by-small multiplies, one lcm pass and one gcd pass; memory:
  O(distinct d * recipients).
* ``split_pool`` computes stage 2 of both methods in one pass over the works
  either one used (``used_works``, in work id order), so each V(w) is asked
  for once, however many works the pool has: a caller that reads V(w) from
  storage reads each once, in that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .allocation import MAX_AMOUNT_MINOR, allocate
from .shares import UNATTRIBUTED, ShareVector

PRO_RATA = "pro_rata"
USER_CENTRIC = "user_centric"
METHODS = (PRO_RATA, USER_CENTRIC)

# usage.recorded (EVENTS.md section 7): a count is 1 .. 10^9 uses.  A
# subscriber's total for one work is a sum of such counts and may exceed it.
USE_COUNT_MAX = 1_000_000_000


def other_method(method: str) -> str:
    """The method a pool's explanation shows as its alternative."""
    assert method in METHODS, f"unknown pool method {method!r}"
    return USER_CENTRIC if method == PRO_RATA else PRO_RATA


def split_by_usage(amount_minor: int, uses: dict[str, int]) -> dict[str, int]:
    """alloc(amount, {w: uses[w] / sum(uses)}): minor units to works by usage.

    Largest remainder (``allocate``) with works as recipients; every work of
    ``uses`` gets an entry, 0 included, in work id order.  ``uses`` must be
    non-empty with positive counts.  The dict is handed to a ShareVector:
    do not change it afterwards.  With the pool's totals u(w) this is
    pro_rata's stage 1 (when U > 0).

    >>> split_by_usage(101, {"o1": 1, "c2": 9})
    {'c2': 91, 'o1': 10}
    """
    split = allocate(amount_minor, ShareVector(sum(uses.values()), uses))
    assert sum(split.values()) == amount_minor
    return split


@dataclass(frozen=True, slots=True)
class WorkSplits:
    """Stage 1 of one pool under both methods (``PoolSplitter.finish``).

    ``amount_minor`` is X, ``uses`` is U; ``pro_rata`` and ``user_centric``
    are m under each method: work -> minor units, in work id order, summing
    to X (both {} when U = 0).
    """

    amount_minor: int
    uses: int
    pro_rata: dict[str, int]
    user_centric: dict[str, int]

    def works(self, method: str) -> dict[str, int]:
        """m under ``method``."""
        assert method in METHODS, f"unknown pool method {method!r}"
        return self.pro_rata if method == PRO_RATA else self.user_centric


class PoolSplitter:
    """Both methods' stage 1, fed one subscriber at a time.

    Call ``add`` once per subscriber who paid or used anything (a subscriber
    who paid nothing still counts toward u(w)), in strictly increasing
    subscriber id order (code point order: on PostgreSQL sort with
    ``COLLATE "C"``; SQLite's default collation is already byte order).  The
    order itself changes nothing (m is a sum); it is what lets the splitter
    check, in O(1) memory, that no subscriber comes twice, which would split
    their money twice.  Then ``finish``.

    >>> s = PoolSplitter()
    >>> s.add("s1", 60, [("o1", 1)])
    >>> s.add("s2", 30, [("c2", 4), ("c2", 5)])
    >>> s.add("s3", 11, [])
    >>> r = s.finish()
    >>> (r.amount_minor, r.uses, r.pro_rata, r.user_centric)
    (101, 10, {'c2': 91, 'o1': 10}, {'c2': 40, 'o1': 61})
    """

    def __init__(self) -> None:
        self._last: str | None = None
        self._funded_minor = 0  # X so far
        self._uses_by_work: dict[str, int] = {}  # u(w)
        self._user_centric: dict[str, int] = {}  # sum of m_s of subscribers with U(s) > 0
        # F -> how many subscribers paid F and used nothing: their m_s follow
        # u(w) / U, known only at the end, and are equal for equal F.
        self._idle_by_funding: dict[int, int] = {}
        self._finished = False

    def add(self, subscriber: str, funded_minor: int, uses: Iterable[tuple[str, int]]) -> None:
        """One subscriber: F(s) and their (work, count) rows, in any order."""
        assert not self._finished, "add after finish"
        assert type(subscriber) is str and (self._last is None or subscriber > self._last), \
            f"subscribers must come once each, in increasing id order: {subscriber!r} after {self._last!r}"
        self._last = subscriber
        assert type(funded_minor) is int and funded_minor >= 0
        self._funded_minor += funded_minor
        # Section 7: a funding that would take the pool past 2^63 - 1 is refused.
        assert self._funded_minor <= MAX_AMOUNT_MINOR, "pool funding over 2^63 - 1"

        own: dict[str, int] = {}  # u(s, w)
        for work, count in uses:
            assert type(count) is int and 1 <= count <= USE_COUNT_MAX, f"use count {count!r} out of range"
            own[work] = own.get(work, 0) + count
        totals = self._uses_by_work
        for work, count in own.items():
            totals[work] = totals.get(work, 0) + count

        if funded_minor == 0:
            return  # counted toward u(w) above; no money of theirs to split
        if not own:
            self._idle_by_funding[funded_minor] = self._idle_by_funding.get(funded_minor, 0) + 1
            return
        m = self._user_centric
        for work, units in split_by_usage(funded_minor, own).items():
            m[work] = m.get(work, 0) + units

    def finish(self) -> WorkSplits:
        """Stage 1 under both methods for everything added."""
        assert not self._finished, "finish twice"
        self._finished = True
        x = self._funded_minor
        totals, m = self._uses_by_work, self._user_centric
        # The sums are handed over: a finished splitter keeps none of its
        # O(works) memory while its caller goes on to stage 2.
        self._uses_by_work, self._user_centric = {}, {}
        used = sum(totals.values())
        if used == 0:
            # Nothing was used: no stage 1 under either method.
            return WorkSplits(x, 0, {}, {})
        # u(w) / U, built (and sorted) once for pro_rata and for the idle.
        everyone = ShareVector(used, totals)
        pro_rata = allocate(x, everyone)
        for funded_minor, subscribers in self._idle_by_funding.items():
            for work, units in allocate(funded_minor, everyone).items():
                m[work] = m.get(work, 0) + subscribers * units
        user_centric = dict(sorted(m.items()))
        # Both splits place every unit paid: m sums to X under each method.
        assert sum(pro_rata.values()) == x and sum(user_centric.values()) == x, "stage 1 lost units"
        return WorkSplits(x, used, pro_rata, user_centric)


def pool_shares(
    amount_minor: int,
    works: Mapping[str, int],
    vector_of: Callable[[str], ShareVector],
    fee_bps: int,
) -> ShareVector | None:
    """Stage 2: S = {@platform: f} + (1 - f) * sum_w (m(w) / X) * V(w), reduced.

    ``works`` is stage 1's m (summing to ``amount_minor`` = X), ``vector_of``
    gives V(w) = flow(w, 1) on the graph at the close (``WorkGraph.vector``;
    asked once per work with m(w) > 0, never for the others), ``fee_bps``
    the fee in force at the close.  When nothing was used (``works`` empty)
    S = {@platform: f, @unattributed: 1 - f}.  None when X = 0: the pool has
    no recipient and books nothing.

    How (see the module docstring for the cost): for each distinct
    denominator d of the V(w), acc_d[r] = sum of m(w) * n_{w,r} over the
    works with that denominator; with D = lcm of the d, the share of r
    before the fee is sum_d acc_d[r] * (D / d) over X * D.  Worked example:
    m = {o1: 10, c2: 91}, V(o1) = {alice: 1, carol: 1} over 2, V(c2) =
    {bob: 1} over 1: acc_2 = {alice: 10, carol: 10}, acc_1 = {bob: 91}; D = 2:
    {alice: 10, carol: 10, bob: 182} over 202, i.e. {alice: 5, carol: 5,
    bob: 91} over 101; the fee of 1000 bps makes it {@platform: 101, alice:
    45, carol: 45, bob: 819} over 1010.
    """
    (shares,) = _stage_2(amount_minor, (works,), sorted(w for w, units in works.items() if units), vector_of, fee_bps)
    return shares


def used_works(splits: WorkSplits) -> list[str]:
    """The works with m(w) > 0 under either method, in work id order: the
    V(w) ``split_pool`` asks for, in the order it asks."""
    return sorted({w for works in (splits.pro_rata, splits.user_centric) for w, units in works.items() if units})


def _stage_2(
    amount_minor: int,
    works: tuple[Mapping[str, int], ...],
    order: list[str],
    vector_of: Callable[[str], ShareVector],
    fee_bps: int,
) -> list[ShareVector | None]:
    """``pool_shares`` of each stage 1 in ``works`` (each summing to X), with
    V(w) asked once for each work of ``order``: the works with units under
    any of them.  See ``pool_shares``."""
    assert type(amount_minor) is int and 0 <= amount_minor <= MAX_AMOUNT_MINOR
    for m in works:
        # Stage 1 places every unit of the pool, unless there was none (U = 0).
        assert not m or sum(m.values()) == amount_minor, "stage 1 must place every unit of the pool"
        assert all(type(units) is int and units >= 0 for units in m.values())
    if amount_minor == 0:
        return [None] * len(works)
    # Per stage 1: denominator d -> recipient -> sum of m(w) * n_{w,r} over the works whose V(w) is over d.
    sums: list[dict[int, dict[str, int]]] = [{} for _ in works]
    for work in order:
        vector = vector_of(work)
        for m, by_denominator in zip(works, sums):
            units = m.get(work, 0)
            if not units:
                continue  # nobody is reached through a work that got nothing
            acc = by_denominator.get(vector.denominator)
            if acc is None:
                acc = by_denominator[vector.denominator] = {}
            for recipient, n in vector.numerators.items():
                acc[recipient] = acc.get(recipient, 0) + units * n
    out: list[ShareVector | None] = []
    for m, by_denominator in zip(works, sums):
        if not m:
            out.append(ShareVector(1, {UNATTRIBUTED: 1}).with_fee(fee_bps))
            continue
        assert sum(1 for units in m.values() if units) == sum(1 for w in order if m.get(w)), "order misses a work"
        common = math.lcm(*by_denominator)
        numerators: dict[str, int] = {}
        for d, acc in by_denominator.items():
            scale = common // d
            for recipient, n in acc.items():
                numerators[recipient] = numerators.get(recipient, 0) + n * scale
        # Each V(w) sums to 1, so the m(w)-weighted sum is X whole shares.
        denominator = amount_minor * common
        assert sum(numerators.values()) == denominator, "stage 2 shares do not sum to 1"
        out.append(ShareVector.in_lowest_terms(denominator, numerators).with_fee(fee_bps))
    return out


@dataclass(frozen=True, slots=True)
class MethodSplit:
    """A pool split by one method: stage 1 (``works``), stage 2 (``shares``,
    None when X = 0) and what it books, alloc(X, S) (``allocation``, every
    recipient of S in id order; {} when X = 0)."""

    method: str
    works: dict[str, int]
    shares: ShareVector | None
    allocation: dict[str, int]


def split_pool(
    splits: WorkSplits,
    method: str,
    vector_of: Callable[[str], ShareVector],
    fee_bps: int,
) -> tuple[MethodSplit, MethodSplit]:
    """(the split ``method`` books, the other method's split, never booked).

    The second is a pool explanation's ``alternative``: same funding, usage,
    graph and fee.  Both stage 2s are summed in one pass over ``used_works``
    (each V(w) asked once); when both methods give the same works (one
    subscriber, or nothing used) the split is computed once.
    """
    other = other_method(method)
    booked_works, other_works = splits.works(method), splits.works(other)
    same = booked_works == other_works
    x = splits.amount_minor
    shares = _stage_2(x, (booked_works,) if same else (booked_works, other_works), used_works(splits),
                      vector_of, fee_bps)
    booked = _method_split(method, booked_works, x, shares[0])
    if same:
        return booked, MethodSplit(other, other_works, booked.shares, booked.allocation)
    return booked, _method_split(other, other_works, x, shares[1])


def _method_split(method: str, works: dict[str, int], amount_minor: int, shares: ShareVector | None) -> MethodSplit:
    allocation = {} if shares is None else allocate(amount_minor, shares)
    assert sum(allocation.values()) == amount_minor
    return MethodSplit(method, works, shares, allocation)


__all__ = [
    "METHODS",
    "PRO_RATA",
    "USER_CENTRIC",
    "USE_COUNT_MAX",
    "MethodSplit",
    "PoolSplitter",
    "WorkSplits",
    "other_method",
    "pool_shares",
    "split_by_usage",
    "split_pool",
    "used_works",
]
