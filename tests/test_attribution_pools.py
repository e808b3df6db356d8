"""Usage pools (EVENTS.md section 7): the two-stage split, one test per rule.

The worked example and the public fixture (examples/pools.jsonl with
pools.expected.json) are reproduced with the attribution package alone; the
properties compare the streaming, one-denominator code with the spec's
wording written with Fractions.
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import pytest
from conftest import EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution import (
    PLATFORM,
    UNATTRIBUTED,
    ShareVector,
    WorkGraph,
    allocate,
    fraction_str,
)
from attribution.allocation import MAX_AMOUNT_MINOR
from attribution.pools import (
    PRO_RATA,
    USER_CENTRIC,
    PoolSplitter,
    WorkSplits,
    other_method,
    pool_shares,
    split_by_usage,
    split_pool,
)

SETTINGS = settings(max_examples=200, deadline=None)

# -- helpers ---------------------------------------------------------------------

# A pool as tests write it: subscriber -> (F(s), [(work, count), ...]).
Pool = dict[str, tuple[int, list[tuple[str, int]]]]


def stage1(pool: Pool) -> WorkSplits:
    splitter = PoolSplitter()
    for subscriber in sorted(pool):
        funded, rows = pool[subscriber]
        splitter.add(subscriber, funded, rows)
    return splitter.finish()


def spec_alloc(amount: int, weights: dict[str, Fraction | int]) -> dict[str, int]:
    """Largest remainder as section 3 words it, with Fractions."""
    total = sum(weights.values())
    exact = {r: Fraction(amount) * w / total for r, w in weights.items()}
    floors = {r: x.numerator // x.denominator for r, x in exact.items()}
    left = amount - sum(floors.values())
    for r in sorted(exact, key=lambda r: (-(exact[r] - floors[r]), r))[:left]:
        floors[r] += 1
    return dict(sorted(floors.items()))


def spec_stage1(pool: Pool, method: str) -> dict[str, int]:
    """Section 7's stage 1, word for word."""
    own = {s: {} for s in pool}
    for s, (_, rows) in pool.items():
        for w, c in rows:
            own[s][w] = own[s].get(w, 0) + c
    totals: dict[str, int] = {}
    for uses in own.values():
        for w, c in uses.items():
            totals[w] = totals.get(w, 0) + c
    if not totals:
        return {}
    x = sum(f for f, _ in pool.values())
    if method == PRO_RATA:
        return spec_alloc(x, totals)
    m: dict[str, int] = {}
    for s, (f, _) in pool.items():
        if f > 0:
            for w, units in spec_alloc(f, own[s] or totals).items():
                m[w] = m.get(w, 0) + units
    return dict(sorted(m.items()))


def spec_stage2(x: int, works: dict[str, int], vectors: dict[str, ShareVector], fee_bps: int) -> dict[str, Fraction]:
    """S = {@platform: f} + (1 - f) * sum_w (m(w) / X) * V(w), with Fractions."""
    if x == 0:
        return {}
    f = Fraction(fee_bps, 10_000)
    s: dict[str, Fraction] = {PLATFORM: f} if f else {}
    if not works:
        if f < 1:
            s[UNATTRIBUTED] = 1 - f
        return s
    for w, units in works.items():
        for r, share in vectors[w].as_fractions().items():
            add = (1 - f) * Fraction(units, x) * share
            if add:
                s[r] = s.get(r, Fraction(0)) + add
    return dict(sorted(s.items()))


def section7_graph() -> WorkGraph:
    """c1 by {alice: 1}; c2 by {bob: 1}; o1 = {c1: 1} by {carol: 1}, 5000 bps
    upstream: V(o1) = {alice: 1/2, carol: 1/2}, V(c2) = {bob: 1}."""
    g = WorkGraph()
    g.add_contribution("c1", {"alice": 1})
    g.add_contribution("c2", {"bob": 1})
    g.add_output("o1", {"c1": 1}, {"carol": 1}, 5000)
    return g


WORKED: Pool = {"s1": (60, [("o1", 1)]), "s2": (30, [("c2", 9)]), "s3": (11, [])}


def shares_text(v: ShareVector | None) -> dict[str, str]:
    return {} if v is None else {r: fraction_str(f) for r, f in v.as_fractions().items()}


