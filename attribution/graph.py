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

Where the works live, and what is reused
----------------------------------------
A ``WorkGraph`` keeps its works in a ``WorkStore``: ``MemoryWorks`` (a
dict, for pure use and tests) or, in the ledger, database tables behind
bounded caches (``projections.state``).  The graph asks the store for many
works at once, one level of the sub-DAG at a time, so a stored
implementation answers each level with one query and nothing needs the
whole graph in memory.

Vectors are kept per (work, vector version) by the store: the ones the
ledger computed (an LRU cache bounded in entries and bytes) and the ones it
stored with a sale.  A work whose vector is known is a leaf of later
queries: its mass is spread by that vector, so composing a new output from
already-sold works costs O(recipients of those works), not a walk down
their whole history.  Intermediate works of a query are not remembered, so
a chain 5000 deep queried only at the top costs one vector.

A work's vector changes only when the work itself or something below it is
retracted, reinstated or reassigned.  Those operations walk the reverse
edges (``dependents``, read from the store a level at a time) from the
changed work and bump exactly those works' ``version``; vectors of old
versions are never asked for again (the memory store drops them at once).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import NamedTuple, Protocol

from .cache import BoundedCache
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

# MemoryWorks' vector cache: evicted least recently used first once either
# bound would be exceeded.  A vector larger than the whole budget is
# returned but not cached.  For scale (docs/attribution.md): a 3000-deep
# remix chain's vector has 6001 recipients and takes 2.9 MB when each step
# keeps 1/4 upstream (1807-digit denominator) and 30 MB at 5001/20000
# (12 904 digits); an output of 1000 contributions by 300 people, about
# 30 KB.  64 MiB holds two of the former, thousands of the latter.
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

VectorKey = tuple[str, int]  # (work, vector version)


@dataclass(frozen=True, slots=True)
class Work:
    """One work as the graph keeps it: immutable, changed by replacing it.

    ``authors`` and ``components`` are (id, weight) pairs sorted by id, so
    iteration order (and the order of anything derived from it) never
    depends on event JSON order.  ``version`` counts the changes that may
    have changed the work's vector (its own or below it; see
    ``WorkGraph.vector_version``).
    """

    kind: str
    authors: tuple[tuple[str, int], ...]
    author_weight: int
    components: tuple[tuple[str, int], ...]
    component_weight: int
    upstream_bps: int  # 0 for contributions (never read for them)
    retracted: bool = False
    version: int = 0

    @classmethod
    def contribution(cls, authors: Mapping[str, int]) -> Work:
        items = _canonical_weights(authors, "authors", MAX_AUTHORS_PER_WORK)
        assert items, "a contribution needs at least one author"
        return cls(CONTRIBUTION, items, sum(a for _, a in items), (), 0, 0)

    @classmethod
    def output(cls, components: Mapping[str, int], authors: Mapping[str, int], upstream_bps: int) -> Work:
        assert type(upstream_bps) is int and 0 <= upstream_bps <= BPS_PER_UNIT
        comps = _canonical_weights(components, "components", MAX_COMPONENTS_PER_OUTPUT)
        assert comps, "an output needs at least one component"
        items = _canonical_weights(authors, "authors", MAX_AUTHORS_PER_WORK)
        # Without authors the (1 - u) part would have nowhere to go and the
        # shares would not sum to 1.
        assert items or upstream_bps == BPS_PER_UNIT, "an output without authors must pass 10000 bps upstream"
        return cls(OUTPUT, items, sum(a for _, a in items), comps, sum(k for _, k in comps), upstream_bps)

    def with_authors(self, authors: Mapping[str, int]) -> Work:
        items = _canonical_weights(authors, "authors", MAX_AUTHORS_PER_WORK)
        if self.kind == CONTRIBUTION:
            assert items, "a contribution needs at least one author"
        else:
            assert items or self.upstream_bps == BPS_PER_UNIT, "an output without authors must pass 10000 bps upstream"
        return replace(self, authors=items, author_weight=sum(a for _, a in items))

    def passes_on(self) -> bool:
        """Whether value reaching this work flows on to its components."""
        return not self.retracted and self.kind == OUTPUT and self.upstream_bps > 0


