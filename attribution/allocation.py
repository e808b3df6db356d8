"""Turning exact shares into whole minor units (EVENTS.md section 3).

Largest remainder
-----------------
To allocate X minor units by shares S, each recipient r first gets
floor(X * S[r]); the units still unallocated (fewer than the number of
recipients) go one each to the recipients with the largest fractional parts
X * S[r] - floor(X * S[r]), ties broken by recipient id in code point order.

With S stored over one denominator D (see shares.py), X * S[r] = X * n_r / D
and ``divmod(X * n_r, D)`` gives the floor and the fractional part's
numerator over the same D for everybody, so "largest fractional part" is a
comparison of integers.  Because X is a 63-bit amount, each divmod has a
quotient of at most 64 bits and costs time linear in the size of D: the
whole allocation is O(recipients) big-integer operations plus a sort of the
remainders.

Worked example (EVENTS.md): S = {@platform: 1/10, carol: 3/5, alice: 9/50,
bob: 3/25} over D = 50 is {5, 30, 9, 6}.  X = 1001: 1001*30 = 30030 =
600*50 + 30, 1001*9 = 180*50 + 9, 1001*6 = 120*50 + 6, 1001*5 = 100*50 + 5.
Floors sum to 1000; one unit is left and goes to the largest remainder,
carol's 30/50: @platform 100, carol 601, alice 180, bob 120.

Reversals
---------
A refund of R on a value whose refunds so far total T books
alloc(T, S)[r] - alloc(T + R, S)[r] for every recipient.  These telescope:
after refunds R1, R2, ... summing to the full amount A, every recipient's
bookings sum to alloc(0, S)[r] - alloc(A, S)[r] = -alloc(A, S)[r], exactly
cancelling the sale.

A single booking is *usually* <= 0 but not always: largest remainder is not
monotone in the amount (the "Alabama paradox").  With S = {a: 19/31,
b: 3/31, c: 9/31}, alloc(5) gives b 1 unit but alloc(6) gives b 0, so
refunding the 6th unit books b +1 (and a, c -1 each).  The spec defines the
booking by the formula above, so we follow it; only the total (-R) and the
net after a full refund are guaranteed.
"""

from __future__ import annotations

from .shares import ShareVector

# Amounts are 1 .. 2**63 - 1 minor units (EVENTS.md section 1); the refunded
# total never exceeds the amount.  Bounding X keeps every divmod quotient
# small, which is what makes allocation linear in the size of the shares.
MAX_AMOUNT_MINOR = 2**63 - 1


def allocate(amount_minor: int, shares: ShareVector) -> dict[str, int]:
    """Split ``amount_minor`` units by ``shares`` with largest remainder.

    Returns recipient -> units for every recipient of ``shares`` (0 units
    included), in recipient code point order; the values sum to exactly
    ``amount_minor``.  ``amount_minor`` may be 0 (everyone gets 0).

    >>> allocate(1, ShareVector(3, {"b": 1, "a": 1, "c": 1}))
    {'a': 1, 'b': 0, 'c': 0}
    """
    assert type(amount_minor) is int and 0 <= amount_minor <= MAX_AMOUNT_MINOR, "amount out of range"
    d = shares.denominator
    floors: dict[str, int] = {}
    remainders: list[tuple[int, str]] = []
    total = 0
    for r, n in shares.ordered:
        q, rem = divmod(amount_minor * n, d)
        floors[r] = q
        total += q
        if rem:
            # Negated so a plain tuple sort is "largest remainder first, then
            # recipient id ascending", with no per-item key function.
            remainders.append((-rem, r))
    leftover = amount_minor - total
    # sum(rem) == leftover * d and every rem < d, so there are more than
    # `leftover` positive remainders whenever leftover > 0: the units always
    # go to recipients with a genuine fractional part.
    assert 0 <= leftover <= len(remainders), "largest remainder invariant broken"
    if leftover:
        # Largest remainder first; equal remainders by recipient id ascending.
        remainders.sort()
        for _, r in remainders[:leftover]:
            floors[r] += 1
    assert sum(floors.values()) == amount_minor
    return floors


def reversal_bookings(
    shares: ShareVector, reversed_before_minor: int, reversal_minor: int
) -> dict[str, int]:
    """Bookings for refunding ``reversal_minor`` after ``reversed_before_minor``.

    ``alloc(T, S)[r] - alloc(T + R, S)[r]`` for every recipient, T =
    ``reversed_before_minor``, R = ``reversal_minor``.  The values sum to
    exactly -R.  They are usually <= 0, but see the module docstring: a
    single recipient can get +1 (the Alabama paradox of largest remainder).

    Worked example: S as in the module docstring, refunding 500 of 1001
    books carol -300, alice -90, bob -60, @platform -50; refunding the other
    501 books carol -301, alice -90, bob -60, @platform -50.
    """
    assert type(reversed_before_minor) is int and reversed_before_minor >= 0
    assert type(reversal_minor) is int and reversal_minor >= 0
    assert reversed_before_minor + reversal_minor <= MAX_AMOUNT_MINOR
    before = allocate(reversed_before_minor, shares)
    after = allocate(reversed_before_minor + reversal_minor, shares)
    bookings = {r: before[r] - after[r] for r in before}
    assert sum(bookings.values()) == -reversal_minor
    return bookings


__all__ = ["MAX_AMOUNT_MINOR", "allocate", "reversal_bookings"]