# -- the worked example of section 7 -----------------------------------------------


def test_worked_example_vectors_of_the_section_7_graph():
    g = section7_graph()
    assert g.vector("o1").as_fractions() == {"alice": Fraction(1, 2), "carol": Fraction(1, 2)}
    assert g.vector("c2").as_fractions() == {"bob": Fraction(1)}


def test_worked_example_pro_rata_to_the_minor_unit():
    splits = stage1(WORKED)
    assert (splits.amount_minor, splits.uses) == (101, 10)
    assert splits.pro_rata == {"c2": 91, "o1": 10}
    s = pool_shares(101, splits.pro_rata, section7_graph().vector, 1000)
    assert shares_text(s) == {"@platform": "1/10", "alice": "9/202", "bob": "819/1010", "carol": "9/202"}
    # exact 10.1, 4.5, 81.9, 4.5: two units left, to bob (.9) then alice before carol on the tie
    assert allocate(101, s) == {"@platform": 10, "alice": 5, "bob": 82, "carol": 4}


def test_worked_example_user_centric_to_the_minor_unit():
    splits = stage1(WORKED)
    assert splits.user_centric == {"c2": 40, "o1": 61}  # s1 60 to o1, s2 30 to c2, s3's 11 as {c2: 10, o1: 1}
    s = pool_shares(101, splits.user_centric, section7_graph().vector, 1000)
    assert shares_text(s) == {"@platform": "1/10", "alice": "549/2020", "bob": "36/101", "carol": "549/2020"}
    assert allocate(101, s) == {"@platform": 10, "alice": 28, "bob": 36, "carol": 27}


# -- the public fixture: pools P, U and E ------------------------------------------


def fixture_pools() -> dict[str, dict]:
    """Replay examples/pools.jsonl's accepted events with the attribution
    package alone: the graph, the fee, and each pool's funding and usage up
    to its close; at the close, split the pool as an explanation shows it."""
    lines = [json.loads(raw) for raw in (EXAMPLES / "pools.jsonl").read_text("utf-8").splitlines()]
    expected = json.loads((EXAMPLES / "pools.expected.json").read_text("utf-8"))
    accepted = {o["id"] for o in expected["outcomes"] if o["outcome"] == "accepted"}
    g = WorkGraph()
    fee_bps = 0
    pools: dict[str, dict] = {}
    explained: dict[str, dict] = {}
    for event in lines:
        if event["id"] not in accepted:
            continue
        kind, data = event["type"], event["data"]
        if kind == "policy.set":
            fee_bps = data["platform_fee_bps"]
        elif kind == "contribution.recorded":
            g.add_contribution(data["work"], data["authors"])
        elif kind == "output.composed":
            g.add_output(data["work"], data["components"], data.get("authors", {}), data.get("upstream_bps", 10_000))
        elif kind == "pool.opened":
            pools[data["pool"]] = {"currency": data["currency"], "method": data["method"], "subscribers": {}}
        elif kind == "pool.funded":
            funded, rows = pools[data["pool"]]["subscribers"].get(data["subscriber"], (0, []))
            pools[data["pool"]]["subscribers"][data["subscriber"]] = (funded + data["amount"], rows)
        elif kind == "usage.recorded":
            funded, rows = pools[data["pool"]]["subscribers"].get(data["subscriber"], (0, []))
            pools[data["pool"]]["subscribers"][data["subscriber"]] = (funded, rows + list(data["uses"].items()))
        elif kind == "pool.closed":
            pool = pools[data["pool"]]
            splits = stage1(pool["subscribers"])
            booked, alternative = split_pool(splits, pool["method"], g.vector, fee_bps)
            explained[data["pool"]] = {
                "value": data["pool"],
                "amount": splits.amount_minor,
                "currency": pool["currency"],
                "shares": shares_text(booked.shares),
                "allocation": booked.allocation,
                "pool": {"method": booked.method, "works": booked.works,
                         "alternative": {"method": alternative.method, "works": alternative.works,
                                         "allocation": alternative.allocation}},
            }
    return explained