class WorkStore(Protocol):
    """Where a ``WorkGraph`` keeps works, reverse edges and known vectors.

    Every read takes many keys at once (a stored implementation answers
    each call with one query) and returns only what exists.  Writes are the
    graph's own changes, applied in order.
    """

    def works(self, ids: Collection[str]) -> dict[str, Work]: ...

    def put_work(self, work_id: str, work: Work) -> None: ...

    def dependents(self, ids: Collection[str]) -> dict[str, list[str]]: ...

    def add_dependent(self, component: str, dependent: str) -> None: ...

    def vectors(self, keys: Collection[VectorKey]) -> dict[VectorKey, ShareVector]: ...

    def put_vector(self, key: VectorKey, vector: ShareVector) -> None: ...


def vector_size(v: ShareVector) -> tuple[int, int]:
    """(entries, estimated bytes) of a vector, for bounded caches."""
    size = (v.denominator.bit_length() + 7) // 8 + sum(
        (n.bit_length() + 7) // 8 + _CACHE_ENTRY_OVERHEAD_BYTES for n in v.numerators.values()
    )
    return len(v.numerators), size


class MemoryWorks:
    """A ``WorkStore`` in dicts, with a bounded cache of computed vectors:
    the pure, in-memory graph (tests, small replays)."""

    def __init__(self, cache_max_entries: int = CACHE_MAX_ENTRIES, cache_max_bytes: int = CACHE_MAX_BYTES) -> None:
        self._works: dict[str, Work] = {}
        self._dependents: dict[str, list[str]] = {}
        self.cache: BoundedCache[VectorKey, ShareVector] = BoundedCache(
            cache_max_entries, cache_max_bytes, vector_size)

    def works(self, ids: Collection[str]) -> dict[str, Work]:
        found = self._works
        return {w: found[w] for w in ids if w in found}

    def put_work(self, work_id: str, work: Work) -> None:
        old = self._works.get(work_id)
        if old is not None and old.version != work.version:
            self.cache.drop((work_id, old.version))  # never asked for again
        self._works[work_id] = work

    def dependents(self, ids: Collection[str]) -> dict[str, list[str]]:
        return {w: self._dependents[w] for w in ids if w in self._dependents}

    def add_dependent(self, component: str, dependent: str) -> None:
        self._dependents.setdefault(component, []).append(dependent)

    def vectors(self, keys: Collection[VectorKey]) -> dict[VectorKey, ShareVector]:
        out = {}
        for key in keys:
            hit = self.cache.get(key)
            if hit is not None:
                out[key] = hit
        return out

    def put_vector(self, key: VectorKey, vector: ShareVector) -> None:
        self.cache.put(key, vector)


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
        store: WorkStore | None = None,
        *,
        cache_max_entries: int = CACHE_MAX_ENTRIES,
        cache_max_bytes: int = CACHE_MAX_BYTES,
    ) -> None:
        self.store: WorkStore = store if store is not None else MemoryWorks(cache_max_entries, cache_max_bytes)

    # -- building -------------------------------------------------------------

    def add_contribution(self, work: str, authors: Mapping[str, int]) -> None:
        """Record a contribution owned by ``authors`` in proportion to weight."""
        assert type(work) is str and not self.has(work), f"work {work!r} exists already"
        self.store.put_work(work, Work.contribution(authors))

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
        assert type(work) is str and not self.has(work), f"work {work!r} exists already"
        new = Work.output(components, authors, upstream_bps)
        found = self.store.works([c for c, _ in new.components])
        for c, _ in new.components:
            assert c in found, f"unknown component {c!r}"
        self.store.put_work(work, new)
        for c, _ in new.components:
            self.store.add_dependent(c, work)

    # -- changing -------------------------------------------------------------

    def retract(self, work: str) -> None:
        """From now on everything flowing into ``work`` goes to @unattributed."""
        w = self._work(work)
        assert not w.retracted, f"{work!r} is retracted already"
        self.store.put_work(work, replace(w, retracted=True))
        self._invalidate(work)

    def reinstate(self, work: str) -> None:
        """Undo a retraction from now on."""
        w = self._work(work)
        assert w.retracted, f"{work!r} is not retracted"
        self.store.put_work(work, replace(w, retracted=False))
        self._invalidate(work)

    def reassign(self, work: str, authors: Mapping[str, int]) -> None:
        """Replace the authors of ``work`` from now on (always invalidates)."""
        self.store.put_work(work, self._work(work).with_authors(authors))
        self._invalidate(work)

    def _invalidate(self, work: str) -> None:
        """Bump the version of ``work`` and of everything built on it:
        exactly the works whose vector may have changed.

        A breadth-first walk of the reverse edges, one level of dependents
        at a time (one store read per level); O(number of such works).
        """
        seen = {work}
        level = [work]
        while level:
            rows = self.store.works(level)
            for w in level:
                self.store.put_work(w, replace(rows[w], version=rows[w].version + 1))
            below = self.store.dependents(level)
            level = []
            for w in below.values():
                for d in w:
                    if d not in seen:
                        seen.add(d)
                        level.append(d)

    # -- queries --------------------------------------------------------------

    def _work(self, work: str) -> Work:
        found = self.store.works((work,))
        assert work in found, f"unknown work {work!r}"
        return found[work]

    def work(self, work: str) -> Work | None:
        return self.store.works((work,)).get(work)

    def has(self, work: str) -> bool:
        return self.work(work) is not None

    def kind(self, work: str) -> str:
        """"contribution" or "output"."""
        return self._work(work).kind

    def is_retracted(self, work: str) -> bool:
        return self._work(work).retracted

    def upstream_bps(self, work: str) -> int | None:
        """An output's upstream_bps; None for a contribution (it has none)."""
        w = self._work(work)
        return w.upstream_bps if w.kind == OUTPUT else None

    def authors(self, work: str) -> dict[str, int]:
        """The current authors and weights (a copy, sorted by id)."""
        return dict(self._work(work).authors)

    def components(self, work: str) -> dict[str, int]:
        """An output's components and weights (a copy); {} for a contribution."""
        return dict(self._work(work).components)

    def vector_version(self, work: str) -> int:
        """A counter that changes whenever ``vector(work)`` may have changed.

        It starts at 0 and only ever grows, and it depends only on the
        sequence of graph operations (never on what is cached), so
        (work, version) names one vector across replays of the same log.
        """
        return self._work(work).version

    def vector(self, work: str) -> ShareVector:
        """flow(work, 1) of EVENTS.md section 3, reduced, without the fee.

        Cost: O(recipients) if the store knows it; otherwise O(works + edges)
        of the sub-DAG below ``work``, stopping at works whose vector the
        store knows.  The result is given to the store to keep.
        """
        top = self._work(work)
        key = (work, top.version)
        known = self.store.vectors((key,)).get(key)
        if known is not None:
            return known
        works, leaves = self._gather(work, top, use_leaves=True)
        g, _masses, received = _propagate(work, works, leaves, keep_masses=False)
        result = ShareVector.in_lowest_terms(g, received)
        self.store.put_vector(key, result)
        return result

    def vectors(self, works: list[str]) -> dict[str, ShareVector]:
        """``vector`` of each of `works`: those the store knows in one read,
        the others computed one by one, after one read of the rows (and
        stored vectors) of their direct components, which each walk would
        otherwise ask the store for alone."""
        rows = self.store.works(works)
        known = self.store.vectors([(w, rows[w].version) for w in works])
        below = list({c: None for w in works if (w, rows[w].version) not in known and rows[w].passes_on()
                      for c, _ in rows[w].components})
        if below:
            below_rows = self.store.works(below)
            self.store.vectors([(c, below_rows[c].version) for c in below])
        out = {}
        for w in works:
            vector = known.get((w, rows[w].version))
            out[w] = vector if vector is not None else self.vector(w)
        return out

    def _gather(self, work: str, top: Work, *, use_leaves: bool) -> tuple[dict[str, Work], dict[str, ShareVector]]:
        """The sub-DAG below ``work`` that carries value, read from the store
        one level at a time; with ``use_leaves``, works whose vector the
        store knows end the walk (their vectors are returned as leaves)."""
        works = {work: top}
        leaves: dict[str, ShareVector] = {}
        level = [work]
        while level:
            wanted = {c: None for node in level if works[node].passes_on() and node not in leaves
                      for c, _ in works[node].components if c not in works}
            if not wanted:
                break
            found = self.store.works(wanted)
            assert len(found) == len(wanted), "a component is missing from the store"
            works.update(found)
            if use_leaves:
                for (c, _version), v in self.store.vectors([(c, found[c].version) for c in wanted]).items():
                    leaves[c] = v
            level = list(wanted)
        return works, leaves

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
        ``vector`` but without leaves (every work is accounted).
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
        assert type(max_paths) is int and 0 <= max_paths <= EXPLAIN_MAX_PATHS_LIMIT
        assert type(max_works) is int and 0 <= max_works <= EXPLAIN_MAX_WORKS_LIMIT
        top = self._work(work)
        works, _ = self._gather(work, top, use_leaves=False)
        g, masses, received = _propagate(work, works, {}, keep_masses=True)
        # The same propagation gives the work's vector: keep it, so a sale
        # explained here does not propagate again for its shares.
        key = (work, top.version)
        if not self.store.vectors((key,)):
            self.store.put_vector(key, ShareVector.in_lowest_terms(g, received))
        paths, truncated = _largest_paths(work, works, max_paths, g)
        top_works = heapq.nsmallest(max_works, masses.items(), key=lambda kv: (-kv[1], kv[0]))
        return ExactExplanation(
            denominator=g,
            paths=paths,
            works=dict(top_works),
            truncated_paths=truncated,
            total_works=len(masses),
        )

    def cache_stats(self) -> tuple[int, int, int]:
        """(cached vectors, recipient entries, estimated bytes) of a
        ``MemoryWorks`` store: for tests and ops."""
        store = self.store
        assert isinstance(store, MemoryWorks)
        return store.cache.stats()


