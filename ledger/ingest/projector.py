"""The projector: keeps the derived views (the dashboard's flows) at each log's head.

The core read models (balances, statements, explanations) need no
projector: the writer writes them with the events, in one transaction
(`ledger.ingest.ingestor`).  What is derived from them follows the log
instead, with a tracking record, and never folds an event a second time:
for the flows (`ledger.storage.flows`), a `FlowFollower` reads a chunk of at
most FLOWS_CHUNK_EVENTS events past the platform's tracked seq, the value
rows of its sales and refunds and the vector rows of the works sold (one
query per table), books each sale (and each closed usage pool, a sale of its
funding in its close's month) again exactly as the fold did
(`attribution.allocate` of the amount by the stored vector with the
value's fee), routes it (`projections.flows`) and adds the chunk's sums to
the flow rows with the new tracked seq, in one transaction.

Memory is one chunk and a bounded cache of routed vectors, whatever the
log's length; starting costs two queries per platform (its head and its
tracked seq).  Each chunk is read and written under the platform's flows
lock, with the tracked seq read under it too, so a follower killed at any
instant resumes where the last committed chunk ended, and several
followers of one platform (a projection worker, `serve`'s projector, the
dashboard bringing a platform to its head on request) never count an
event twice.

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
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson

from attribution import BoundedCache, ShareVector, from_json_obj
from attribution.graph import vector_size
from ledger.ingest.claims import PlatformClaims
from ledger.ops import metrics
from ledger.ops.runtime import tune_gc
from ledger.storage import flows as flow_tables
from ledger.storage.store import LogEntry, Store
from projections.flows import FlowDeltas, RouteSplit, pool_route_split, route_split
from projections.periods import utc_month
from projections.state import POOL_WORK_PREFIX

# How often a following projector looks for new events when it is idle.
FOLLOW_POLL_MS = 50
# Events counted per transaction: bounds a chunk's memory (its events, value
# and vector rows, and sums), and how much a killed follower does again.
FLOWS_CHUNK_EVENTS = 2_000
# Routed vectors kept between chunks, so a work sold again and again is
# read and parsed once: bounded in recipient entries and estimated bytes.
ROUTES_CACHE_MAX_ENTRIES = 1_000_000
ROUTES_CACHE_MAX_BYTES = 32 * 1024 * 1024

_REALIZED = "value.realized"
_REVERSED = "value.reversed"
_CLOSED = "pool.closed"  # a closed pool is a value realized at its close (EVENTS.md §7)
Routed = tuple[ShareVector, RouteSplit]  # a (work, version)'s vector, and its routes


def _routed_size(item: Routed) -> tuple[int, int]:
    vector, split = item
    entries, size = vector_size(vector)
    for routes in split.values():
        more, more_bytes = vector_size(routes)
        entries, size = entries + more, size + more_bytes
    return entries, size


class FlowFollower:
    """Adds each platform's events to its flow rows, a chunk at a time
    (see the module doc).  Safe to share between threads."""

    def __init__(self, store: Store) -> None:
        if store.upgrade_pending:
            raise RuntimeError(f"{store.url} was written by an older peerledger: run `peerledger upgrade` first")
        self.store = store
        flow_tables.ensure_flows_schema(store)
        self._routes: BoundedCache[tuple[str, str, int], Routed] = BoundedCache(
            ROUTES_CACHE_MAX_ENTRIES, ROUTES_CACHE_MAX_BYTES, _routed_size)
        # PostgreSQL's advisory locks belong to a session, and a Store has one
        # lock session for all its threads: threads exclude each other here.
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self, platform: str) -> Iterator[None]:
        with self._thread_lock, self.store.platform_locks((), also=(flow_tables.lock_name(platform),)):
            yield

    def advance(self, platform: str) -> tuple[int, int]:
        """Count every event past the tracked seq, a chunk per transaction;
        returns (events counted, the seq the flows are at)."""
        counted = 0
        while True:
            with self._locked(platform):
                n, seq = self._chunk(platform)
            counted += n
            if n == 0:
                return counted, seq

    @contextlib.contextmanager
    def at_head(self, platform: str) -> Iterator[int]:
        """The flows brought to the log's head and held there (the lock is
        held) while the caller reads them; yields their seq."""
        self.advance(platform)  # the long part, releasing the lock between chunks
        with self._locked(platform):
            while True:  # and the events appended since
                n, seq = self._chunk(platform)
                if n == 0:
                    break
            yield seq

    def _chunk(self, platform: str) -> tuple[int, int]:
        """Count the next chunk (the lock is held); (events counted, seq reached)."""
        store = self.store
        tracked = store.tracked_seq(flow_tables.tracking_name(platform))
        entries = list(store.read_log(platform, after_seq=tracked, upto_seq=tracked + FLOWS_CHUNK_EVENTS))
        if not entries:
            return 0, tracked
        deltas = self._deltas(platform, entries)
        seq = entries[-1].originator_version
        flow_tables.add_deltas(store, platform, deltas, seq)
        return len(entries), seq

    def _deltas(self, platform: str, entries: list[LogEntry]) -> FlowDeltas:
        """The chunk's sums: its value and vector rows read once per table."""
        events = [orjson.loads(e.state) for e in entries if e.topic in (_REALIZED, _REVERSED, _CLOSED)]
        values = self.store.state.values(platform, {_value_id(event) for event in events})
        # A pool closed with nothing funded booked nothing: there is nothing to draw.
        events = [e for e in events if e["type"] != _CLOSED or values[_value_id(e)].amount_minor]
        sold = (values[_value_id(e)] for e in events if e["type"] != _REVERSED)
        routed = self._routed(platform, {(v.work, v.vector_version) for v in sold})
        deltas = FlowDeltas()
        for event in events:
            value = values[_value_id(event)]
            month = utc_month(event["at"])
            if event["type"] != _REVERSED:
                vector, split = routed[(value.work, value.vector_version)]
                deltas.realized(month, value.currency, value.work, value.amount_minor, vector.with_fee(value.fee_bps),
                                split)
            else:
                deltas.reversed(month, value.currency, event["data"]["amount"])
        return deltas

    def _routed(self, platform: str, keys: set[tuple[str, int]]) -> dict[tuple[str, int], Routed]:
        """The vector and routes of each sold (work, version): cached, or
        read with one query for the rest.  The fold stored both at the
        work's first sale at that version."""
        found: dict[tuple[str, int], Routed] = {}
        missing = []
        for key in keys:
            hit = self._routes.get((platform, *key))
            if hit is None:
                missing.append(key)
            else:
                found[key] = hit
        for work, version, vector, explanation in self.store.state.select(
                "peerledger_vectors", "work, version, vector, explanation", ("work", "version"), platform, missing):
            key = (work, int(version))
            shares = from_json_obj(orjson.loads(bytes(vector)))
            split = (pool_route_split(work, shares) if work.startswith(POOL_WORK_PREFIX)
                     else route_split(orjson.loads(bytes(explanation))["routes"]))
            found[key] = (shares, split)
            self._routes.put((platform, *key), found[key])
        return found