@pytest.mark.parametrize("pool", ["P", "U", "E"])
def test_fixture_pool_explanations_are_reproduced(pool):
    expected = json.loads((EXAMPLES / "pools.expected.json").read_text("utf-8"))["explain"][pool]
    got = fixture_pools()[pool]
    assert got == {k: v for k, v in expected.items() if k != "reversed"}
    # Maps in code point order of their keys, as the fixture holds them.
    assert list(got["shares"]) == list(expected["shares"])
    assert list(got["pool"]["works"]) == list(expected["pool"]["works"])


# -- stage 1: the rules --------------------------------------------------------------


def test_pro_rata_splits_the_pool_by_each_work_s_share_of_all_usage():
    # u = {a: 2, b: 1} over 3: 10 units are 6.67 and 3.33
    assert stage1({"s1": (10, [("a", 2)]), "s2": (0, [("b", 1)])}).pro_rata == {"a": 7, "b": 3}


def test_user_centric_splits_each_subscriber_s_money_by_their_own_usage():
    # s1's 10 all to a; s2 paid nothing, so b gets nothing of s1's money
    pool = {"s1": (10, [("a", 2)]), "s2": (0, [("b", 1)])}
    assert stage1(pool).user_centric == {"a": 10}


def test_user_centric_sums_every_subscriber_s_own_split():
    pool = {"s1": (10, [("a", 1), ("b", 1)]), "s2": (7, [("b", 2), ("c", 1)])}
    # s1: {a: 5, b: 5}; s2: 7 * 2/3 = 4.67, 7 * 1/3 = 2.33 -> {b: 5, c: 2}
    assert stage1(pool).user_centric == {"a": 5, "b": 10, "c": 2}


def test_subscriber_who_paid_but_used_nothing_follows_everyone_s_usage_including_non_payers():
    # s3 paid 11 and used nothing: everyone's usage {a: 1, b: 9} includes s2, who paid nothing
    pool = {"s1": (60, [("a", 1)]), "s2": (0, [("b", 9)]), "s3": (11, [])}
    assert stage1(pool).user_centric == {"a": 61, "b": 10}


def test_each_idle_subscriber_is_rounded_on_their_own():
    # Three idle subscribers of 1 unit each: each unit goes to the larger share (b),
    # where alloc(3, {a: 2/5, b: 3/5}) would give a 1 and b 2.
    pool = {"s0": (0, [("a", 2), ("b", 3)]), "s1": (1, []), "s2": (1, []), "s3": (1, [])}
    assert stage1(pool).user_centric == {"a": 0, "b": 3}
    assert spec_stage1(pool, USER_CENTRIC) == {"a": 0, "b": 3}


def test_idle_subscribers_with_different_amounts_are_each_split_by_everyone_s_usage():
    pool = {"s0": (0, [("a", 1), ("b", 2)]), "s1": (2, []), "s2": (4, []), "s3": (2, [])}
    # alloc(2) = {a: 1, b: 1} (0.67, 1.33: b's .33 loses to a's .67); alloc(4) = {a: 1, b: 3}
    assert stage1(pool).user_centric == {"a": 3, "b": 5}
    assert stage1(pool).user_centric == spec_stage1(pool, USER_CENTRIC)


def test_nothing_used_means_no_stage_1():
    splits = stage1({"s1": (7, []), "s2": (3, [])})
    assert (splits.amount_minor, splits.uses, splits.pro_rata, splits.user_centric) == (10, 0, {}, {})


def test_pro_rata_names_every_used_work_even_with_0_units():
    # 1 unit over {a: 1, b: 2}: b gets it, a gets an entry of 0
    assert stage1({"s1": (1, [("a", 1), ("b", 2)])}).pro_rata == {"a": 0, "b": 1}


def test_user_centric_names_every_work_used_by_a_subscriber_who_paid_and_no_other():
    pool = {"s1": (1, [("a", 1), ("b", 2)]), "s2": (0, [("c", 5)])}
    assert stage1(pool).user_centric == {"a": 0, "b": 1}


def test_user_centric_names_every_used_work_when_someone_paid_but_used_nothing():
    pool = {"s1": (1, [("a", 1)]), "s2": (0, [("c", 5)]), "s3": (1, [])}
    assert stage1(pool).user_centric == {"a": 1, "c": 1}
    pool = {"s1": (1, [("a", 1)]), "s2": (0, [("c", 1), ("d", 1)]), "s3": (1, [])}
    assert stage1(pool).user_centric == {"a": 2, "c": 0, "d": 0}  # every used work named, 0 included