# -- the mass propagation (pure: over a gathered sub-DAG) ---------------------


def _children(node: str, top: str, works: Mapping[str, Work], leaves: Mapping[str, ShareVector]) -> tuple[tuple[str, int], ...]:
    """The components that receive a positive share from ``node``.

    None if node is retracted (all to @unattributed), a contribution, an
    output passing 0 bps upstream, or (other than the queried work itself)
    a leaf: a work whose vector is known.
    """
    w = works[node]
    if not w.passes_on() or (node != top and node in leaves):
        return ()
    return w.components


def _local_denominator(node: str, top: str, works: Mapping[str, Work], leaves: Mapping[str, ShareVector]) -> int:
    """A number q(node) that the denominator of every factor node applies divides.

    * retracted: factor 1 (everything to @unattributed), q = 1;
    * leaf: factors n_r / D of its reduced known vector, q = D;
    * contribution: a / A, q = A (A = sum of author weights);
    * output: u k / K to components and (1 - u) a / A to authors, with
      u = ub / 10 000; in lowest terms these have denominators dividing
      10 000 K / gcd(10 000 K, ub) and 10 000 A / gcd(10 000 A, 10 000 - ub),
      q = their lcm (only the parts that carry value count).
    """
    w = works[node]
    if w.retracted:
        return 1
    if node != top:
        leaf = leaves.get(node)
        if leaf is not None:
            return leaf.denominator
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


