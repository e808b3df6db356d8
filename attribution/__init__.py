"""Exact attribution for peerledger: who gets what share of a value, and how
many minor units that is (EVENTS.md section 3).

Pure code: no I/O, no clock, no global state; exact integers and Fractions
only; iterative algorithms with documented bounds.

* ``WorkGraph`` -- the works of a platform; ``vector(work)`` is flow(work, 1);
* ``ShareVector`` -- exact shares over one common denominator; ``with_fee``;
* ``allocate`` / ``reversal_bookings`` -- largest-remainder minor units;
* ``PoolSplitter`` / ``pool_shares`` / ``split_pool`` -- usage pools
  (section 7): both methods' split to works in one streaming pass, the
  pool's exact vector over one denominator, and the booked and alternative
  splits;
* ``decimal_str`` / ``parse_decimal`` / ``fraction_str`` / ``ratio_str`` -- decimal text of
  integers of any length, independent of Python's int/str digit limit.

The cost model is in docs/attribution.md.
"""

from .allocation import allocate, reversal_bookings
from .cache import BoundedCache
from .graph import (
    ExactExplanation,
    Explanation,
    MemoryWorks,
    PathShare,
    Work,
    WorkGraph,
    WorkStore,
)
from .numbers import decimal_str, fraction_str, parse_decimal, ratio_str
from .pools import (
    PRO_RATA,
    USER_CENTRIC,
    MethodSplit,
    PoolSplitter,
    WorkSplits,
    other_method,
    pool_shares,
    split_by_usage,
    split_pool,
    used_works,
)
from .shares import PLATFORM, UNATTRIBUTED, ShareVector, from_json_obj, to_json_obj

__all__ = [
    "PLATFORM",
    "PRO_RATA",
    "UNATTRIBUTED",
    "USER_CENTRIC",
    "ExactExplanation",
    "Explanation",
    "MethodSplit",
    "PathShare",
    "PoolSplitter",
    "ShareVector",
    "Work",
    "WorkGraph",
    "WorkStore",
    "MemoryWorks",
    "BoundedCache",
    "WorkSplits",
    "allocate",
    "decimal_str",
    "fraction_str",
    "from_json_obj",
    "other_method",
    "parse_decimal",
    "pool_shares",
    "ratio_str",
    "reversal_bookings",
    "split_by_usage",
    "split_pool",
    "to_json_obj",
    "used_works",
]