def test_stage_1_ties_are_broken_by_work_id():
    # 1 unit over equal usage of three works goes to the first in code point order
    assert stage1({"s1": (1, [("b", 1), ("B", 1), ("a", 1)])}).pro_rata == {"B": 1, "a": 0, "b": 0}


def test_pool_with_no_funding_has_pro_rata_works_of_0_and_no_user_centric_works():
    # Section 7 read literally: pro_rata's alloc(0, ...) names every used work;
    # under user_centric nobody paid, so no allocation names any work.
    splits = stage1({"s1": (0, [("a", 1), ("b", 2)])})
    assert (splits.amount_minor, splits.pro_rata, splits.user_centric) == (0, {"a": 0, "b": 0}, {})


def test_rows_of_one_subscriber_add_up():
    one = stage1({"s1": (5, [("a", 3), ("b", 1)]), "s2": (4, [("b", 2)])})
    split = stage1({"s1": (5, [("a", 1), ("b", 1), ("a", 2)]), "s2": (4, [("b", 1), ("b", 1)])})
    assert one == split


def test_subscribers_must_come_once_each_in_increasing_id_order():
    splitter = PoolSplitter()
    splitter.add("s2", 1, [("a", 1)])
    with pytest.raises(AssertionError, match="once each"):
        splitter.add("s2", 1, [("a", 1)])
    with pytest.raises(AssertionError, match="once each"):
        splitter.add("s1", 1, [("a", 1)])
    # code point order: "B" < "a"
    splitter = PoolSplitter()
    splitter.add("B", 1, [])
    splitter.add("a", 1, [])


def test_funding_past_2_pow_63_minus_1_is_refused():
    splitter = PoolSplitter()
    splitter.add("s1", MAX_AMOUNT_MINOR, [("a", 1)])
    with pytest.raises(AssertionError, match="2\\^63"):
        splitter.add("s2", 1, [("a", 1)])


@pytest.mark.parametrize("count", [0, -1, 1_000_000_001, True, 1.0])
def test_use_counts_are_1_to_1e9(count):
    with pytest.raises(AssertionError):
        PoolSplitter().add("s1", 1, [("a", count)])


def test_a_pool_is_split_to_works_at_most_once():
    splitter = PoolSplitter()
    splitter.finish()
    with pytest.raises(AssertionError):
        splitter.finish()
    with pytest.raises(AssertionError):
        splitter.add("s1", 1, [])


def test_split_by_usage_is_largest_remainder_over_works():
    assert split_by_usage(101, {"o1": 1, "c2": 9}) == {"c2": 91, "o1": 10}
    assert split_by_usage(0, {"o1": 1}) == {"o1": 0}


# -- stage 2: the rules --------------------------------------------------------------


def vectors_of(vectors: dict[str, ShareVector], asked: list[str] | None = None):
    def vector_of(work: str) -> ShareVector:
        if asked is not None:
            asked.append(work)
        return vectors[work]

    return vector_of


def test_stage_2_weights_each_work_s_vector_by_its_units_then_takes_the_fee():
    vectors = {"a": ShareVector(3, {"p": 1, "q": 2}), "b": ShareVector(1, {"q": 1})}
    s = pool_shares(4, {"a": 3, "b": 1}, vectors_of(vectors), 2000)
    # (3/4 {p: 1/3, q: 2/3} + 1/4 {q: 1}) = {p: 1/4, q: 3/4}; times 4/5 plus 1/5 to @platform
    assert s.as_fractions() == {PLATFORM: Fraction(1, 5), "p": Fraction(1, 5), "q": Fraction(3, 5)}


def test_stage_2_is_in_lowest_terms():
    vectors = {"a": ShareVector(6, {"p": 2, "q": 4}), "b": ShareVector(4, {"q": 2, "p": 2})}
    s = pool_shares(10, {"a": 5, "b": 5}, vectors_of(vectors), 1000)
    # {p: 1/6 + 1/4, q: 1/3 + 1/4} = {p: 5/12, q: 7/12}; with the fee {p: 3/8, q: 21/40, @platform: 1/10}
    assert s == s.reduced() and s.denominator == 40
    assert s.as_fractions() == {PLATFORM: Fraction(1, 10), "p": Fraction(3, 8), "q": Fraction(21, 40)}


