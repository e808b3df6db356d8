"""Decimal text for integers of any size, without Python's int/str digit limit.

Why this module exists
----------------------
Since Python 3.11, ``str(n)`` and ``int(s)`` refuse integers of more than
``sys.get_int_max_str_digits()`` decimal digits (4300 by default, and an
application may lower it to 640).  The limit guards against the quadratic
cost of CPython's base conversion.  Exact attribution produces denominators
that are legitimately longer than that: a remix chain 3000 works deep whose
every step passes 5001/20000 of the value on to the previous remix has the
denominator 20000**3000, about 3000 * log10(20000): 12 904 digits.  We must print and parse such numbers
without switching the guard off for the whole process (which
``sys.set_int_max_str_digits`` would do: it is global state).

How
---
``str()`` and ``int()`` are only ever applied to pieces below
``SAFE_CHUNK_DIGITS`` digits, which is under the *smallest* limit Python lets
anyone configure (640), so the guard never fires whatever the process set.

* ``decimal_str`` converts binary to decimal by divide and conquer *in the
  decimal module* (libmpdec): ``n = hi * 2**w + lo`` becomes
  ``D(hi) * D(2**w) + D(lo)``, evaluated bottom-up over fixed-width binary
  chunks.  libmpdec multiplies large numbers with number-theoretic transforms,
  so the whole conversion is subquadratic, and ``str(Decimal)`` has no digit
  limit.  The decimal context is a local object passed explicitly to every
  operation: no thread-local or global context is read or changed.
* ``parse_decimal`` does the reverse with ints: the string is cut into
  fixed-size decimal chunks (each parsed by ``int()``), which are combined
  pairwise, ``hi * 10**w + lo``, level by level; CPython multiplies large
  ints with Karatsuba, so this is subquadratic too.

Both are iterative (no recursion) and bounded by ``MAX_DECIMAL_DIGITS``.
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

# Pieces handed to str()/int() stay below this many decimal digits.  640 is
# the smallest value sys.set_int_max_str_digits accepts, and CPython never
# checks conversions below that threshold, so 600 is safe under any setting.
SAFE_CHUNK_DIGITS = 600

# Binary chunk for decimal_str: 1024 bits is at most 309 decimal digits, well
# within SAFE_CHUNK_DIGITS (Decimal(int) does not use the str limit anyway,
# but a small chunk keeps its quadratic base conversion cheap).
_CHUNK_BITS = 1024
# Up to this many bits plain str() is used directly: 2**1900 has 572 decimal
# digits, below SAFE_CHUNK_DIGITS.
_DIRECT_STR_BITS = 1900

# Decimal chunk for parse_decimal.
_PARSE_CHUNK_DIGITS = 512

# The largest integer these functions accept, in decimal digits (about 4 MB
# of text).  The deepest realistic share denominator is far below: even a
# chain of 100 000 remixes with per-step denominators of 10**9 stays under
# 1 000 000 digits.  The bound keeps a hostile input from costing minutes.
MAX_DECIMAL_DIGITS = 4_000_000
# The same bound in bits (log2(10) < 3.3220), checked cheaply before work.
_MAX_BITS = MAX_DECIMAL_DIGITS * 33220 // 10000 + 1

_ASCII_DIGITS = frozenset("0123456789")


def _exact_context() -> decimal.Context:
    """A decimal context in which +, * on integers are exact.

    The precision and exponent range are the largest libmpdec supports, and
    rounding of any kind is a trap, so an inexact result could never pass
    silently (it cannot happen for integer + and *, but we do not rely on it).
    """
    return decimal.Context(
        prec=decimal.MAX_PREC,
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        traps=[decimal.Inexact, decimal.Rounded, decimal.Overflow, decimal.InvalidOperation],
    )


def decimal_str(n: int) -> str:
    """The decimal representation of the integer ``n`` ("-123", "0", ...).

    Equivalent to ``str(n)`` but free of Python's int/str digit limit and
    subquadratic in the number of digits.  Raises ``ValueError`` beyond
    ``MAX_DECIMAL_DIGITS`` digits.

    >>> decimal_str(-1234)
    '-1234'
    >>> len(decimal_str(10 ** 5000))
    5001
    """
    if type(n) is not int:  # bool is an int subclass, but never a number here
        raise TypeError(f"decimal_str needs an int, got {type(n).__name__}")
    sign = "-" if n < 0 else ""
    magnitude = -n if n < 0 else n
    bits = magnitude.bit_length()
    if bits <= _DIRECT_STR_BITS:
        return sign + str(magnitude)
    if bits > _MAX_BITS:
        raise ValueError(f"integer longer than {MAX_DECIMAL_DIGITS} decimal digits")

    ctx = _exact_context()
    # Cut the magnitude into _CHUNK_BITS-bit pieces, least significant first.
    # to_bytes/from_bytes are linear, unlike repeated shifting of a big int.
    chunk_bytes = _CHUNK_BITS // 8
    nbytes = (bits + 7) // 8
    nbytes += -nbytes % chunk_bytes
    raw = magnitude.to_bytes(nbytes, "little")
    level = [
        decimal.Decimal(int.from_bytes(raw[i : i + chunk_bytes], "little"))
        for i in range(0, nbytes, chunk_bytes)
    ]
    # Each pass pairs (lo, hi) -> lo + hi * 2**width and doubles the width.
    # Every element except possibly the last (most significant) one spans
    # exactly `width` bits, so the pairing is always aligned.
    power = decimal.Decimal(1 << _CHUNK_BITS)  # 2**1024, 309 digits: exact
    while len(level) > 1:
        paired = [
            ctx.add(level[i], ctx.multiply(level[i + 1], power))
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
        if len(level) > 1:
            power = ctx.multiply(power, power)
    text = str(level[0])
    # An integer-valued Decimal built by exact + and * has exponent 0, so its
    # str() is plain digits; check rather than trust (no exponent, no point).
    if not text.isdigit():
        raise AssertionError("decimal conversion produced a non-integer form")
    return sign + text


def parse_decimal(s: str) -> int:
    """The integer written in canonical decimal form ``s`` (inverse of decimal_str).

    Accepted: an optional "-" followed by ASCII digits, with no leading zero
    (except "0" itself) and no "-0", i.e. exactly the strings decimal_str
    produces.  Python's ``int()`` also accepts spaces, "_" and non-ASCII
    digits; a ledger must not, so anything else raises ``ValueError``.
    Free of the int/str digit limit; bounded by ``MAX_DECIMAL_DIGITS``.

    >>> parse_decimal("-1234")
    -1234
    """
    if type(s) is not str:
        raise TypeError(f"parse_decimal needs a str, got {type(s).__name__}")
    negative = s.startswith("-")
    digits = s[1:] if negative else s
    if not digits or not _ASCII_DIGITS.issuperset(digits):
        raise ValueError(f"not a canonical decimal integer: {s[:40]!r}")
    if len(digits) > 1 and digits[0] == "0" or negative and digits == "0":
        raise ValueError(f"not a canonical decimal integer: {s[:40]!r}")
    if len(digits) > MAX_DECIMAL_DIGITS:
        raise ValueError(f"integer longer than {MAX_DECIMAL_DIGITS} decimal digits")
    if len(digits) <= SAFE_CHUNK_DIGITS:
        value = int(digits)
        return -value if negative else value

    # Chunks of _PARSE_CHUNK_DIGITS digits aligned from the right, most
    # significant first; only the first may be shorter.
    first = len(digits) % _PARSE_CHUNK_DIGITS or _PARSE_CHUNK_DIGITS
    level = [int(digits[:first])]
    level.extend(
        int(digits[i : i + _PARSE_CHUNK_DIGITS])
        for i in range(first, len(digits), _PARSE_CHUNK_DIGITS)
    )
    # Pair from the right: (hi, lo) -> hi * 10**width + lo.  All elements but
    # the first span exactly `width` digits, so when the count is odd the
    # first (most significant, possibly short) stays alone for this pass.
    power = 10**_PARSE_CHUNK_DIGITS
    while len(level) > 1:
        odd = len(level) % 2
        paired = [level[0]] if odd else []
        paired.extend(
            level[i] * power + level[i + 1] for i in range(odd, len(level), 2)
        )
        level = paired
        if len(level) > 1:
            power *= power
    value = level[0]
    return -value if negative else value


def fraction_str(f: Fraction) -> str:
    """``f`` as reduced "n/d" text ("3/5", "1/1", "-2/7", "0/1").

    A Fraction is always kept in lowest terms with a positive denominator,
    so this is the canonical text of the number, and it works for
    denominators of any length (see decimal_str).
    """
    if not isinstance(f, Fraction):
        raise TypeError(f"fraction_str needs a Fraction, got {type(f).__name__}")
    return f"{decimal_str(f.numerator)}/{decimal_str(f.denominator)}"


def ratio_str(numerator: int, denominator: int) -> str:
    """fraction_str(Fraction(numerator, denominator)) without the Fraction.

    >>> ratio_str(6, 15)
    '2/5'
    """
    if denominator <= 0:
        raise ValueError("ratio_str needs a positive denominator")
    g = math.gcd(numerator, denominator)
    return f"{decimal_str(numerator // g)}/{decimal_str(denominator // g)}"


__all__ = ["MAX_DECIMAL_DIGITS", "SAFE_CHUNK_DIGITS", "decimal_str", "fraction_str", "parse_decimal", "ratio_str"]
