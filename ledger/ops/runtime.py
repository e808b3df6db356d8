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

Why the service's writer and projector run niced
------------------------------------------------
`peerledger serve` answers reads in its front process while its writer and
projector processes fold events as fast as the cores allow.  On a machine
with fewer spare cores than busy processes, a read thread that wakes up
waits for the scheduler to take a core from a fold, and that wait shows in
every read's latency under ingest.  Reads are latency work and folds are
throughput work, so the folds run at nice `BACKGROUND_NICE`: Linux's
scheduler then weighs a waking read thread about 3 times higher than a fold
(nice 0 against nice 5), and the folds still get every cycle no read wants.
Measured with `bench/http_bench.py --quick`, alternating runs: reads during
ingest p90 9 to 12 ms against 18 to 31 ms without, the same ingest rate
(docs/http.md).
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal

from projections.state import CACHE_DEFAULT_BYTES

# (generation 0 allocations, generation 1 and generation 2 collection ratios)
GC_THRESHOLDS = (100_000, 50, 100)
# Added to the niceness of the processes that fold events behind a service
# that answers reads; one step, at start (an unprivileged process can raise
# its niceness but never lower it again).
BACKGROUND_NICE = 5


def tune_gc() -> None:
    """Apply GC_THRESHOLDS to this process (idempotent)."""
    gc.set_threshold(*GC_THRESHOLDS)


def yield_cpu_to_reads() -> None:
    """Run this process at BACKGROUND_NICE more than its parent (see the
    module doc); call once, at the start of the process."""
    os.nice(BACKGROUND_NICE)


# The environment variable that sets a process's state cache budget, in MiB.
CACHE_ENV = "PEERLEDGER_CACHE_MIB"


def cache_budget_bytes() -> int:
    """The bytes a writer's state caches may hold (`projections.state.StateCaches`):
    `PEERLEDGER_CACHE_MIB`, or the default that keeps a writer under 300 MiB."""
    text = os.environ.get(CACHE_ENV)
    if text is None:
        return CACHE_DEFAULT_BYTES
    if not text.isdigit() or not 0 <= int(text) <= CACHE_MAX_MIB:
        raise ValueError(f"{CACHE_ENV} must be a whole number of MiB from 0 to {CACHE_MAX_MIB}, got {text!r}")
    return int(text) * 1024 * 1024


# A bound on the setting: a typo of a few digits must not ask for terabytes.
CACHE_MAX_MIB = 64 * 1024

# prctl(2): ask the kernel to signal this process when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, signum: int = signal.SIGKILL) -> None:
    """Have the kernel send `signum` to this process when the thread that
    started it exits, however it ends (kill -9 included): a command's child
    processes end when the command does, never as orphans (Linux).

    `parent_pid` is the pid of the process that started this one, taken by
    the parent before the start: if it died before this call ran (the child
    was still starting), the kernel never signals, so the child checks that
    its parent is still the one that started it and ends itself otherwise."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum))
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


__all__ = ["BACKGROUND_NICE", "CACHE_ENV", "GC_THRESHOLDS", "cache_budget_bytes", "die_with_parent", "tune_gc", "yield_cpu_to_reads"]