def test_stage_2_has_one_recipient_entry_per_recipient_reached_along_several_works():
    vectors = {"a": ShareVector(2, {"p": 1, "q": 1}), "b": ShareVector(2, {"q": 1, "r": 1})}
    s = pool_shares(2, {"a": 1, "b": 1}, vectors_of(vectors), 0)
    assert s.as_fractions() == {"p": Fraction(1, 4), "q": Fraction(1, 2), "r": Fraction(1, 4)}


def test_stage_2_leaves_out_whoever_is_reached_only_through_works_with_0_units():
    vectors = {"a": ShareVector(1, {"p": 1}), "b": ShareVector(1, {"q": 1})}
    asked: list[str] = []
    s = pool_shares(1, {"a": 0, "b": 1}, vectors_of(vectors, asked), 1000)
    assert s.recipients() == [PLATFORM, "q"]
    assert asked == ["b"]  # V(a) is never needed


def test_stage_2_has_no_platform_entry_when_the_fee_is_0():
    s = pool_shares(101, {"c2": 91, "o1": 10}, section7_graph().vector, 0)
    assert PLATFORM not in s.numerators
    assert shares_text(s) == {"alice": "5/101", "bob": "91/101", "carol": "5/101"}


def test_stage_2_when_nothing_was_used_is_the_fee_and_unattributed():
    assert shares_text(pool_shares(7, {}, vectors_of({}), 1000)) == {"@platform": "1/10", "@unattributed": "9/10"}
    assert allocate(7, pool_shares(7, {}, vectors_of({}), 1000)) == {"@platform": 1, "@unattributed": 6}


def test_stage_2_when_nothing_was_used_and_the_fee_is_0_is_all_unattributed():
    assert shares_text(pool_shares(7, {}, vectors_of({}), 0)) == {"@unattributed": "1/1"}


def test_stage_2_when_the_fee_is_everything_is_all_platform():
    assert shares_text(pool_shares(7, {}, vectors_of({}), 10_000)) == {"@platform": "1/1"}
    assert shares_text(pool_shares(101, {"c2": 91, "o1": 10}, section7_graph().vector, 10_000)) == {"@platform": "1/1"}


def test_stage_2_of_a_pool_with_no_funding_is_empty():
    assert pool_shares(0, {}, vectors_of({}), 1000) is None
    assert pool_shares(0, {"a": 0, "b": 0}, vectors_of({}), 1000) is None


def test_stage_2_needs_stage_1_to_place_every_unit():
    with pytest.raises(AssertionError, match="every unit"):
        pool_shares(10, {"a": 9}, vectors_of({"a": ShareVector(1, {"p": 1})}), 0)


def test_stage_2_flows_through_a_retracted_work_to_unattributed():
    g = section7_graph()
    g.retract("c1")
    s = pool_shares(101, {"c2": 91, "o1": 10}, g.vector, 1000)
    # o1 keeps half for carol; the half to c1 goes to @unattributed
    assert shares_text(s) == {"@platform": "1/10", "@unattributed": "9/202", "bob": "819/1010", "carol": "9/202"}


# -- the alternative ---------------------------------------------------------------------


def test_the_alternative_is_the_other_method():
    assert other_method(PRO_RATA) == USER_CENTRIC and other_method(USER_CENTRIC) == PRO_RATA
    booked, alternative = split_pool(stage1(WORKED), USER_CENTRIC, section7_graph().vector, 1000)
    assert (booked.method, alternative.method) == (USER_CENTRIC, PRO_RATA)
    assert alternative.works == {"c2": 91, "o1": 10}
    assert alternative.allocation == {"@platform": 10, "alice": 5, "bob": 82, "carol": 4}


def test_when_both_methods_give_the_same_works_stage_2_is_computed_once():
    asked: list[str] = []
    g = section7_graph()
    booked, alternative = split_pool(stage1({"s1": (101, [("o1", 1), ("c2", 9)])}), PRO_RATA,
                                     vectors_of({"o1": g.vector("o1"), "c2": g.vector("c2")}, asked), 1000)
    assert booked.works == alternative.works and booked.shares is alternative.shares
    assert sorted(asked) == ["c2", "o1"]


