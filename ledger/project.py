"""The projector: folds each platform's log into the read models, with tracking.

The write side (`ledger.ingest`) appends events and nothing else; the
projector follows the logs and keeps the read models (`ledger.views`) at
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
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import orjson

from ledger.store import Store
from ledger.views import ViewWriter, create_views, stored_vector_keys, tracking_name
from projections.fold import PlatformFold

# How often a following projector looks for new events when it is idle.
FOLLOW_POLL_MS = 50


class PlatformProjection:
    def __init__(self, store: Store, platform: str) -> None:
        tracked_seq = store.tracked_seq(tracking_name(platform))
        self.fold = PlatformFold(platform)
        self.views = ViewWriter(self.fold, stored_vector_keys(store, platform), tracked_seq)
        for stored in store.read_log(platform, upto_seq=tracked_seq):
            self.fold.apply(orjson.loads(stored.state), stored.originator_version)

    def advance(self, store: Store) -> int:
        """Apply and write everything the log holds past the fold; returns the count."""
        start_seq = self.fold.seq
        views = self.views
        for stored in store.read_log(self.fold.platform, after_seq=start_seq):
            views.note(self.fold.apply(orjson.loads(stored.state), stored.originator_version))
            if views.pending_events >= views.flush_every_events:
                views.flush(store)
        views.flush(store)
        return self.fold.seq - start_seq


class Projector:
    """Keeps every platform's read models at its log's head."""

    def __init__(self, store: Store) -> None:
        self.store = store
        create_views(store)
        self.platforms: dict[str, PlatformProjection] = {}

    def catch_up(self) -> int:
        """One pass over every platform; returns how many events were applied."""
        applied = 0
        for platform in self.store.platforms():
            projection = self.platforms.get(platform)
            if projection is None:
                projection = self.platforms[platform] = PlatformProjection(self.store, platform)
            if self.store.head(platform) > projection.fold.seq:
                applied += projection.advance(self.store)
        return applied

    def follow(self, stop: Any) -> None:
        """Catch up until `stop` is set, then once more, so nothing is left behind."""
        while not stop.is_set():
            if self.catch_up() == 0:
                stop.wait(FOLLOW_POLL_MS / 1000)
        self.catch_up()


def _follow_in_child(db_url: str, stop: Any) -> None:
    with Store(db_url) as store:
        Projector(store).follow(stop)


class ProjectorProcess:
    """A projector in a child process, for the duration of a `with` block.

    On leaving the block the child is told to stop, catches up with the log
    and exits; leaving waits for that, so the read models are at the head.
    """

    def __init__(self, db_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited connections
        self._stop = ctx.Event()
        self._process = ctx.Process(target=_follow_in_child, args=(db_url, self._stop), daemon=True)

    def __enter__(self) -> "ProjectorProcess":
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join()
        if self._process.exitcode != 0 and exc[0] is None:
            raise RuntimeError(f"the projector process failed (exit code {self._process.exitcode})")
