"""Exact attribution for peerledger: who gets what share of a value, and how
many minor units that is (EVENTS.md section 3).

Pure code: no I/O, no clock, no global state; exact integers and Fractions
only; iterative algorithms with documented bounds.

* ``WorkGraph`` -- the works of a platform; ``vector(work)`` is flow(work, 1);
* ``ShareVector`` -- exact shares over one common denominator; ``with_fee``;
* ``allocate`` / ``reversal_bookings`` -- largest-remainder minor units;
* ``decimal_str`` / ``parse_decimal`` / ``fraction_str`` / ``ratio_str`` -- decimal text of
  integers of any length, independent of Python's int/str digit limit.

The cost model is in docs/attribution.md.
"""

from .allocation import allocate, reversal_bookings
from .cache import BoundedCache
from .graph import ExactExplanation, Explanation, MemoryWorks, PathShare, Work, WorkGraph, WorkStore
from .numbers import decimal_str, fraction_str, parse_decimal, ratio_str
from .shares import PLATFORM, UNATTRIBUTED, ShareVector, from_json_obj, to_json_obj

__all__ = [
    "PLATFORM",
    "UNATTRIBUTED",
    "ExactExplanation",
    "Explanation",
    "PathShare",
    "ShareVector",
    "Work",
    "WorkGraph",
    "WorkStore",
    "MemoryWorks",
    "BoundedCache",
    "allocate",
    "decimal_str",
    "fraction_str",
    "from_json_obj",
    "parse_decimal",
    "ratio_str",
    "reversal_bookings",
    "to_json_obj",
]