def test_a_pool_with_no_funding_books_nothing_under_either_method():
    booked, alternative = split_pool(stage1({"s1": (0, [("o1", 1)])}), PRO_RATA, section7_graph().vector, 1000)
    assert (booked.works, booked.shares, booked.allocation) == ({"o1": 0}, None, {})
    assert (alternative.works, alternative.shares, alternative.allocation) == ({}, None, {})


# -- properties ------------------------------------------------------------------------

WORK = st.sampled_from(["a", "b", "B", "c", "é", "w1", "w10", "w2"])
SUBSCRIBER = st.from_regex(r"s[0-9]{1,3}", fullmatch=True)
ROWS = st.lists(st.tuples(WORK, st.one_of(st.integers(1, 5), st.integers(1, 1_000_000_000))), max_size=6)
FUNDING = st.one_of(st.just(0), st.integers(1, 200), st.integers(1, 10**15))
POOLS = st.dictionaries(SUBSCRIBER, st.tuples(FUNDING, ROWS), max_size=8)
FEE = st.one_of(st.sampled_from([0, 1000, 10_000]), st.integers(0, 10_000))


@st.composite
def vectors(draw) -> dict[str, ShareVector]:
    out = {}
    for work in ["a", "b", "B", "c", "é", "w1", "w10", "w2"]:
        recipients = draw(st.lists(st.sampled_from(["p", "q", "r", "Z", UNATTRIBUTED]), min_size=1, max_size=4,
                                   unique=True))
        nums = {r: draw(st.one_of(st.integers(1, 6), st.integers(1, 10**20))) for r in recipients}
        out[work] = ShareVector(sum(nums.values()), nums)
    return out


@SETTINGS
@given(POOLS)
def test_stage_1_is_the_spec_s_wording_under_both_methods(pool):
    splits = stage1(pool)
    assert splits.pro_rata == spec_stage1(pool, PRO_RATA)
    assert splits.user_centric == spec_stage1(pool, USER_CENTRIC)


@SETTINGS
@given(POOLS)
def test_stage_1_sums_to_the_pool_s_funding_under_both_methods(pool):
    splits = stage1(pool)
    assert splits.amount_minor == sum(f for f, _ in pool.values())
    if splits.uses:
        assert sum(splits.pro_rata.values()) == splits.amount_minor
        assert sum(splits.user_centric.values()) == splits.amount_minor
    else:
        assert splits.pro_rata == splits.user_centric == {}


@SETTINGS
@given(POOLS, vectors(), FEE, st.sampled_from([PRO_RATA, USER_CENTRIC]))
def test_stage_2_is_the_spec_s_formula_and_its_allocation_sums_to_the_funding(pool, vs, fee, method):
    splits = stage1(pool)
    booked, alternative = split_pool(splits, method, vs.__getitem__, fee)
    for split in (booked, alternative):
        want = spec_stage2(splits.amount_minor, split.works, vs, fee)
        assert (split.shares.as_fractions() if split.shares else {}) == want
        assert sum(split.allocation.values()) == splits.amount_minor
        assert split.allocation == (spec_alloc(splits.amount_minor, want) if want else {})


@SETTINGS
@given(SUBSCRIBER, st.integers(1, 10**15), ROWS)
def test_with_one_subscriber_who_paid_the_two_methods_agree(subscriber, funded, rows):
    splits = stage1({subscriber: (funded, rows)})
    assert splits.pro_rata == splits.user_centric


@SETTINGS
@given(POOLS, SUBSCRIBER, ROWS)
def test_a_subscriber_who_paid_nothing_changes_user_centric_only_through_everyone_s_usage(pool, extra, rows):
    if extra in pool:
        return
    with_extra = stage1({**pool, extra: (0, rows)}).user_centric
    # The same as the pool without them, with the idle following the usage totals that include them ...
    everyone: dict[str, int] = {}
    for _, r in [*pool.values(), (0, rows)]:
        for w, c in r:
            everyone[w] = everyone.get(w, 0) + c
    want: dict[str, int] = {}
    if everyone:
        for f, r in pool.values():
            if f > 0:
                uses: dict[str, int] = {}
                for w, c in r:
                    uses[w] = uses.get(w, 0) + c
                for w, units in spec_alloc(f, uses or everyone).items():
                    want[w] = want.get(w, 0) + units
    assert with_extra == dict(sorted(want.items()))
    # ... and exactly the same when every subscriber who paid used something.
    if all(r for f, r in pool.values() if f > 0) and any(r for _, r in pool.values()):
        assert with_extra == stage1(pool).user_centric


