"""Exact share vectors: who gets which fraction of a value.

A share vector S maps recipients (prosumer ids and the system accounts
``@platform`` and ``@unattributed``) to positive rational shares that sum to
exactly 1 (EVENTS.md section 3).

Representation: one common denominator
--------------------------------------
Instead of one ``Fraction`` per recipient, a ``ShareVector`` stores a single
positive integer ``denominator`` D and an integer numerator n_r per
recipient, with S[r] = n_r / D and sum(n_r) == D.  Why:

* allocation (largest remainder) needs ``divmod(X * n_r, D)`` per recipient
  and then compares the remainders; with one denominator every fractional
  part has the same denominator, so comparing them is comparing integers.
  No gcd is ever computed on the sales path;
* "sums to exactly 1" is a single integer sum, cheap enough to assert on
  every construction;
* shares of deep remix chains have denominators thousands of digits long,
  and per-recipient Fractions would repeat (and re-reduce) them thousands
  of times.

D need not be the least common denominator: ``reduced()`` divides out the
common factor when a canonical form is wanted.  Structural equality (``==``)
compares the stored integers, so compare ``reduced()`` forms or
``as_fractions()`` when two vectors may be scaled differently.
"""

from __future__ import annotations

import binascii
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

# The system accounts of EVENTS.md: they start with "@", which prosumer ids
# cannot, so they never collide with a prosumer.
PLATFORM = "@platform"
UNATTRIBUTED = "@unattributed"

# Basis points in a whole (10 000 bps = 100 %).
BPS_PER_UNIT = 10_000

# from_json_obj reads untrusted bytes (a stored blob); these bound what it
# will accept before doing any big-integer work.  4 000 000 hex digits is a
# 16 000 000-bit (about 4.8 million decimal digit) number, far beyond any
# share a realistic graph produces.
JSON_MAX_HEX_DIGITS = 4_000_000
# Recipients of one vector in JSON: an output has at most 64 authors and 1000
# components, but a deep graph reaches many more prosumers; one million
# entries is a generous bound that still refuses absurd blobs.
JSON_MAX_RECIPIENTS = 1_000_000

_HEX_DIGITS = b"0123456789abcdef"


