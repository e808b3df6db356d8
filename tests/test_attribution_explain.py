"""WorkGraph.explain: the largest paths and per-work inflows, bounded and exact."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from attribution import UNATTRIBUTED, WorkGraph
from attribution.graph import EXPLAIN_MAX_PATHS_LIMIT

SETTINGS = settings(max_examples=150, deadline=None)


def worked_graph() -> WorkGraph:
    g = WorkGraph()
    g.add_contribution("c1", {"alice": 1})
    g.add_contribution("c2", {"bob": 2, "carol": 1})
    g.add_output("o1", {"c1": 1, "c2": 1}, {"carol": 1}, 4000)
    return g


def test_worked_example_paths_by_hand():
    # Before the fee (fee 1000 bps multiplies each by 9/10):
    #   carol as o1's author:        6/10                 = 3/5  (27/50 after fee)
    #   alice via c1:     4/10 * 1/2                      = 1/5  (9/50)
    #   bob via c2:       4/10 * 1/2 * 2/3                = 2/15 (3/25)
    #   carol via c2:     4/10 * 1/2 * 1/3                = 1/15 (3/50)
    ex = worked_graph().explain("o1")
    assert ex.paths == (
        (("o1",), "carol", Fraction(3, 5)),
        (("o1", "c1"), "alice", Fraction(1, 5)),
        (("o1", "c2"), "bob", Fraction(2, 15)),
        (("o1", "c2"), "carol", Fraction(1, 15)),
    )
    assert [p.share * Fraction(9, 10) for p in ex.paths] == [
        Fraction(27, 50), Fraction(9, 50), Fraction(3, 25), Fraction(3, 50)
    ]
    assert ex.works == {"o1": Fraction(1), "c1": Fraction(1, 5), "c2": Fraction(1, 5)}
    assert list(ex.works) == ["o1", "c1", "c2"]  # inflow descending, then id
    assert not ex.truncated_paths and ex.total_works == 3


def test_explain_exact_is_explain_over_one_denominator():
    # The projector stores this form: integers over G, printed reduced.
    g = worked_graph()
    exact, ex = g.explain_exact("o1"), g.explain("o1")
    d = exact.denominator
    assert [(works, r, Fraction(n, d)) for works, r, n in exact.paths] == [tuple(p) for p in ex.paths]
    assert {w: Fraction(n, d) for w, n in exact.works.items()} == ex.works
    assert (exact.truncated_paths, exact.total_works) == (ex.truncated_paths, ex.total_works)


def test_worked_example_with_c2_retracted_ends_the_path_at_c2():
    g = worked_graph()
    g.retract("c2")
    ex = g.explain("o1")
    # Equal shares 1/5: "@unattributed" sorts before "alice" ("@" is U+0040).
    assert ex.paths == (
        (("o1",), "carol", Fraction(3, 5)),
        (("o1", "c2"), UNATTRIBUTED, Fraction(1, 5)),
        (("o1", "c1"), "alice", Fraction(1, 5)),
    )


def test_max_paths_bounds_the_list_and_reports_truncation():
    ex = worked_graph().explain("o1", max_paths=2, max_works=1)
    assert [p.recipient for p in ex.paths] == ["carol", "alice"]
    assert ex.truncated_paths
    assert ex.works == {"o1": Fraction(1)} and ex.total_works == 3
    empty = worked_graph().explain("o1", max_paths=0, max_works=0)
    assert empty.paths == () and empty.truncated_paths and empty.works == {}


def test_equal_shares_are_ordered_by_recipient_then_path_whatever_the_insertion_order():
    def build(order: list[str]) -> WorkGraph:
        g = WorkGraph()
        g.add_contribution("m", {"zed": 1, "amy": 1})
        g.add_contribution("k", {"amy": 1, "zed": 1})
        g.add_output("top", {c: 1 for c in order}, {}, 10_000)
        return g

    a = build(["m", "k"]).explain("top")
    b = build(["k", "m"]).explain("top")
    assert a == b
    assert [(p.works, p.recipient) for p in a.paths] == [
        (("top", "k"), "amy"),
        (("top", "m"), "amy"),
        (("top", "k"), "zed"),
        (("top", "m"), "zed"),
    ]
    assert {p.share for p in a.paths} == {Fraction(1, 4)}
    # Cut in the middle of a tie: still the first ones by (recipient, path).
    cut = build(["m", "k"]).explain("top", max_paths=3)
    assert cut.paths == a.paths[:3] and cut.truncated_paths


# -- against all paths, enumerated naively ------------------------------------


@st.composite
def graphs(draw):
    """A small random DAG as (kind, authors, components, upstream, retracted)."""
    spec = []
    people = st.dictionaries(st.sampled_from(["ann", "ben", "cy"]), st.integers(1, 4), min_size=1, max_size=3)
    for i in range(draw(st.integers(1, 9))):
        if i == 0 or draw(st.integers(0, 2)) == 0:
            spec.append(("contribution", draw(people), {}, None, draw(st.booleans()) and i > 0))
            continue
        comps = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3, unique=True))
        authors = draw(st.one_of(st.just({}), people))
        upstream = draw(st.sampled_from([0, 3000, 5000, 10_000])) if authors else 10_000
        spec.append(("output", authors, {f"w{c}": draw(st.integers(1, 3)) for c in comps}, upstream, draw(st.booleans())))
    g = WorkGraph()
    for i, (kind, authors, comps, upstream, _) in enumerate(spec):
        if kind == "contribution":
            g.add_contribution(f"w{i}", authors)
        else:
            g.add_output(f"w{i}", comps, authors, upstream)
    for i, item in enumerate(spec[:-1]):  # keep the top itself live
        if item[4]:
            g.retract(f"w{i}")
    return g, f"w{len(spec) - 1}"


def all_paths(g: WorkGraph, top: str):
    """Every (path, recipient, share) with a positive share, plus inflows:
    the spec's recursion, unrolled with an explicit list of partial paths."""
    paths, inflow = [], defaultdict(Fraction)
    pending = [((top,), Fraction(1))]
    while pending:
        path, share = pending.pop()
        w = path[-1]
        inflow[w] += share
        if g.is_retracted(w):
            paths.append((path, UNATTRIBUTED, share))
            continue
        authors = g.authors(w)
        u = Fraction(g.upstream_bps(w) or 0, 10_000)
        keep = Fraction(1) if g.kind(w) == "contribution" else 1 - u
        for p, a in authors.items():
            if keep:
                paths.append((path, p, share * keep * a / sum(authors.values())))
        comps = g.components(w)
        for c, k in comps.items():
            if u:
                pending.append((path + (c,), share * u * k / sum(comps.values())))
    return paths, inflow


