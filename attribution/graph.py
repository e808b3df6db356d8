"""The works of one platform and how value flows through them.

Contributions and outputs are *works* in one id namespace (EVENTS.md
section 2).  A contribution is owned by its authors in proportion to their
weights.  An output keeps ``1 - u`` of the value reaching it for its own
authors and passes ``u = upstream_bps / 10 000`` on to its components, by
component weight.  A retracted work sends everything reaching it to
``@unattributed``.  ``WorkGraph.vector(w)`` is the exact share vector
``flow(w, 1)`` of section 3, before the platform fee (apply the fee with
``ShareVector.with_fee``).

How the vector is computed (and why not the way the spec writes it)
------------------------------------------------------------------
The spec defines ``flow`` recursively over *paths*.  Taken literally that
is exponential: in a graph where many outputs reuse the same components the
number of paths doubles with every layer of sharing, and recursion over a
remix chain thousands deep overflows the stack.  Instead we push *mass*
through the sub-DAG below the queried work once, in topological order:

1. an iterative depth-first search lists the works the value can reach
   (only along edges that carry a positive share) in reverse post-order, so
   every work comes after every work that passes value to it;
2. each work, in that order, receives the sum of what its parents sent it
   and hands it on: to its authors by weight, to its components by weight;
3. what reaches authors (and ``@unattributed``) is summed per recipient.

A work reached along several paths is processed once, with the sum of all
those paths' mass; that is exactly "a recipient reached along several paths
gets the sum", by linearity of ``flow`` in ``s``.  Cost: O(nodes + edges).

Exact integers, no gcds of big numbers along the way
----------------------------------------------------
Mass is carried as integers over one common denominator G chosen before
the propagation, so every step is an exact "multiply by a small weight,
divide by a small number" on integers, never a Fraction addition (each of
which would cost a gcd of two huge numbers).

G is built from *levels*.  Level(w) is the length of the longest path from
the queried work to w; along any path levels strictly increase, so a path
visits each level at most once.  Each work n has a local denominator q(n)
that every factor it applies divides (see ``_local_denominator``); with
L(l) = lcm of q(n) over the works on level l, the product G of all L(l) is a
multiple of the denominator of every path's product of factors.  Hence
G * (mass reaching n) is an integer, and so is every amount n passes on:
the divisions in step 2 are exact (and the final "numerators sum to G"
assertion of ShareVector would catch any slip).  On a remix chain G is
exactly the chain's natural denominator (q per level, to the power depth);
on wide shallow graphs it is the lcm per level, not the product over all
works.  The result is then reduced once (one or two big gcds).

Caching
-------
The vectors of *queried* works are kept in an LRU cache bounded by
``CACHE_MAX_ENTRIES`` recipient entries and ``CACHE_MAX_BYTES`` (estimated).
Intermediate works of a query are not cached, so a chain 5000 deep queried
only at the top costs one vector.  A cached work reached by a later query is
a leaf there: its mass is spread by its cached vector, so composing a new
output from already-sold works costs O(recipients of those works), not a
walk down their whole history.

A work's vector changes only when the work itself or something below it is
retracted, reinstated or reassigned.  Those operations walk the reverse
edges (``dependents``) from the changed work, drop exactly those works from
the cache and bump their ``vector_version``; nothing else is touched.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from .shares import BPS_PER_UNIT, UNATTRIBUTED, ShareVector

CONTRIBUTION = "contribution"
OUTPUT = "output"

# Shape limits of EVENTS.md section 2.  The ledger rejects events beyond
# them; the graph asserts them because its cost model assumes them: a
# work's local denominator (see _local_denominator) is at most
# 10**4 * 10**9 (1000 components of weight 10**6) times 10**4 * 6.4 * 10**7
# (64 authors of weight 10**6), below 2**83: a "small" integer.
MAX_AUTHORS_PER_WORK = 64
MAX_COMPONENTS_PER_OUTPUT = 1000
MAX_WEIGHT = 1_000_000

# Cache of flattened vectors of queried works: evicted least recently used
# first once either bound would be exceeded.  A vector larger than the whole
# budget is returned but not cached.  For scale (docs/attribution.md): a
# 3000-deep remix chain's vector has 6001 recipients and takes 2.9 MB when
# each step keeps 1/4 upstream (1807-digit denominator) and 30 MB at
# 5001/20000 (12 904 digits); an output of 1000 contributions by 300 people,
# about 30 KB.  64 MiB holds two of the former, thousands of the latter.
CACHE_MAX_ENTRIES = 500_000
CACHE_MAX_BYTES = 64 * 1024 * 1024
# Estimated bytes per cached entry beside the numerator's own digits: the
# dict slot, the int object header and the recipient key reference.
_CACHE_ENTRY_OVERHEAD_BYTES = 100

# explain(): the caller's bounds may not exceed these.
EXPLAIN_MAX_PATHS_LIMIT = 1000
EXPLAIN_MAX_WORKS_LIMIT = 10_000
# Best-first search budget: items pushed on the priority queue (one per
# recipient or component reached through an expanded work), and work ids
# copied into returned or candidate paths.  The search stops, with
# ``truncated_paths`` set, when either would be exceeded.
EXPLAIN_MAX_QUEUE_PUSHES = 100_000
EXPLAIN_MAX_PATH_STEPS = 1_000_000


@dataclass(slots=True)
class _Work:
    """One work as the graph stores it (internal, mutable)."""

    kind: str
    # (prosumer, weight) sorted by prosumer id, so iteration order (and the
    # order of anything derived from it) never depends on event JSON order.
    authors: tuple[tuple[str, int], ...]
    author_weight: int
    components: tuple[tuple[str, int], ...]
    component_weight: int
    upstream_bps: int  # 0 for contributions (never read for them)
    retracted: bool = False
    version: int = 0
    # Outputs that list this work as a component (reverse edges).
    dependents: list[str] = field(default_factory=list)


class PathShare(NamedTuple):
    """One path of value: from the explained work down to ``works[-1]``,
    whose author ``recipient`` (or ``@unattributed`` if it is retracted)
    receives ``share`` of the explained work's value along this path."""

    works: tuple[str, ...]
    recipient: str
    share: Fraction