@dataclass(frozen=True, slots=True)
class ShareVector:
    """Recipient -> share, as integer numerators over one common denominator.

    Invariant (asserted on construction): ``denominator > 0``, every
    numerator > 0 (a recipient whose share is zero is simply absent), and
    ``sum(numerators.values()) == denominator`` (the shares sum to 1).

    Example: the worked example of EVENTS.md before the fee is
    ``ShareVector(15, {"carol": 10, "alice": 3, "bob": 2})``, i.e.
    carol 2/3, alice 1/5, bob 2/15.

    The dict is owned by the vector: do not mutate it after construction.
    """

    denominator: int
    numerators: dict[str, int]
    # (recipient, numerator) in recipient order, computed once: a vector is
    # allocated once per sale, and sorting there would dominate small ones.
    ordered: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every vector of a sale is built here, so the checks run as C loops
        # (map, set, min, sum) rather than a Python-level generator.
        numerators = self.numerators
        assert type(self.denominator) is int and self.denominator > 0, "denominator must be a positive int"
        assert set(map(type, numerators.values())) == {int} and min(numerators.values()) > 0, \
            "numerators must be positive ints"
        assert set(map(type, numerators)) == {str}, "recipients must be str"
        assert sum(numerators.values()) == self.denominator, "shares must sum to exactly 1"
        object.__setattr__(self, "ordered", tuple(sorted(numerators.items())))

    def share(self, recipient: str) -> Fraction:
        """S[recipient] as a reduced Fraction (0 for a non-recipient)."""
        return Fraction(self.numerators.get(recipient, 0), self.denominator)

    def recipients(self) -> list[str]:
        """The recipients, sorted by Unicode code point (Python's str order)."""
        return [r for r, _ in self.ordered]

    def as_fractions(self) -> dict[str, Fraction]:
        """recipient -> reduced Fraction, in recipient order.

        Costs one gcd per recipient; use for display and tests, not on the
        allocation path.
        """
        d = self.denominator
        return {r: Fraction(self.numerators[r], d) for r in self.recipients()}

    def reduced(self) -> ShareVector:
        """The same shares over the least common denominator (``self`` if it is)."""
        g = _common_factor(self.denominator, self.numerators)
        return self if g == 1 else _divided(self.denominator, self.numerators, g)

    @staticmethod
    def in_lowest_terms(denominator: int, numerators: dict[str, int]) -> ShareVector:
        """ShareVector(denominator, numerators) over the least common
        denominator, built (and checked) once."""
        return _divided(denominator, numerators, _common_factor(denominator, numerators))

    def with_fee(self, fee_bps: int) -> ShareVector:
        """S' = {PLATFORM: f} + (1 - f) * self, with f = fee_bps / 10 000.

        This is how a sale's shares are formed (EVENTS.md section 3): the fee
        comes off the top and the rest flows through the work.  fee 0 returns
        ``self`` (no ``@platform`` entry); fee 10 000 returns only
        ``@platform``.  Should ``@platform`` already be a recipient, the fee
        is added to it.

        With h = gcd(fee, 10 000), f = f'/t' in lowest terms and the result
        is {PLATFORM: f' D} + (t' - f') n_r over t' D.  If ``self`` is reduced,
        the only common factor left is gcd(D, t' - f'), a small number, and we
        divide it out, so a reduced input gives a reduced output at the cost
        of a few big-by-small operations per recipient.
        """
        assert type(fee_bps) is int and 0 <= fee_bps <= BPS_PER_UNIT, "fee_bps must be 0..10000"
        if fee_bps == 0:
            return self
        if fee_bps == BPS_PER_UNIT:
            return ShareVector(1, {PLATFORM: 1})
        h = math.gcd(fee_bps, BPS_PER_UNIT)
        fee_num, whole = fee_bps // h, BPS_PER_UNIT // h  # f = fee_num / whole
        keep = whole - fee_num  # 1 - f = keep / whole
        g = math.gcd(self.denominator, keep)
        den = whole * (self.denominator // g)
        keep_scaled = keep // g
        nums = {r: n * keep_scaled for r, n in self.numerators.items()}
        nums[PLATFORM] = nums.get(PLATFORM, 0) + fee_num * (self.denominator // g)
        return ShareVector(den, nums)


def _common_factor(denominator: int, numerators: dict[str, int]) -> int:
    """gcd(D, n_1, n_2, ...).

    We start from the *smallest* numerator: gcd(D, n_min) is at most n_min,
    so every later gcd is "huge mod small" (linear time) instead of a
    quadratic gcd of two huge numbers.  This matters on deep remix chains,
    where the numerators near the top share long runs of factors with D and
    a gcd taken in the wrong order stays huge for thousands of steps.
    """
    if len(numerators) == 1:
        return denominator  # one recipient holds everything: n == D, 1/1
    g = math.gcd(denominator, min(numerators.values(), key=int.bit_length))
    for n in numerators.values():
        if g == 1:
            break
        g = math.gcd(g, n)
    return g


def _divided(denominator: int, numerators: dict[str, int], g: int) -> ShareVector:
    """The vector with the common factor g of the denominator and every numerator divided out."""
    if g == 1:
        return ShareVector(denominator, numerators)
    return ShareVector(denominator // g, {r: n // g for r, n in numerators.items()})


def _hex(n: int) -> str:
    # Same text as format(n, "x"), about four times faster on big ints:
    # to_bytes and bytes.hex are single linear passes in C.  The first byte
    # is non-zero, so at most one leading "0" nibble needs stripping.
    text = n.to_bytes((n.bit_length() + 7) // 8, "big").hex()
    return text[1:] if text[0] == "0" else text


def to_json_obj(v: ShareVector) -> dict[str, Any]:
    """A JSON-ready form: ``{"d": "<hex>", "n": {recipient: "<hex>"}}``.

    Hex, lower case, no prefix, no leading zeros: base-16 conversion is
    linear and exempt from Python's int/str digit limit, unlike decimal.
    Recipients are written in code point order so equal vectors give equal
    JSON (with sorted keys, equal bytes).
    """
    return {
        "d": _hex(v.denominator),
        "n": {r: _hex(v.numerators[r]) for r in v.recipients()},
    }


def _parse_hex(text: Any) -> int:
    # int(text, 16) would also accept "0x", "_", "+", "-" and whitespace, so
    # validate first: ASCII, only lower-case hex digits, no leading zero.
    # bytes.translate and a2b_hex are linear passes in C (a regex is ~10x
    # slower on the 10 000-digit numerators of deep chains).
    if type(text) is not str or not 0 < len(text) <= JSON_MAX_HEX_DIGITS or text[0] == "0":
        raise ValueError("share vector JSON: expected canonical lower-case hex of a positive int")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("share vector JSON: expected canonical lower-case hex of a positive int") from None
    if raw.translate(None, _HEX_DIGITS):
        raise ValueError("share vector JSON: expected canonical lower-case hex of a positive int")
    if len(raw) % 2:
        raw = b"0" + raw
    return int.from_bytes(binascii.a2b_hex(raw), "big")


def from_json_obj(obj: Any) -> ShareVector:
    """Inverse of ``to_json_obj``; validates everything.

    The input may come from storage, so it is checked with exceptions
    (``ValueError``), not asserts: exact keys, canonical hex, positive
    numbers, bounded sizes and the sum-to-one invariant.
    """
    if type(obj) is not dict or set(obj) != {"d", "n"} or type(obj["n"]) is not dict:
        raise ValueError('share vector JSON: expected {"d": hex, "n": {recipient: hex}}')
    if len(obj["n"]) > JSON_MAX_RECIPIENTS:
        raise ValueError("share vector JSON: too many recipients")
    denominator = _parse_hex(obj["d"])
    numerators: dict[str, int] = {}
    for r, n in obj["n"].items():
        if type(r) is not str:
            raise ValueError("share vector JSON: recipient ids must be strings")
        numerators[r] = _parse_hex(n)
    if sum(numerators.values()) != denominator:
        raise ValueError("share vector JSON: shares do not sum to 1")
    return ShareVector(denominator, numerators)


__all__ = [
    "BPS_PER_UNIT",
    "PLATFORM",
    "UNATTRIBUTED",
    "ShareVector",
    "from_json_obj",
    "to_json_obj",
]