@SETTINGS
@given(graphs())
def test_explain_lists_exactly_the_largest_paths_and_exact_inflows(case):
    g, top = case
    expected, inflow = all_paths(g, top)
    expected.sort(key=lambda p: (-p[2], p[1], p[0]))
    ex = g.explain(top, max_paths=EXPLAIN_MAX_PATHS_LIMIT, max_works=1000)
    assert [tuple(p) for p in ex.paths] == expected[:EXPLAIN_MAX_PATHS_LIMIT]
    assert ex.truncated_paths == (len(expected) > EXPLAIN_MAX_PATHS_LIMIT)
    assert ex.works == dict(sorted(inflow.items(), key=lambda kv: (-kv[1], kv[0])))
    assert ex.total_works == len(inflow)
    # Summing a recipient's paths gives its share in the vector.
    per_recipient = defaultdict(Fraction)
    for _, r, share in expected:
        per_recipient[r] += share
    assert g.vector(top).as_fractions() == dict(sorted(per_recipient.items()))


@SETTINGS
@given(graphs(), st.integers(1, 5))
def test_explain_with_few_paths_is_the_prefix_of_the_full_ordering(case, k):
    g, top = case
    full = g.explain(top, max_paths=EXPLAIN_MAX_PATHS_LIMIT)
    short = g.explain(top, max_paths=k)
    assert short.paths == full.paths[:k]
    assert short.truncated_paths == (len(full.paths) > k)
    assert len(short.works) <= 50
