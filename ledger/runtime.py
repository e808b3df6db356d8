"""Process-wide settings every long-running peerledger process applies at start.

Why the garbage collector is tuned
----------------------------------
A fold holds a large, long-lived heap of small containers (works, share
vectors, values, figures: millions of objects on a big platform), and the
hot paths allocate many short-lived tuples and dicts per event.  With
CPython's default thresholds (700, 10, 10) the cyclic collector runs every
700 allocations and keeps re-scanning that long-lived heap: on the
200 000-event bench stream, about a fifth of the fold's CPU time
(`bench/gc_bench.py`, results in bench/results/gc.md).  Nothing the ledger
keeps is cyclic garbage, so collecting less often costs no correctness and
little memory: a young generation of 100 000 objects (a few MB) is still
collected, just 140 times less often, and full collections keep CPython's
own rule (only once a quarter of the old heap is new).
"""

from __future__ import annotations

import gc

# (generation 0 allocations, generation 1 and generation 2 collection ratios)
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Apply GC_THRESHOLDS to this process (idempotent)."""
    gc.set_threshold(*GC_THRESHOLDS)


__all__ = ["GC_THRESHOLDS", "tune_gc"]
