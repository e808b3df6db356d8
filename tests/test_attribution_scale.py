"""Deep and wide graphs: exact, iterative, fast, and printable.

A remix chain 3000 deep whose every step keeps 5001/20000 upstream for the
previous remix has a vector with 6002 recipients and a denominator of
20000**3000 (12 904 digits): far beyond Python's default 4300-digit
int/str limit, which these tests leave in place.
"""

from __future__ import annotations

import decimal
import sys
import time
from fractions import Fraction

import pytest

from attribution import (
    PLATFORM,
    WorkGraph,
    allocate,
    decimal_str,
    fraction_str,
    parse_decimal,
    reversal_bookings,
)

DEPTH = 3000


def remix_chain(depth: int, upstream_bps: int) -> WorkGraph:
    """o_0 = contribution by b; o_i = {o_{i-1}: 1, c_i: 1} by p_i, where
    c_i is a contribution by a_i; every output passes `upstream_bps` on."""
    g = WorkGraph()
    g.add_contribution("o0", {"b": 1})
    for i in range(1, depth + 1):
        g.add_contribution(f"c{i}", {f"a{i}": 1})
        g.add_output(f"o{i}", {f"o{i - 1}": 1, f"c{i}": 1}, {f"p{i}": 1}, upstream_bps)
    return g


def test_remix_chain_3000_deep_half_upstream_is_exact_in_closed_form():
    # u = 1/2: o_{N-j} receives (1/4)**j; its author keeps half of that,
    # c_{N-j}'s author gets a quarter of it; b gets (1/4)**N.
    g = remix_chain(DEPTH, 5000)
    started = time.perf_counter()
    v = g.vector(f"o{DEPTH}")
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"vector of a {DEPTH}-deep chain took {elapsed:.1f}s"
    assert len(v.numerators) == 2 * DEPTH + 1
    assert sum(v.numerators.values()) == v.denominator  # sums to exactly 1
    assert v.denominator == 4**DEPTH
    assert v.share(f"p{DEPTH}") == Fraction(1, 2)
    assert v.share(f"a{DEPTH}") == Fraction(1, 4)
    assert v.share("p1") == Fraction(1, 2 * 4 ** (DEPTH - 1))
    assert v.share("a1") == Fraction(1, 4**DEPTH)
    assert v.share("b") == Fraction(1, 4**DEPTH)


def test_remix_chain_3000_deep_with_12904_digit_denominator_under_default_int_str_limit():
    if sys.get_int_max_str_digits() == 0:
        pytest.skip("the interpreter runs without an int/str digit limit")
    # u = 5001/10000: per step the previous remix gets 5001/20000, the author
    # 4999/10000, c_i's author 5001/20000.  o_{N-j}'s author: (5001/20000)**j
    # * 4999/10000; b: (5001/20000)**N, whose denominator 20000**N is the
    # vector's (5001 is odd and not a multiple of 5).
    step = Fraction(5001, 20_000)
    g = remix_chain(DEPTH, 5001)
    started = time.perf_counter()
    v = g.vector(f"o{DEPTH}")
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"vector of a {DEPTH}-deep chain took {elapsed:.1f}s"
    assert v.denominator == 20_000**DEPTH
    assert sum(v.numerators.values()) == v.denominator
    assert v.share(f"p{DEPTH}") == Fraction(4999, 10_000)
    assert v.share(f"a{DEPTH - 1}") == step * step
    assert v.share("p1") == step ** (DEPTH - 1) * Fraction(4999, 10_000)
    assert v.share("b") == step**DEPTH

    # The default limit is in force: str() of the denominator refuses...
    with pytest.raises(ValueError):
        str(v.denominator)
    # ...decimal_str does not, and round-trips.
    text = decimal_str(v.denominator)
    # 20000**3000 = 2**3000 * 10**12000; 2**3000 (904 digits) printed by the
    # decimal module's own int import gives an independent expectation.
    exact = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX)
    assert text == str(exact.create_decimal(2**DEPTH)) + "0" * (4 * DEPTH)
    assert len(text) == 12_904
    assert parse_decimal(text) == v.denominator
    b_share = fraction_str(v.share("b"))
    numerator, _, denominator = b_share.partition("/")
    assert parse_decimal(numerator) == 5001**DEPTH and parse_decimal(denominator) == 20_000**DEPTH

    # Allocation with the fee on the big vector: exact and fast.
    shares = v.with_fee(1000)
    started = time.perf_counter()
    allocation = allocate(2**63 - 1, shares)
    assert time.perf_counter() - started < 5
    assert sum(allocation.values()) == 2**63 - 1
    assert allocation[PLATFORM] == (2**63 - 1) // 10 + 1  # 922337203685477580.7 -> 0.7 is the largest fraction
    assert allocation["b"] == 0
    refund = reversal_bookings(shares, 0, 2**62)
    assert sum(refund.values()) == -(2**62)