@SETTINGS
@given(POOLS, st.randoms(use_true_random=False))
def test_splitting_a_subscriber_s_usage_into_several_rows_changes_nothing(pool, rnd):
    split_pool_: Pool = {}
    for s, (f, rows) in pool.items():
        pieces = []
        for w, c in rows:
            while c > 1 and rnd.random() < 0.5:
                part = rnd.randint(1, c - 1)
                pieces.append((w, part))
                c -= part
            pieces.append((w, c))
        rnd.shuffle(pieces)
        split_pool_[s] = (f, pieces)
    assert stage1(split_pool_) == stage1(pool)


# Counts that stay within a row's 10^9 when scaled by up to 1000.
SCALABLE_POOLS = st.dictionaries(
    SUBSCRIBER, st.tuples(FUNDING, st.lists(st.tuples(WORK, st.integers(1, 1_000_000)), max_size=6)), max_size=8)


@SETTINGS
@given(SCALABLE_POOLS, st.integers(2, 1000))
def test_scaling_all_counts_by_k_changes_nothing(pool, k):
    scaled = {s: (f, [(w, c * k) for w, c in rows]) for s, (f, rows) in pool.items()}
    a, b = stage1(pool), stage1(scaled)
    assert (a.pro_rata, a.user_centric) == (b.pro_rata, b.user_centric)
    assert b.uses == k * a.uses


@SETTINGS
@given(POOLS, st.permutations(range(8)))
def test_the_order_of_a_subscriber_s_rows_changes_nothing(pool, order):
    shuffled = {s: (f, [rows[i] for i in order if i < len(rows)]) for s, (f, rows) in pool.items()}
    assert stage1(shuffled) == stage1(pool)


# -- scale -----------------------------------------------------------------------------


def test_a_pool_of_20_000_subscribers_over_20_000_works_streams():
    # A tenth of the bench, as a test: heavy-tailed usage, a few price points,
    # a third of the subscribers idle; one work in ten an output of two contributions.
    import random

    rnd = random.Random(15)
    works = [f"w{i:05d}" for i in range(20_000)]
    g = WorkGraph()
    for i, w in enumerate(works):
        if i % 10 == 9:
            g.add_output(w, {works[i - 1]: 1, works[i - 2]: 2}, {f"p{i % 997}": 1}, 3000)
        else:
            g.add_contribution(w, {f"p{i % 997}": 1, f"p{(7 * i) % 997}": 2})
    splitter = PoolSplitter()
    x = 0
    rows = 0
    for s in range(20_000):
        funded = rnd.choice((0, 499, 999, 999, 1499))
        n = 0 if rnd.random() < 0.33 else min(50, int(rnd.paretovariate(1.2)))
        uses = [(works[min(19_999, int(rnd.paretovariate(0.8)) - 1)], rnd.randint(1, 20)) for _ in range(n)]
        rows += n
        x += funded
        splitter.add(f"s{s:06d}", funded, uses)
    splits = splitter.finish()
    assert splits.amount_minor == x and rows > 20_000
    booked, alternative = split_pool(splits, USER_CENTRIC, g.vector, 1500)
    for split in (booked, alternative):
        assert sum(split.works.values()) == x and sum(split.allocation.values()) == x
        assert split.shares is not None and split.shares == split.shares.reduced()


def test_idle_subscribers_are_allocated_once_per_distinct_amount(monkeypatch):
    import attribution.pools as pools

    calls: list[int] = []
    real = pools.allocate

    def counting(amount_minor, shares):
        calls.append(amount_minor)
        return real(amount_minor, shares)

    monkeypatch.setattr(pools, "allocate", counting)
    splitter = PoolSplitter()
    splitter.add("s0", 0, [("a", 1), ("b", 2)])
    for i, funded in zip(range(1, 1001), itertools.cycle((499, 999))):
        splitter.add(f"s{i:04d}", funded, [])
    splits = splitter.finish()
    assert sorted(calls) == [499, 999, 749_000]  # the two price points and pro_rata's X
    assert splits.user_centric == {"a": 500 * 166 + 500 * 333, "b": 500 * 333 + 500 * 666}
