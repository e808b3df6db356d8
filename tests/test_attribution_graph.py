"""WorkGraph.vector against the spec's recursive definition, and the cache.

The reference below is the spec's `flow` written literally: recursive path
enumeration with Fractions.  It is exponential and recursive, which is
fine for the small random DAGs hypothesis draws, and it shares no code with
the package.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution import UNATTRIBUTED, ShareVector, WorkGraph, from_json_obj, to_json_obj

SETTINGS = settings(max_examples=150, deadline=None)


# -- a plain model of the graph, and the reference ---------------------------


@dataclass
class Model:
    """Works in creation order with their current state."""

    order: list[str] = field(default_factory=list)
    kind: dict[str, str] = field(default_factory=dict)
    authors: dict[str, dict[str, int]] = field(default_factory=dict)
    components: dict[str, dict[str, int]] = field(default_factory=dict)
    upstream: dict[str, int] = field(default_factory=dict)
    retracted: set[str] = field(default_factory=set)

    def build(self) -> WorkGraph:
        """A fresh graph with this final state."""
        g = WorkGraph()
        for w in self.order:
            if self.kind[w] == "contribution":
                g.add_contribution(w, self.authors[w])
            else:
                g.add_output(w, self.components[w], self.authors[w], self.upstream[w])
        for w in self.order:
            if w in self.retracted:
                g.retract(w)
        return g

    def dependents_closure(self, work: str) -> set[str]:
        """work and every output that has it as a component, transitively."""
        out = {work}
        for w in self.order:  # creation order is topological
            if any(c in out for c in self.components.get(w, {})):
                out.add(w)
        return out


def reference_vector(m: Model, work: str) -> dict[str, Fraction]:
    """flow(work, 1) exactly as EVENTS.md section 3 writes it."""
    s: dict[str, Fraction] = defaultdict(Fraction)

    def flow(n: str, share: Fraction) -> None:
        if share == 0:
            return
        if n in m.retracted:
            s[UNATTRIBUTED] += share
            return
        if m.kind[n] == "contribution":
            total = sum(m.authors[n].values())
            for p, a in m.authors[n].items():
                s[p] += share * a / total
            return
        u = Fraction(m.upstream[n], 10_000)
        total_a = sum(m.authors[n].values())
        for p, a in m.authors[n].items():
            s[p] += share * (1 - u) * a / total_a
        total_k = sum(m.components[n].values())
        for c, k in m.components[n].items():
            flow(c, share * u * k / total_k)

    flow(work, Fraction(1))
    return {r: x for r, x in sorted(s.items()) if x != 0}


PROSUMERS = ["ann", "ben", "cy", "dee", "Eve", "édith"]
UPSTREAM = st.sampled_from([0, 1, 2500, 4000, 5000, 9999, 10_000])


def author_sets(min_size: int):
    return st.dictionaries(st.sampled_from(PROSUMERS), st.integers(1, 5), min_size=min_size, max_size=3)


@st.composite
def models(draw, max_works: int = 10) -> Model:
    m = Model()
    n = draw(st.integers(1, max_works))
    for i in range(n):
        w = f"w{i}"
        m.order.append(w)
        # About a third contributions (the first work must be one), the
        # rest outputs over 1-4 earlier works: shared components are common.
        if i == 0 or draw(st.integers(0, 2)) == 0:
            m.kind[w] = "contribution"
            m.authors[w] = draw(author_sets(1))
            continue
        m.kind[w] = "output"
        earlier = m.order[:-1]
        comps = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=min(4, len(earlier)), unique=True))
        m.components[w] = {c: draw(st.integers(1, 5)) for c in comps}
        m.authors[w] = draw(author_sets(0))
        m.upstream[w] = draw(UPSTREAM) if m.authors[w] else 10_000
    return m


@st.composite
def mutations(draw, m: Model) -> list[tuple]:
    """A list of ("toggle", w) / ("reassign", w, authors) / ("query", w)."""
    ops = []
    for _ in range(draw(st.integers(0, 8))):
        w = draw(st.sampled_from(m.order))
        op = draw(st.sampled_from(["toggle", "reassign", "query", "query"]))
        if op == "reassign":
            empty_ok = m.kind[w] == "output" and m.upstream[w] == 10_000
            ops.append(("reassign", w, draw(author_sets(0 if empty_ok else 1))))
        else:
            ops.append((op, w))
    return ops


def apply(m: Model, g: WorkGraph, op: tuple) -> None:
    if op[0] == "toggle":
        if op[1] in m.retracted:
            m.retracted.discard(op[1])
            g.reinstate(op[1])
        else:
            m.retracted.add(op[1])
            g.retract(op[1])
    elif op[0] == "reassign":
        m.authors[op[1]] = dict(op[2])
        g.reassign(op[1], op[2])
    else:
        g.vector(op[1])


# -- vector == the spec ------------------------------------------------------


@SETTINGS
@given(models())
def test_vector_equals_the_spec_recursion_on_random_dags(m):
    # Queried in creation order, earlier vectors are cached and serve as
    # leaves; queried in reverse order, every query walks the whole sub-DAG.
    g, cold = m.build(), m.build()
    for w in m.order:
        v = g.vector(w)
        assert v.as_fractions() == reference_vector(m, w)
        assert sum(v.as_fractions().values()) == 1
        assert v.reduced() == v  # vectors come back in lowest terms
    for w in reversed(m.order):
        assert cold.vector(w) == g.vector(w)


@SETTINGS
@given(st.data(), models())
def test_vector_after_random_mutations_equals_a_fresh_graph_and_the_spec(data, m):
    g = m.build()
    for w in m.order:  # fill the cache, so stale entries would show
        g.vector(w)
    for op in data.draw(mutations(m)):
        apply(m, g, op)
    fresh = m.build()
    for w in m.order:
        expected = reference_vector(m, w)
        assert g.vector(w).as_fractions() == expected
        assert fresh.vector(w).as_fractions() == expected
        assert g.vector(w) == fresh.vector(w)  # same reduced integers


@SETTINGS
@given(st.data(), models())
def test_invalidation_bumps_exactly_the_work_and_its_dependents(data, m):
    g = m.build()
    for w in m.order:
        g.vector(w)
    for op in data.draw(mutations(m)):
        before = {w: g.vector_version(w) for w in m.order}
        apply(m, g, op)
        after = {w: g.vector_version(w) for w in m.order}
        touched = set() if op[0] == "query" else m.dependents_closure(op[1])
        for w in m.order:
            if w in touched:
                assert after[w] > before[w], (op, w)
            else:
                assert after[w] == before[w], (op, w)


def test_invalidation_drops_only_dependents_from_the_cache():
    # x <- a <- top;  y unrelated;  retracting x must keep y's cached vector.
    g = WorkGraph()
    g.add_contribution("x", {"ann": 1})
    g.add_contribution("y", {"ben": 1})
    g.add_output("a", {"x": 1}, {"cy": 1}, 5000)
    g.add_output("top", {"a": 1, "y": 1}, {}, 10_000)
    y_vector = g.vector("y")
    g.vector("top")
    assert g.cache_stats()[0] == 2
    g.retract("x")
    assert g.cache_stats()[0] == 1  # top dropped, y kept
    assert g.vector("y") is y_vector
    # top: 1/2 to a (cy 1/4, x retracted 1/4), 1/2 to y (ben)
    assert g.vector("top").as_fractions() == {
        UNATTRIBUTED: Fraction(1, 4),
        "ben": Fraction(1, 2),
        "cy": Fraction(1, 4),
    }


def test_reassign_always_bumps_even_with_the_same_authors():
    g = WorkGraph()
    g.add_contribution("c", {"ann": 1})
    v0 = g.vector_version("c")
    g.reassign("c", {"ann": 1})
    assert g.vector_version("c") > v0


def test_versions_depend_on_operations_not_on_the_cache():
    # Replays of the same log must name the same (work, version), whatever
    # was queried or evicted in between.
    def run(query: bool, cache_entries: int) -> list[int]:
        g = WorkGraph(cache_max_entries=cache_entries)
        g.add_contribution("c", {"ann": 1})
        g.add_output("o", {"c": 1}, {"ben": 1}, 5000)
        if query:
            g.vector("o")
        g.retract("c")
        g.reinstate("c")
        g.reassign("o", {"cy": 1})
        return [g.vector_version("c"), g.vector_version("o")]

    assert run(False, 0) == run(True, 10) == run(True, 0) == [2, 3]


# -- exact sums along shared paths -------------------------------------------


def test_diamond_sums_both_paths_exactly():
    # top = {l: 1, r: 2} passes 3/4 upstream; l and r both pass everything
    # to x (by bob) -> bob gets 3/4 via l (1/4) and via r (1/2).
    g = WorkGraph()
    g.add_contribution("x", {"bob": 1})
    g.add_output("l", {"x": 1}, {"lee": 1}, 10_000)
    g.add_output("r", {"x": 1}, {}, 10_000)
    g.add_output("top", {"l": 1, "r": 2}, {"ann": 1}, 7500)
    assert g.vector("top").as_fractions() == {"ann": Fraction(1, 4), "bob": Fraction(3, 4)}


def test_diamond_ladder_with_2_pow_300_paths_is_linear_and_exact():
    # d_i = {l_i: 1, r_i: 1} (no authors, all upstream); l_i and r_i keep half
    # for their author and pass half to d_{i-1}.  So d_{i-1} receives half of
    # d_i's inflow along two paths, and
    #   L_i, R_i get (1/2)**(300 - i) / 4 each (L1: 1/2**301); z, d_0's
    # author, gets (1/2)**300.
    depth = 300
    g = WorkGraph()
    g.add_contribution("d0", {"z": 1})
    for i in range(1, depth + 1):
        g.add_output(f"l{i}", {f"d{i - 1}": 1}, {f"L{i}": 1}, 5000)
        g.add_output(f"r{i}", {f"d{i - 1}": 1}, {f"R{i}": 1}, 5000)
        g.add_output(f"d{i}", {f"l{i}": 1, f"r{i}": 1}, {}, 10_000)
    v = g.vector(f"d{depth}")
    assert v.denominator == 2 ** (depth + 1)  # L1, R1: 1/2**301
    assert v.share("z") == Fraction(1, 2**depth)
    for i in (1, 150, 300):
        assert v.share(f"L{i}") == v.share(f"R{i}") == Fraction(1, 4 * 2 ** (depth - i))
    ex = g.explain(f"d{depth}", max_paths=5)
    assert len(ex.paths) == 5 and ex.truncated_paths
    assert ex.total_works == 3 * depth + 1


def test_upstream_zero_passes_nothing_and_components_are_not_reached():
    g = WorkGraph()
    g.add_contribution("c", {"ann": 1})
    g.add_output("o", {"c": 1}, {"ben": 1}, 0)
    assert g.vector("o") == ShareVector(1, {"ben": 1})
    assert g.explain("o").total_works == 1


def test_retracted_top_goes_entirely_to_unattributed():
    g = WorkGraph()
    g.add_contribution("c", {"ann": 1})
    g.retract("c")
    assert g.vector("c") == ShareVector(1, {UNATTRIBUTED: 1})
    g.reinstate("c")
    assert g.vector("c") == ShareVector(1, {"ann": 1})


# -- the cache ---------------------------------------------------------------


def test_cached_vector_serves_as_a_leaf_for_new_compositions():
    g = WorkGraph()
    g.add_contribution("c", {"ann": 1, "ben": 2})
    g.add_output("o", {"c": 1}, {"cy": 1}, 5000)
    assert g.vector("o").as_fractions() == {"ann": Fraction(1, 6), "ben": Fraction(1, 3), "cy": Fraction(1, 2)}
    g.add_output("o2", {"o": 3, "c": 1}, {"dee": 1}, 2000)
    # o2: dee 4/5; o gets 1/5 * 3/4 = 3/20 -> cy 3/40, ann 1/40, ben 2/40;
    # c gets 1/5 * 1/4 = 1/20 -> ann 1/60, ben 2/60.
    assert g.vector("o2").as_fractions() == {
        "ann": Fraction(1, 40) + Fraction(1, 60),
        "ben": Fraction(2, 40) + Fraction(2, 60),
        "cy": Fraction(3, 40),
        "dee": Fraction(4, 5),
    }


def test_cache_is_bounded_by_entries_and_evicts_least_recently_used():
    g = WorkGraph(cache_max_entries=5)
    for i in range(6):
        g.add_contribution(f"c{i}", {f"p{i}": 1, f"q{i}": 1})
    for i in range(3):
        g.vector(f"c{i}")  # 2 entries each: c0, c1 fit; c2 evicts c0
    n, entries, _ = g.cache_stats()
    assert (n, entries) == (2, 4)
    g.vector("c1")  # c1 now most recent
    g.vector("c3")  # evicts c2, not c1
    assert g.cache_stats()[:2] == (2, 4)
    first = g.vector("c1")
    assert g.vector("c1") is first  # still cached


def test_a_vector_larger_than_the_whole_cache_is_returned_but_not_kept():
    g = WorkGraph(cache_max_bytes=10)
    g.add_contribution("c", {"ann": 1})
    assert g.vector("c") == ShareVector(1, {"ann": 1})
    assert g.cache_stats() == (0, 0, 0)


# -- programming errors and accessors ---------------------------------------


def test_graph_asserts_programming_errors():
    g = WorkGraph()
    g.add_contribution("c", {"ann": 1})
    with pytest.raises(AssertionError):
        g.add_contribution("c", {"ann": 1})  # exists
    with pytest.raises(AssertionError):
        g.add_output("o", {"nope": 1}, {"ann": 1}, 5000)  # unknown component
    with pytest.raises(AssertionError):
        g.add_output("o", {"c": 1}, {}, 5000)  # (1 - u) would vanish
    with pytest.raises(AssertionError):
        g.reassign("c", {})  # a contribution needs authors
    with pytest.raises(AssertionError):
        g.reinstate("c")  # not retracted
    g.retract("c")
    with pytest.raises(AssertionError):
        g.retract("c")


def test_accessors_report_state():
    g = WorkGraph()
    g.add_contribution("c", {"ben": 2, "ann": 1})
    g.add_output("o", {"c": 1}, {}, 10_000)
    assert g.has("c") and not g.has("x")
    assert (g.kind("c"), g.kind("o")) == ("contribution", "output")
    assert g.upstream_bps("c") is None and g.upstream_bps("o") == 10_000
    assert g.authors("c") == {"ann": 1, "ben": 2} and g.authors("o") == {}
    assert g.components("c") == {} and g.components("o") == {"c": 1}
    assert not g.is_retracted("c")


@SETTINGS
@given(models())
def test_share_vector_json_round_trips_through_hex(m):
    g = m.build()
    for w in m.order:
        v = g.vector(w).with_fee(1234)
        obj = to_json_obj(v)
        assert from_json_obj(obj) == v
        assert all(isinstance(x, str) for x in obj["n"].values())


@pytest.mark.parametrize(
    "obj",
    [
        {"d": "3", "n": {"a": "1", "b": "1"}},  # does not sum to 1
        {"d": "2", "n": {"a": "01", "b": "1"}},  # leading zero
        {"d": "2", "n": {"a": "0x1", "b": "1"}},  # prefix
        {"d": "2", "n": {"a": "1", "b": 1}},  # not a string
        {"d": "1", "n": {"a": "1"}, "x": 1},  # unknown key
        {"d": "0", "n": {}},  # zero
        {"d": "A", "n": {"a": "A"}},  # upper case
        {"d": "1g", "n": {"a": "1g"}},  # not hex
        {"d": "é", "n": {"a": "é"}},  # not ASCII
        {"d": " 1", "n": {"a": " 1"}},  # whitespace
        {"d": "1_0", "n": {"a": "1_0"}},  # separator int() would take
        {"d": "", "n": {"a": ""}},  # empty
        {"d": "-1", "n": {"a": "-1"}},  # sign
        ["d", "n"],  # not an object
    ],
)
def test_share_vector_json_rejects_malformed_input(obj):
    with pytest.raises(ValueError):
        from_json_obj(obj)