def _value_id(event: dict[str, Any]) -> str:
    """The value an event realizes or reverses (a pool's id is its value's)."""
    data = event["data"]
    return data["pool"] if event["type"] == _CLOSED else data["value"]


class Projector:
    """Keeps every platform's derived views at its log's head (with claims:
    every platform this worker owns)."""

    def __init__(self, store: Store, claims: PlatformClaims | None = None) -> None:
        self.store = store
        self.claims = claims
        self.follower = FlowFollower(store)
        # platform -> the seq its flows were at when this projector last looked.
        self.platforms: dict[str, int] = {}

    def advance(self, platform: str) -> int:
        """Bring one platform's derived views to its log's head; returns how
        many events were counted.  Cheaper than `catch_up` when the caller
        knows which platform moved: no listing of the platforms."""
        seq = self.platforms.get(platform)
        if seq is None:
            seq = self.store.tracked_seq(flow_tables.tracking_name(platform))
        head = self.store.head(platform)
        applied = 0
        if head > seq:
            metrics.PROJECTION_LAG.labels(platform).set(head - seq)
            started = time.perf_counter()
            applied, seq = self.follower.advance(platform)
            metrics.PROJECTION_BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.PROJECTION_EVENTS.labels(platform).inc(applied)
        self.platforms[platform] = seq
        metrics.PROJECTION_APPLIED_SEQ.labels(platform).set(seq)
        metrics.PROJECTION_LAG.labels(platform).set(max(0, head - seq))
        return applied

    def catch_up(self) -> int:
        """One pass over every platform (with claims: every owned one);
        returns how many events were counted."""
        if self.claims is None:
            return sum(self.advance(platform) for platform in self.store.platforms())
        owned, released = self.claims.update(self.store.platforms)
        for platform in released:  # another worker owns it now: drop its series
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
    catches up with the log and exits; leaving waits for that, so the
    derived views are at the head.  Two more properties a long-running
    writer (a Kafka consumer) needs:

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