def test_querying_only_the_top_of_a_deep_chain_caches_only_the_top():
    g = remix_chain(5000, 5000)
    g.vector("o5000")
    assert g.cache_stats()[0] == 1
    # A remix of the cached top is cheap: the top is a leaf now.
    g.add_contribution("c_new", {"new": 1})
    g.add_output("o_new", {"o5000": 1, "c_new": 1}, {"remixer": 1}, 5000)
    started = time.perf_counter()
    v = g.vector("o_new")
    assert time.perf_counter() - started < 2
    assert v.share("remixer") == Fraction(1, 2) and v.share("new") == Fraction(1, 4)
    assert v.share("p5000") == Fraction(1, 8)


def test_explain_on_a_3000_deep_chain_is_bounded():
    g = remix_chain(DEPTH, 5000)
    ex = g.explain(f"o{DEPTH}", max_paths=10, max_works=50)
    assert len(ex.paths) == 10 and ex.truncated_paths
    assert len(ex.works) == 50 and ex.total_works == 2 * DEPTH + 1
    assert ex.paths[0] == ((f"o{DEPTH}",), f"p{DEPTH}", Fraction(1, 2))
    assert ex.paths[1] == ((f"o{DEPTH}", f"c{DEPTH}"), f"a{DEPTH}", Fraction(1, 4))
    assert ex.works[f"o{DEPTH - 3}"] == Fraction(1, 4**3)


def test_output_with_1000_components_and_hundreds_of_recipients():
    # c_i by {q_{i mod 300}: 1 + i mod 7, q_{(7i + 1) mod 300}: 2}, weight
    # 1 + i mod 5 in the output, which passes 7500 bps upstream and keeps
    # 2500 for boss.  Reference: the same sums written out with Fractions.
    g = WorkGraph()
    expected: dict[str, Fraction] = {"boss": Fraction(1, 4)}
    components = {}
    for i in range(1000):
        authors = {f"q{i % 300}": 1 + i % 7}
        authors[f"q{(7 * i + 1) % 300}"] = authors.get(f"q{(7 * i + 1) % 300}", 0) + 2
        g.add_contribution(f"c{i}", authors)
        components[f"c{i}"] = 1 + i % 5
    total_k = sum(components.values())
    for i in range(1000):
        inflow = Fraction(3, 4) * Fraction(components[f"c{i}"], total_k)
        authors = g.authors(f"c{i}")
        for p, a in authors.items():
            expected[p] = expected.get(p, 0) + inflow * Fraction(a, sum(authors.values()))
    g.add_output("big", components, {"boss": 1}, 7500)
    started = time.perf_counter()
    v = g.vector("big")
    assert time.perf_counter() - started < 2
    assert len(v.numerators) == 301
    assert v.as_fractions() == dict(sorted(expected.items()))
    allocation = allocate(10**12 + 7, v.with_fee(250))
    assert sum(allocation.values()) == 10**12 + 7 and len(allocation) == 302
    ex = g.explain("big", max_paths=10, max_works=50)
    assert len(ex.paths) == 10 and ex.total_works == 1001 and len(ex.works) == 50
