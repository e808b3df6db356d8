"""Largest-remainder allocation and reversal bookings (EVENTS.md section 3)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution import ShareVector, allocate, reversal_bookings
from attribution.allocation import MAX_AMOUNT_MINOR

# Recipient ids over an alphabet where code point order differs from what a
# locale-aware sort would give ("B" < "a" < "b" < "é" < "ž").
RECIPIENT = st.text(alphabet="aAbBé1ž@", min_size=1, max_size=3)


@st.composite
def share_vectors(draw, max_recipients: int = 8) -> ShareVector:
    recipients = draw(st.lists(RECIPIENT, min_size=1, max_size=max_recipients, unique=True))
    # Small numerators make ties likely; occasional huge ones exercise big ints.
    weight = st.one_of(st.integers(1, 5), st.integers(1, 10**30))
    numerators = {r: draw(weight) for r in recipients}
    return ShareVector(sum(numerators.values()), numerators)


AMOUNT = st.one_of(st.integers(0, 2_000), st.integers(0, MAX_AMOUNT_MINOR))

SETTINGS = settings(max_examples=300, deadline=None)


def reference_allocate(amount: int, s: ShareVector) -> dict[str, int]:
    """The spec's wording with Fractions, independent of the integer version."""
    exact = {r: amount * f for r, f in s.as_fractions().items()}
    floors = {r: x.numerator // x.denominator for r, x in exact.items()}
    left = amount - sum(floors.values())
    for r in sorted(exact, key=lambda r: (-(exact[r] - floors[r]), r))[:left]:
        floors[r] += 1
    return floors


@SETTINGS
@given(AMOUNT, share_vectors())
def test_allocation_sums_to_amount_and_each_is_floor_or_floor_plus_one(amount, s):
    got = allocate(amount, s)
    assert sum(got.values()) == amount
    assert list(got) == s.recipients()  # every recipient, code point order
    for r, units in got.items():
        exact = amount * s.share(r)
        assert units - exact > -1 and units - exact < 1
        assert units in (exact.numerator // exact.denominator, exact.numerator // exact.denominator + 1)


@SETTINGS
@given(AMOUNT, share_vectors())
def test_allocation_matches_the_spec_wording_with_fractions(amount, s):
    assert allocate(amount, s) == reference_allocate(amount, s)


@SETTINGS
@given(share_vectors())
def test_allocation_of_zero_gives_every_recipient_zero(s):
    assert allocate(0, s) == dict.fromkeys(s.recipients(), 0)


@SETTINGS
@given(AMOUNT, share_vectors())
def test_allocation_is_independent_of_the_common_denominator(amount, s):
    scaled = ShareVector(s.denominator * 7, {r: n * 7 for r, n in s.numerators.items()})
    assert allocate(amount, scaled) == allocate(amount, s) == allocate(amount, s.reduced())


def test_ties_go_by_code_point_order_not_locale():
    # "B" (U+0042) < "a" (U+0061) < "é" (U+00E9)
    s = ShareVector(3, {"é": 1, "a": 1, "B": 1})
    assert allocate(1, s) == {"B": 1, "a": 0, "é": 0}
    assert allocate(2, s) == {"B": 1, "a": 1, "é": 0}


def test_a_tiny_share_of_a_small_amount_still_gets_a_zero_entry():
    s = ShareVector(1000, {"big": 999, "tiny": 1})
    assert allocate(10, s) == {"big": 10, "tiny": 0}


@st.composite
def pieces_of(draw, amount: int) -> list[int]:
    """A split of `amount` into 1..8 positive pieces (or [] for 0)."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(amount - 1, 1)), max_size=7))))
    cuts = [c for c in cuts if 0 < c < amount]
    bounds = [0, *cuts, amount]
    return [b - a for a, b in zip(bounds, bounds[1:]) if b > a]


@SETTINGS
@given(st.data(), share_vectors(), st.integers(0, 5_000))
def test_full_reversal_in_arbitrary_pieces_nets_every_recipient_to_zero(data, s, amount):
    sale = allocate(amount, s)
    net = dict(sale)
    reversed_minor = 0
    for piece in data.draw(pieces_of(amount)):
        bookings = reversal_bookings(s, reversed_minor, piece)
        assert sum(bookings.values()) == -piece
        assert set(bookings) == set(sale)
        for r, units in bookings.items():
            net[r] += units
        reversed_minor += piece
    assert reversed_minor == amount
    assert net == dict.fromkeys(sale, 0)


@SETTINGS
@given(share_vectors(), st.integers(0, 10**6), st.integers(0, 10**6))
def test_reversal_booking_is_within_one_unit_of_the_exact_refund_and_never_above_plus_one(s, before, refund):
    bookings = reversal_bookings(s, before, refund)
    for r, units in bookings.items():
        exact = -refund * s.share(r)
        # alloc(T) and alloc(T+R) are each within 1 of exact, so the
        # difference is within 2; and alloc(T+R) >= floor((T+R)S) >= floor(TS)
        # >= alloc(T) - 1 bounds every booking above by +1.
        assert abs(units - exact) < 2
        assert units <= 1


@SETTINGS
@given(share_vectors(max_recipients=2), st.integers(0, 10**6), st.integers(0, 10**6))
def test_reversal_bookings_are_monotone_with_two_recipients(s, before, refund):
    # With two recipients largest remainder is plain rounding (ties to the
    # first id), which is monotone in the amount: no refund pays anyone.
    assert all(units <= 0 for units in reversal_bookings(s, before, refund).values())


def test_reversal_booking_can_be_positive_alabama_paradox():
    # Largest remainder is not monotone in the amount (the "Alabama
    # paradox"), which is why the spec says reversal bookings are "usually"
    # negative.  S = {a: 19/31, b: 3/31, c: 9/31}:
    #   X = 5: exact 3.065, 0.484, 1.452 -> floors 3, 0, 1; one unit left,
    #          to the largest fraction, b (.484): a 3, b 1, c 1;
    #   X = 6: exact 3.677, 0.581, 1.742 -> floors 3, 0, 1; two units left,
    #          to c (.742) and a (.677): a 4, b 0, c 2.
    # So refunding the 6th unit after 5 books alloc(5) - alloc(6): b gets +1.
    s = ShareVector(31, {"a": 19, "b": 3, "c": 9})
    assert allocate(5, s) == {"a": 3, "b": 1, "c": 1}
    assert allocate(6, s) == {"a": 4, "b": 0, "c": 2}
    assert reversal_bookings(s, 5, 1) == {"a": -1, "b": 1, "c": -1}
    # Still: a full refund nets everyone to zero.
    sale = allocate(6, s)
    total = {r: sale[r] + reversal_bookings(s, 0, 5)[r] + reversal_bookings(s, 5, 1)[r] for r in sale}
    assert total == {"a": 0, "b": 0, "c": 0}


def test_largest_amount_allocates_exactly():
    s = ShareVector(3, {"a": 1, "b": 1, "c": 1})
    got = allocate(MAX_AMOUNT_MINOR, s)
    assert sum(got.values()) == MAX_AMOUNT_MINOR
    assert got == {"a": 3074457345618258603, "b": 3074457345618258602, "c": 3074457345618258602}


def test_amount_out_of_range_is_a_programming_error():
    s = ShareVector(1, {"a": 1})
    with pytest.raises(AssertionError):
        allocate(-1, s)
    with pytest.raises(AssertionError):
        allocate(MAX_AMOUNT_MINOR + 1, s)


@pytest.mark.parametrize(
    ("denominator", "numerators"),
    [(1, {}), (1, {"a": 0, "b": 1}), (1, {"a": -1, "b": 2}), (3, {"a": 1, "b": 1}), (0, {})],
    ids=["no-recipient", "zero-share", "negative-share", "sum-not-one", "zero-denominator"],
)
def test_share_vector_invariant_is_asserted(denominator, numerators):
    with pytest.raises(AssertionError):
        ShareVector(denominator, numerators)


def test_share_vector_fee_edges():
    v = ShareVector(3, {"a": 2, "b": 1})
    assert v.with_fee(0) is v
    assert v.with_fee(10_000) == ShareVector(1, {"@platform": 1})
    # @platform already present: added, not overwritten.
    with_platform = ShareVector(2, {"@platform": 1, "a": 1})
    assert with_platform.with_fee(5000).as_fractions() == {"@platform": Fraction(3, 4), "a": Fraction(1, 4)}


@SETTINGS
@given(share_vectors(), st.integers(0, 10_000))
def test_with_fee_is_exact_and_keeps_reduced_vectors_reduced(v, fee_bps):
    f = Fraction(fee_bps, 10_000)
    got = v.reduced().with_fee(fee_bps)
    expected = {r: (1 - f) * x for r, x in v.as_fractions().items()}
    expected["@platform"] = expected.get("@platform", 0) + f
    assert got.as_fractions() == {r: x for r, x in sorted(expected.items()) if x}
    assert got.reduced() == got


def test_in_lowest_terms_divides_out_the_common_factor_once():
    # 10/30 and 20/30 are 1/3 and 2/3; one recipient holds everything: 1/1.
    assert ShareVector.in_lowest_terms(30, {"a": 10, "b": 20}) == ShareVector(3, {"a": 1, "b": 2})
    assert ShareVector.in_lowest_terms(7, {"a": 7}) == ShareVector(1, {"a": 1})
    already = ShareVector(5, {"a": 2, "b": 3})
    assert already.reduced() is already
