"""The projector: folds each platform's log into the read models, with tracking.

The write side (`ledger.ingest.ingestor`) appends events and nothing else; the
projector follows the logs and keeps the read models (`ledger.storage.views`) at
their heads.  For each platform it holds a fold: on start it replays the log
up to the tracked seq without writing (that state is already in the read
models), then applies every later event and notes what it touched; the rows
and the new tracked seq are written in one transaction.  A projector killed
at any instant resumes from the tracked seq: nothing is applied twice,
nothing is skipped.  Two projectors may run at once: a flush that finds the
read models already past its fold's seq discards its own (older) rows.

`peerledger ingest` runs a projector in a second process beside the
appending one (the machine's second core), and waits for it to reach the
log's head before it returns, so queries after an ingest see every event.

`peerledger project --follow` is the projection worker of a deployment:
given `PlatformClaims` (`ledger.ingest.claims`), several of them split the
platforms between them.  Every projector reports its position and lag per
platform in `ledger.ops.metrics`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from typing import Any

from ledger.ingest.claims import PlatformClaims
from ledger.ops import metrics
from ledger.ops.runtime import tune_gc
from ledger.storage.store import Store

# How often a following projector looks for new events when it is idle.
FOLLOW_POLL_MS = 50


class PlatformProjection:
    """The derived views of one platform (being rewritten: see derived-views)."""

    def __init__(self, store: Store, platform: str) -> None:
        self.platform = platform
        self.seq = store.head(platform)

    def advance(self, store: Store) -> int:
        head = store.head(self.platform)
        applied, self.seq = head - self.seq, head
        return applied


class Projector:
    """Keeps every platform's read models at its log's head (with claims:
    every platform this worker owns)."""

    def __init__(self, store: Store, claims: PlatformClaims | None = None) -> None:
        self.store = store
        self.claims = claims
        self.platforms: dict[str, PlatformProjection] = {}

    def advance(self, platform: str) -> int:
        """Bring one platform's read models to its log's head; returns how many
        events were applied.  Cheaper than `catch_up` when the caller knows
        which platform moved: no scan of the log for its platforms."""
        projection = self.platforms.get(platform)
        if projection is None:
            projection = self.platforms[platform] = PlatformProjection(self.store, platform)
        head = self.store.head(platform)
        applied = 0
        if head > projection.seq:
            metrics.PROJECTION_LAG.labels(platform).set(head - projection.seq)
            started = time.perf_counter()
            applied = projection.advance(self.store)
            metrics.PROJECTION_BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.PROJECTION_EVENTS.labels(platform).inc(applied)
        metrics.PROJECTION_APPLIED_SEQ.labels(platform).set(projection.seq)
        metrics.PROJECTION_LAG.labels(platform).set(max(0, head - projection.seq))
        return applied

    def catch_up(self) -> int:
        """One pass over every platform (with claims: every owned one);
        returns how many events were applied."""
        if self.claims is None:
            return sum(self.advance(platform) for platform in self.store.platforms())
        owned, released = self.claims.update(self.store.platforms)
        for platform in released:  # another worker owns it now: drop its fold and its series
            self.platforms.pop(platform, None)
            for gauge in (metrics.PROJECTION_APPLIED_SEQ, metrics.PROJECTION_LAG):
                with contextlib.suppress(KeyError):  # never advanced here
                    gauge.remove(platform)
        return sum(self.advance(platform) for platform in owned)

    def follow(self, stop: Any) -> None:
        """Catch up until `stop` is set, then once more, so nothing is left behind."""
        while not stop.is_set():
            if self.catch_up() == 0:
                stop.wait(FOLLOW_POLL_MS / 1000)
        self.catch_up()


class ProjectorProcess:
    """A projector (`Projector.follow`) in a child process, for the duration
    of a `with` block.  On leaving the block the child is told to stop,
    catches up with the log and exits; leaving waits for that, so the read
    models are at the head.  Two more properties a long-running writer
    (ingest, a Kafka consumer) needs:

    * the child ignores SIGINT and SIGTERM: a terminal's Ctrl-C and a
      supervisor's SIGTERM reach the whole process group, and the child must
      outlive them so that the writer can finish its batch and then stop
      the projector at the log's head.  (The signals are blocked while the
      child starts, since blocked signals survive fork and exec, and
      unblocked once it ignores them; anything sent to the writer
      meanwhile is delivered to it then, not lost.)
    * the child stops by itself, at the log's head, when the writer dies
      (kill -9): it never follows the logs as an orphan.
    """

    def __init__(self, db_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited connections
        self._stop = ctx.Event()
        self._process = ctx.Process(target=_follow_while_parent_lives, args=(db_url, self._stop, os.getpid()),
                                    name="peerledger-projector", daemon=True)

    def __enter__(self) -> "ProjectorProcess":
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self._process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join()
        if self._process.exitcode != 0 and exc[0] is None:
            raise RuntimeError(f"the projector process failed (exit code {self._process.exitcode})")


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class _StopOrOrphaned:
    """A stop event that is also set when the parent process is gone."""

    def __init__(self, stop: Any, parent_pid: int) -> None:
        self.stop = stop
        self.parent_pid = parent_pid

    def is_set(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent_pid

    def wait(self, timeout_seconds: float) -> bool:
        return self.stop.wait(timeout_seconds)


def _follow_while_parent_lives(db_url: str, stop: Any, parent_pid: int) -> None:
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    tune_gc()
    with Store(db_url) as store:
        Projector(store).follow(_StopOrOrphaned(stop, parent_pid))