def _topological_order(top: str, works: Mapping[str, Work], leaves: Mapping[str, ShareVector]) -> list[str]:
    """Works reachable from ``top`` with positive flow, parents first.

    Iterative DFS: each stack frame holds a work and the iterator over
    its children, so a chain of any depth uses heap memory, not the
    interpreter's stack.  Reverse post-order is a topological order.
    """
    post: list[str] = []
    visited = {top}
    stack: list[tuple[str, Iterator[tuple[str, int]]]] = [(top, iter(_children(top, top, works, leaves)))]
    while stack:
        node, pending = stack[-1]
        for child, _ in pending:
            if child not in visited:
                visited.add(child)
                stack.append((child, iter(_children(child, top, works, leaves))))
                break
        else:  # every child done: node is finished
            stack.pop()
            post.append(node)
    post.reverse()
    return post


def _propagate(
    top: str, works: Mapping[str, Work], leaves: Mapping[str, ShareVector], *, keep_masses: bool
) -> tuple[int, dict[str, int], dict[str, int]]:
    """Push flow(top, 1) through the gathered sub-DAG.

    Returns (G, masses, received): ``received[r] / G`` is recipient r's
    share; ``masses[w] / G`` the fraction of the value that entered work
    w (all reached works if ``keep_masses``, else empty).
    """
    order = _topological_order(top, works, leaves)

    # Levels: longest path from top (parents come first in `order`).
    level = {top: 0}
    for node in order:
        below = level[node] + 1
        for child, _ in _children(node, top, works, leaves):
            if level.get(child, -1) < below:
                level[child] = below
    depth = max(level.values())
    level_lcm = [1] * (depth + 1)
    for node in order:
        lv = level[node]
        level_lcm[lv] = math.lcm(level_lcm[lv], _local_denominator(node, top, works, leaves))
    g = _product(level_lcm)

    mass = {top: g}
    kept: dict[str, int] = {}
    received: dict[str, int] = {}
    for node in order:
        m = mass.pop(node)
        if keep_masses:
            kept[node] = m
        w = works[node]
        if w.retracted:
            received[UNATTRIBUTED] = received.get(UNATTRIBUTED, 0) + m
            continue
        if node != top:
            leaf = leaves.get(node)
            if leaf is not None:
                # Exact: the leaf's vector is reduced, so its denominator
                # divides m (see module docstring).
                scale, rest = divmod(m, leaf.denominator)
                assert rest == 0, "leaf mass not divisible"
                for r, n in leaf.numerators.items():
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


