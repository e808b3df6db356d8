"""Decimal text of integers of any length, independent of Python's int/str limit."""

from __future__ import annotations

import decimal
import sys
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution import decimal_str, fraction_str, parse_decimal, ratio_str
from attribution.numbers import MAX_DECIMAL_DIGITS

SETTINGS = settings(max_examples=200, deadline=None)

# Sizes around every internal boundary: the plain-str fast path (1900 bits),
# binary chunks (1024 bits), the 4300-digit default limit (~14 284 bits),
# and well beyond.
BITS = st.sampled_from([0, 1, 63, 1023, 1024, 1025, 1899, 1900, 1901, 2048, 4096, 14_284, 14_300, 40_000])


def independent_decimal(n: int) -> str:
    """Reference conversion via the decimal module's own int import."""
    ctx = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX)
    return str(ctx.create_decimal(n))


@SETTINGS
@given(st.data(), BITS, st.booleans())
def test_decimal_str_matches_an_independent_conversion_and_parse_inverts_it(data, bits, negative):
    n = data.draw(st.integers(0, 2**bits - 1)) if bits else 0
    n = -n if negative else n
    text = decimal_str(n)
    assert text == independent_decimal(n)
    assert parse_decimal(text) == n


@SETTINGS
@given(st.integers(-(10**600), 10**600))
def test_decimal_str_equals_str_where_str_works(n):
    assert decimal_str(n) == str(n)
    assert parse_decimal(str(n)) == n


def test_numbers_longer_than_the_default_limit_work_with_the_limit_in_place():
    if sys.get_int_max_str_digits() == 0:
        pytest.skip("the interpreter runs without an int/str digit limit")
    n = 7**20_000  # 16 902 digits
    with pytest.raises(ValueError):
        str(n)
    text = decimal_str(n)
    assert len(text) == 16_902 and text.endswith("1")  # 7**4 = 2401 ends in 1
    assert text == independent_decimal(n)
    assert parse_decimal(text) == n
    with pytest.raises(ValueError):
        int(text)
    # Powers of ten: exact digit counts, with and without sign.
    assert decimal_str(10**5000) == "1" + "0" * 5000
    assert decimal_str(-(10**5000) + 1) == "-" + "9" * 5000
    assert parse_decimal("1" + "0" * 9000) == 10**9000


def test_fraction_str_is_reduced_n_over_d():
    assert fraction_str(Fraction(3, 5)) == "3/5"
    assert fraction_str(Fraction(6, 10)) == "3/5"
    assert fraction_str(Fraction(1)) == "1/1"
    assert fraction_str(Fraction(0)) == "0/1"
    assert fraction_str(Fraction(-2, 7)) == "-2/7"
    big = Fraction(1, 3**10_000)  # 4772-digit denominator
    assert fraction_str(big) == "1/" + decimal_str(3**10_000)


@pytest.mark.parametrize(
    "text",
    ["", "-", "+1", "01", "-0", " 1", "1 ", "1_000", "١٢", "1.0", "0x10", "1e3", "--1"],
)
def test_parse_decimal_accepts_only_canonical_ascii_digits(text):
    with pytest.raises(ValueError):
        parse_decimal(text)


def test_parse_decimal_accepts_zero_and_negative_numbers():
    assert parse_decimal("0") == 0
    assert parse_decimal("-1") == -1


def test_lengths_beyond_the_bound_are_refused_cheaply():
    with pytest.raises(ValueError):
        parse_decimal("1" * (MAX_DECIMAL_DIGITS + 1))
    with pytest.raises(ValueError):
        decimal_str(1 << (4 * MAX_DECIMAL_DIGITS))


def test_type_errors():
    with pytest.raises(TypeError):
        decimal_str(True)
    with pytest.raises(TypeError):
        parse_decimal(5)
    with pytest.raises(TypeError):
        fraction_str(0.5)


@SETTINGS
@given(st.integers(0, 10**60), st.integers(1, 10**60))
def test_ratio_str_is_the_reduced_fraction_text(numerator, denominator):
    assert ratio_str(numerator, denominator) == fraction_str(Fraction(numerator, denominator))


def test_ratio_str_worked_example():
    assert ratio_str(6, 15) == "2/5" and ratio_str(0, 7) == "0/1" and ratio_str(4, 4) == "1/1"