@dataclass(frozen=True, slots=True)
class ExactExplanation:
    """An Explanation with its shares as integers over ``denominator``:
    ``paths`` holds (works, recipient, numerator), ``works`` work ->
    numerator (see ``WorkGraph.explain_exact``)."""

    denominator: int
    paths: tuple[tuple[tuple[str, ...], str, int], ...]
    works: dict[str, int]
    truncated_paths: bool
    total_works: int


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a work's vector is what it is, bounded in size.

    ``paths``: the largest individual paths (at most ``max_paths``), by share
    descending, then recipient, then path (tuple order).  A recipient's share
    in the vector is the sum over *all* its paths; these are the biggest.
    ``truncated_paths``: there are paths not listed (more than ``max_paths``,
    or the search budget ran out; the listed ones are then the largest found
    in best-first order).
    ``works``: for the ``max_works`` works with the largest inflow, the exact
    fraction of the explained work's value that entered each (the work
    itself: 1), by inflow descending then work id.
    ``total_works``: how many works the value reached at all.
    """

    paths: tuple[PathShare, ...]
    works: dict[str, Fraction]
    truncated_paths: bool
    total_works: int


def _canonical_weights(weights: Mapping[str, int], what: str, limit: int) -> tuple[tuple[str, int], ...]:
    items = tuple(sorted(weights.items()))
    assert len(items) <= limit, f"more than {limit} {what}"
    for key, weight in items:
        assert type(key) is str and key, f"{what} ids must be non-empty strings"
        # "@..." names the system accounts; an author so named would merge
        # with @platform or @unattributed (EVENTS.md reserves them).
        assert not key.startswith("@"), f"{what} id {key!r} is reserved"
        assert type(weight) is int and 1 <= weight <= MAX_WEIGHT, f"{what} weights must be 1..{MAX_WEIGHT}"
    return items


def _lowest(num: int, den: int) -> tuple[int, int]:
    """num/den in lowest terms (small ints: a weight times basis points)."""
    g = math.gcd(num, den)
    return num // g, den // g


def _product(factors: list[int]) -> int:
    """Product of many ints by pairwise (balanced) multiplication.

    Multiplying one by one costs O(n * size of result); pairing keeps the
    operands balanced so Karatsuba does the heavy lifting.
    """
    level = factors or [1]
    while len(level) > 1:
        paired = [level[i] * level[i + 1] for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class WorkGraph:
    """The works of one platform, their authors, components and state.

    The graph trusts its caller for ledger rules (ids exist, events valid)
    but asserts programming errors: adding a work twice, an unknown
    component, an author set that would make value vanish.

    Example (EVENTS.md worked example)::

        g = WorkGraph()
        g.add_contribution("c1", {"alice": 1})
        g.add_contribution("c2", {"bob": 2, "carol": 1})
        g.add_output("o1", {"c1": 1, "c2": 1}, {"carol": 1}, 4000)
        g.vector("o1").as_fractions()
        # {'alice': 1/5, 'bob': 2/15, 'carol': 2/3}
    """

    def __init__(
        self,
        *,
        cache_max_entries: int = CACHE_MAX_ENTRIES,
        cache_max_bytes: int = CACHE_MAX_BYTES,
    ) -> None:
        assert cache_max_entries >= 0 and cache_max_bytes >= 0
        self._works: dict[str, _Work] = {}
        self._cache: OrderedDict[str, tuple[ShareVector, int, int]] = OrderedDict()
        self._cache_entries = 0
        self._cache_bytes = 0
        self._cache_max_entries = cache_max_entries
        self._cache_max_bytes = cache_max_bytes

    # -- building -------------------------------------------------------------

    def add_contribution(self, work: str, authors: Mapping[str, int]) -> None:
        """Record a contribution owned by ``authors`` in proportion to weight."""
        assert type(work) is str and work not in self._works, f"work {work!r} exists already"
        items = _canonical_weights(authors, "authors", MAX_AUTHORS_PER_WORK)
        assert items, "a contribution needs at least one author"
        self._works[work] = _Work(
            kind=CONTRIBUTION,
            authors=items,
            author_weight=sum(a for _, a in items),
            components=(),
            component_weight=0,
            upstream_bps=0,
        )

    def add_output(
        self,
        work: str,
        components: Mapping[str, int],
        authors: Mapping[str, int],
        upstream_bps: int,
    ) -> None:
        """Record an output composed of existing works.

        ``upstream_bps`` of the value reaching it goes on to ``components``
        by weight, the rest to ``authors`` by weight.
        """
        assert type(work) is str and work not in self._works, f"work {work!r} exists already"
        assert type(upstream_bps) is int and 0 <= upstream_bps <= BPS_PER_UNIT
        comps = _canonical_weights(components, "components", MAX_COMPONENTS_PER_OUTPUT)
        assert comps, "an output needs at least one component"
        for c, _ in comps:
            assert c in self._works, f"unknown component {c!r}"
        items = _canonical_weights(authors, "authors", MAX_AUTHORS_PER_WORK)
        # Without authors the (1 - u) part would have nowhere to go and the
        # shares would not sum to 1.
        assert items or upstream_bps == BPS_PER_UNIT, "an output without authors must pass 10000 bps upstream"
        self._works[work] = _Work(
            kind=OUTPUT,
            authors=items,
            author_weight=sum(a for _, a in items),
            components=comps,
            component_weight=sum(k for _, k in comps),
            upstream_bps=upstream_bps,
        )
        for c, _ in comps:
            self._works[c].dependents.append(work)

    # -- changing -------------------------------------------------------------

    def retract(self, work: str) -> None:
        """From now on everything flowing into ``work`` goes to @unattributed."""
        w = self._works[work]
        assert not w.retracted, f"{work!r} is retracted already"
        w.retracted = True
        self._invalidate(work)

    def reinstate(self, work: str) -> None:
        """Undo a retraction from now on."""
        w = self._works[work]
        assert w.retracted, f"{work!r} is not retracted"
        w.retracted = False
        self._invalidate(work)

    def reassign(self, work: str, authors: Mapping[str, int]) -> None:
        """Replace the authors of ``work`` from now on (always invalidates)."""
        w = self._works[work]
        items = _canonical_weights(authors, "authors", MAX_AUTHORS_PER_WORK)
        if w.kind == CONTRIBUTION:
            assert items, "a contribution needs at least one author"
        else:
            assert items or w.upstream_bps == BPS_PER_UNIT, "an output without authors must pass 10000 bps upstream"
        w.authors = items
        w.author_weight = sum(a for _, a in items)
        self._invalidate(work)

    def _invalidate(self, work: str) -> None:
        """Drop ``work`` and everything built on it from the cache and bump
        their versions: exactly the works whose vector may have changed.

        Iterative walk of the reverse edges; O(number of such works).
        """
        seen = {work}
        stack = [work]
        while stack:
            current = stack.pop()
            w = self._works[current]
            w.version += 1
            self._cache_drop(current)
            for d in w.dependents:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)

    # -- queries --------------------------------------------------------------

    def has(self, work: str) -> bool:
        return work in self._works

    def kind(self, work: str) -> str:
        """"contribution" or "output"."""
        return self._works[work].kind

    def is_retracted(self, work: str) -> bool:
        return self._works[work].retracted

    def upstream_bps(self, work: str) -> int | None:
        """An output's upstream_bps; None for a contribution (it has none)."""
        w = self._works[work]
        return w.upstream_bps if w.kind == OUTPUT else None

    def authors(self, work: str) -> dict[str, int]:
        """The current authors and weights (a copy, sorted by id)."""
        return dict(self._works[work].authors)

    def components(self, work: str) -> dict[str, int]:
        """An output's components and weights (a copy); {} for a contribution."""
        return dict(self._works[work].components)

    def vector_version(self, work: str) -> int:
        """A counter that changes whenever ``vector(work)`` may have changed.

        It starts at 0 and only ever grows, and it depends only on the
        sequence of graph operations (never on the cache), so
        (work, version) names one vector across replays of the same log.
        """
        return self._works[work].version

    def vector(self, work: str) -> ShareVector:
        """flow(work, 1) of EVENTS.md section 3, reduced, without the fee.

        Cost: O(recipients) if cached; otherwise O(works + edges) of the
        sub-DAG below ``work``, stopping at works whose vector is cached.
        The result is cached (LRU, bounded).
        """
        hit = self._cache.get(work)
        if hit is not None:
            self._cache.move_to_end(work)
            return hit[0]
        assert work in self._works, f"unknown work {work!r}"
        g, _masses, received = self._propagate(work, use_cache=True, keep_masses=False)
        result = ShareVector.in_lowest_terms(g, received)
        self._cache_put(work, result)
        return result

    # -- the mass propagation -------------------------------------------------

    def _children(self, node: str, top: str, use_cache: bool) -> tuple[tuple[str, int], ...]:
        """The components that receive a positive share from ``node``.

        None if node is retracted (all to @unattributed), a contribution, an
        output passing 0 bps upstream, or (other than the queried work
        itself) a work whose vector is cached and serves as a leaf.
        """
        w = self._works[node]
        if w.retracted or w.kind == CONTRIBUTION or w.upstream_bps == 0:
            return ()
        if use_cache and node != top and node in self._cache:
            return ()
        return w.components

    def _local_denominator(self, node: str, top: str, use_cache: bool) -> int:
        """A number q(node) that the denominator of every factor node applies divides.

        * retracted: factor 1 (everything to @unattributed), q = 1;
        * cached leaf: factors n_r / D of its reduced cached vector, q = D;
        * contribution: a / A, q = A (A = sum of author weights);
        * output: u k / K to components and (1 - u) a / A to authors, with
          u = ub / 10 000; in lowest terms these have denominators dividing
          10 000 K / gcd(10 000 K, ub) and 10 000 A / gcd(10 000 A, 10 000 - ub),
          q = their lcm (only the parts that carry value count).
        """
        w = self._works[node]
        if w.retracted:
            return 1
        if use_cache and node != top:
            hit = self._cache.get(node)
            if hit is not None:
                return hit[0].denominator
        if w.kind == CONTRIBUTION:
            return w.author_weight
        ub = w.upstream_bps
        q = 1
        if ub > 0:
            whole = BPS_PER_UNIT * w.component_weight
            q = whole // math.gcd(whole, ub)
        if ub < BPS_PER_UNIT:
            whole = BPS_PER_UNIT * w.author_weight
            q = math.lcm(q, whole // math.gcd(whole, BPS_PER_UNIT - ub))
        return q

    def _topological_order(self, top: str, use_cache: bool) -> list[str]:
        """Works reachable from ``top`` with positive flow, parents first.

        Iterative DFS: each stack frame holds a work and the iterator over
        its children, so a chain of any depth uses heap memory, not the
        interpreter's stack.  Reverse post-order is a topological order.
        """
        post: list[str] = []
        visited = {top}
        stack: list[tuple[str, Iterator[tuple[str, int]]]] = [
            (top, iter(self._children(top, top, use_cache)))
        ]
        while stack:
            node, pending = stack[-1]
            for child, _ in pending:
                if child not in visited:
                    visited.add(child)
                    stack.append((child, iter(self._children(child, top, use_cache))))
                    break
            else:  # every child done: node is finished
                stack.pop()
                post.append(node)
        post.reverse()
        return post

    def _propagate(
        self, top: str, *, use_cache: bool, keep_masses: bool
    ) -> tuple[int, dict[str, int], dict[str, int]]:
        """Push flow(top, 1) through the graph.

        Returns (G, masses, received): ``received[r] / G`` is recipient r's
        share; ``masses[w] / G`` the fraction of the value that entered work
        w (all reached works if ``keep_masses``, else empty).
        """
        order = self._topological_order(top, use_cache)

        # Levels: longest path from top (parents come first in `order`).
        level = {top: 0}
        for node in order:
            below = level[node] + 1
            for child, _ in self._children(node, top, use_cache):
                if level.get(child, -1) < below:
                    level[child] = below
        depth = max(level.values())
        level_lcm = [1] * (depth + 1)
        for node in order:
            lv = level[node]
            level_lcm[lv] = math.lcm(level_lcm[lv], self._local_denominator(node, top, use_cache))
        g = _product(level_lcm)

        mass = {top: g}
        kept: dict[str, int] = {}
        received: dict[str, int] = {}
        for node in order:
            m = mass.pop(node)
            if keep_masses:
                kept[node] = m
            w = self._works[node]
            if w.retracted:
                received[UNATTRIBUTED] = received.get(UNATTRIBUTED, 0) + m
                continue
            if use_cache and node != top:
                hit = self._cache.get(node)
                if hit is not None:
                    self._cache.move_to_end(node)
                    cached = hit[0]
                    # Exact: the cached vector is reduced, so its
                    # denominator divides m (see module docstring).
                    scale, rest = divmod(m, cached.denominator)
                    assert rest == 0, "cached leaf mass not divisible"
                    for r, n in cached.numerators.items():
                        received[r] = received.get(r, 0) + scale * n
                    continue
            # Each share is m * num // den with num/den the factor in lowest
            # terms: one big-by-small multiply and one big-by-small exact
            # division (single-digit divisors take CPython's fast path).
            if w.kind == CONTRIBUTION:
                for p, a in w.authors:
                    num, den = _lowest(a, w.author_weight)
                    received[p] = received.get(p, 0) + m * num // den
                continue
            ub = w.upstream_bps
            if ub < BPS_PER_UNIT:
                for p, a in w.authors:
                    num, den = _lowest((BPS_PER_UNIT - ub) * a, BPS_PER_UNIT * w.author_weight)
                    received[p] = received.get(p, 0) + m * num // den
            if ub > 0:
                for c, k in w.components:
                    num, den = _lowest(ub * k, BPS_PER_UNIT * w.component_weight)
                    mass[c] = mass.get(c, 0) + m * num // den
        assert not mass, "propagation left mass behind"
        return g, kept, received

    # -- explanation ----------------------------------------------------------

    def explain(self, work: str, max_paths: int = 10, max_works: int = 50) -> Explanation:
        """The largest paths of flow(work, 1) and the works it passes through.

        Paths come from a best-first search: a priority queue of partial
        paths keyed by their share.  Every factor is <= 1, so a path's share
        never grows as it is extended and terminals come off the queue
        largest first; the search stops as soon as ``max_paths`` are known
        and the next candidate is strictly smaller (ties are all collected,
        then ordered by recipient and path).  Work is bounded by
        ``EXPLAIN_MAX_QUEUE_PUSHES`` and ``EXPLAIN_MAX_PATH_STEPS``, never
        by the (possibly exponential) number of paths.

        Worked example of EVENTS.md, fee 0 (multiply by 9/10 for fee 1000):
        ((o1,), carol, 3/5), ((o1, c1), alice, 1/5), ((o1, c2), bob, 2/15),
        ((o1, c2), carol, 1/15).

        Inflows per work are exact, from the same mass propagation as
        ``vector`` but without cache shortcuts (every work is accounted).
        """
        ex = self.explain_exact(work, max_paths, max_works)
        g = ex.denominator
        return Explanation(
            paths=tuple(PathShare(works, r, Fraction(n, g)) for works, r, n in ex.paths),
            works={w: Fraction(m, g) for w, m in ex.works.items()},
            truncated_paths=ex.truncated_paths,
            total_works=ex.total_works,
        )

    def explain_exact(self, work: str, max_paths: int = 10, max_works: int = 50) -> ExactExplanation:
        """``explain`` with every share an integer over one ``denominator``.

        For callers that store or print the shares: they skip building a
        Fraction (a gcd and a Python-level constructor) per path and per work,
        which was most of the cost of explaining a newly sold work.
        """
        assert work in self._works, f"unknown work {work!r}"
        assert type(max_paths) is int and 0 <= max_paths <= EXPLAIN_MAX_PATHS_LIMIT
        assert type(max_works) is int and 0 <= max_works <= EXPLAIN_MAX_WORKS_LIMIT
        g, masses, _ = self._propagate(work, use_cache=False, keep_masses=True)
        paths, truncated = self._largest_paths(work, max_paths, g)
        top_works = heapq.nsmallest(max_works, masses.items(), key=lambda kv: (-kv[1], kv[0]))
        return ExactExplanation(
            denominator=g,
            paths=paths,
            works=dict(top_works),
            truncated_paths=truncated,
            total_works=len(masses),
        )

    def _largest_paths(
        self, top: str, max_paths: int, g: int
    ) -> tuple[tuple[tuple[tuple[str, ...], str, int], ...], bool]:
        """Best-first search for the ``max_paths`` largest paths (see explain).

        Shares are integers over ``g``, the common denominator of the
        uncached propagation: a path visits each level of that propagation at
        most once (levels are longest distances from the top), and ``g`` is
        the product of the levels' lcms, so every path's share times ``g`` is
        an integer.  Integer keys make the queue an order of magnitude
        cheaper than Fractions, and stay exact.
        """
        if max_paths == 0:
            return (), True  # there is always at least one path
        # Queue items: (-share·g, sequence number, recipient or None, link).
        # A link is a cons cell (work, parent link) naming the path so far,
        # O(1) to extend; it is spelled out only for paths we return.  The
        # sequence number makes items totally ordered without comparing
        # links, and deterministic (push order is: authors then components,
        # each sorted by id).
        queue: list[tuple[int, int, str | None, tuple]] = []
        pushes = 0
        steps = 0
        found: list[tuple[int, str, tuple[str, ...]]] = []
        truncated = False
        heapq.heappush(queue, (-g, pushes, None, (top, None)))
        pushes += 1
        while queue:
            neg_share, _, recipient, link = heapq.heappop(queue)
            share = -neg_share
            if len(found) >= max_paths and share < found[max_paths - 1][0]:
                truncated = True  # this and every queued item are smaller
                break
            if recipient is not None:
                works: list[str] = []
                node = link
                while node is not None:
                    works.append(node[0])
                    node = node[1]
                steps += len(works)
                if steps > EXPLAIN_MAX_PATH_STEPS:
                    truncated = True
                    break
                works.reverse()
                found.append((share, recipient, tuple(works)))
                continue
            items = self._path_steps(link[0], share)
            if pushes + len(items) > EXPLAIN_MAX_QUEUE_PUSHES:
                truncated = True
                break
            for child_share, child_recipient, child_work in items:
                child_link = link if child_work is None else (child_work, link)
                heapq.heappush(queue, (-child_share, pushes, child_recipient, child_link))
                pushes += 1
        found.sort(key=lambda p: (-p[0], p[1], p[2]))
        if len(found) > max_paths:
            truncated = True
            del found[max_paths:]
        return tuple((works, r, share) for share, r, works in found), truncated

    def _path_steps(self, node: str, share: int) -> list[tuple[int, str | None, str | None]]:
        """Where the value on a path reaching ``node`` with ``share`` (an
        integer over the propagation's g) goes next: (share, recipient, None)
        for a terminal, (share, None, component) to go on.  Only positive
        shares; every division is exact (see _largest_paths)."""
        w = self._works[node]
        if w.retracted:
            return [(share, UNATTRIBUTED, None)]
        if w.kind == CONTRIBUTION:
            return [(share * a // w.author_weight, p, None) for p, a in w.authors]
        steps: list[tuple[int, str | None, str | None]] = []
        ub = w.upstream_bps
        if ub < BPS_PER_UNIT:
            den = BPS_PER_UNIT * w.author_weight
            steps.extend((share * (BPS_PER_UNIT - ub) * a // den, p, None) for p, a in w.authors)
        if ub > 0:
            den = BPS_PER_UNIT * w.component_weight
            steps.extend((share * ub * k // den, None, c) for c, k in w.components)
        return steps

    # -- the cache ------------------------------------------------------------

    def _cache_put(self, work: str, v: ShareVector) -> None:
        entries = len(v.numerators)
        size = (v.denominator.bit_length() + 7) // 8 + sum(
            (n.bit_length() + 7) // 8 + _CACHE_ENTRY_OVERHEAD_BYTES for n in v.numerators.values()
        )
        if entries > self._cache_max_entries or size > self._cache_max_bytes:
            return  # larger than the whole budget: computed, returned, not kept
        while self._cache and (
            self._cache_entries + entries > self._cache_max_entries
            or self._cache_bytes + size > self._cache_max_bytes
        ):
            oldest = next(iter(self._cache))
            self._cache_drop(oldest)
        self._cache[work] = (v, entries, size)
        self._cache_entries += entries
        self._cache_bytes += size

    def _cache_drop(self, work: str) -> None:
        hit = self._cache.pop(work, None)
        if hit is not None:
            self._cache_entries -= hit[1]
            self._cache_bytes -= hit[2]

    def cache_stats(self) -> tuple[int, int, int]:
        """(cached vectors, recipient entries, estimated bytes): for tests and ops."""
        return len(self._cache), self._cache_entries, self._cache_bytes


__all__ = [
    "CACHE_MAX_BYTES",
    "CACHE_MAX_ENTRIES",
    "CONTRIBUTION",
    "EXPLAIN_MAX_PATHS_LIMIT",
    "EXPLAIN_MAX_PATH_STEPS",
    "EXPLAIN_MAX_QUEUE_PUSHES",
    "EXPLAIN_MAX_WORKS_LIMIT",
    "ExactExplanation",
    "Explanation",
    "OUTPUT",
    "PathShare",
    "WorkGraph",
]