def _largest_paths(
    top: str, works: Mapping[str, Work], max_paths: int, g: int
) -> tuple[tuple[tuple[tuple[str, ...], str, int], ...], bool]:
    """Best-first search for the ``max_paths`` largest paths (see explain).

    Shares are integers over ``g``, the common denominator of the
    leafless propagation: a path visits each level of that propagation at
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
            path: list[str] = []
            node = link
            while node is not None:
                path.append(node[0])
                node = node[1]
            steps += len(path)
            if steps > EXPLAIN_MAX_PATH_STEPS:
                truncated = True
                break
            path.reverse()
            found.append((share, recipient, tuple(path)))
            continue
        items = _path_steps(works[link[0]], share)
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
    return tuple((path, r, share) for share, r, path in found), truncated


def _path_steps(w: Work, share: int) -> list[tuple[int, str | None, str | None]]:
    """Where the value on a path reaching work ``w`` with ``share`` (an
    integer over the propagation's g) goes next: (share, recipient, None)
    for a terminal, (share, None, component) to go on.  Only positive
    shares; every division is exact (see _largest_paths)."""
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
    "MemoryWorks",
    "OUTPUT",
    "PathShare",
    "VectorKey",
    "Work",
    "WorkGraph",
    "WorkStore",
    "vector_size",
]
