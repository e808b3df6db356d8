"""Which platforms a projection worker projects, when several share one PostgreSQL database.

A platform's derived views follow one ordered log, so only one process can
usefully project a platform at a time: two would take turns at the
platform's flows lock (`ledger.ingest.projector`), each waiting for the
other.  Several `peerledger project --follow` workers therefore split the
platforms between them instead of each following all of them:

* a worker owns a platform while it holds a session advisory lock on it
  (`pg_try_advisory_lock`), on a connection of its own.  The lock dies with
  the connection, so a killed worker's platforms are free as soon as
  PostgreSQL sees its connection close (at once for a killed process; within
  the TCP keepalive bound below for a lost machine);
* at most every REBALANCE_SECONDS a worker counts the live workers (the
  connections to this database named APPLICATION_NAME) and holds its fair
  share, ceil(platforms / workers): it gives up the surplus when a worker
  joined, and claims free platforms up to its share when one left or new
  platforms appeared.  A handover therefore takes up to two rebalance
  periods; the new owner starts at the platform's tracked seq (two queries,
  nothing replayed).

Claims spread work; they are not what keeps the views correct.  A platform
projected by two processes at once (a worker and `serve`'s projector, or a
worker that lost its claims connection) is still right: each chunk is
counted under the platform's flows lock, from the tracked seq read under
it.  That is also why a lost claims connection simply stops the worker (the
error propagates): its supervisor restarts it.

Workers must reach PostgreSQL directly or through a session-mode pooler:
advisory locks do not survive a transaction-mode pooler.  On SQLite (one
machine, one file) there is nothing to share: `open_claims` returns None and
every projector projects every platform.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ledger.ops import metrics
from ledger.storage.store import DbUrl

# The name every projection worker's claims connection carries: the live
# workers are the connections of this name to the database.  Other kinds of
# workers that split the platforms (`peerledger publish`, one kind per topic)
# pass names of their own, so that each kind counts only its own workers.
APPLICATION_NAME = "peerledger-projector"
# PostgreSQL truncates an application_name to 63 bytes.
APPLICATION_NAME_MAX_BYTES = 63
# How often a worker recounts the workers and re-balances its platforms (and
# notices new platforms): the longest a platform waits for an owner after a
# worker died or a platform appeared.
REBALANCE_SECONDS = 2.0
# A claims connection to a machine that vanished is dropped by the kernel
# after about idle + interval * count seconds, and PostgreSQL frees its locks.
KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
CONNECT_TIMEOUT_SECONDS = 10
# A platform's lock key: the hash of its worker kind (the application name)
# and its id, so that kinds never hold each other's platforms.
_LOCK_KEY = "hashtextextended(%s || ':' || {}, 7)"

_COUNT_WORKERS = ("SELECT count(*) FROM pg_stat_activity "
                  "WHERE datname = current_database() AND application_name = %s")
# Try-locks free platforms until `limit` are held.  The lock call is in the
# WHERE clause under a LIMIT without ORDER BY: PostgreSQL evaluates it row by
# row and stops at the limit, so exactly the rows returned were locked.
_CLAIM = f"SELECT p FROM unnest(%s::text[]) AS p WHERE pg_try_advisory_lock({_LOCK_KEY.format('p')}) LIMIT %s"
_RELEASE = f"SELECT pg_advisory_unlock({_LOCK_KEY.format('%s')})"
ClaimedGauge = Callable[[int], None]


class PlatformClaims:
    """This worker's share of the platforms (see the module doc)."""

    def __init__(self, pg: dict[str, Any], clock: Callable[[], float] = time.monotonic, *,
                 application_name: str = APPLICATION_NAME,
                 claimed: ClaimedGauge = metrics.PROJECTION_PLATFORMS_CLAIMED.set) -> None:
        import psycopg

        assert 0 < len(application_name.encode()) <= APPLICATION_NAME_MAX_BYTES, application_name
        self._conn = psycopg.connect(autocommit=True, application_name=application_name,
                                     connect_timeout=CONNECT_TIMEOUT_SECONDS, **KEEPALIVE, **pg)
        self._name = application_name
        self._claimed = claimed
        self._clock = clock
        self._rebalanced_at = -REBALANCE_SECONDS
        self.owned: set[str] = set()

    def update(self, list_platforms: Callable[[], Sequence[str]]) -> tuple[list[str], list[str]]:
        """(the platforms to project now, the platforms given up since the
        last call).  Lists the platforms and rebalances at most every
        REBALANCE_SECONDS (listing them scans the log's index)."""
        released: list[str] = []
        now = self._clock()
        if now - self._rebalanced_at >= REBALANCE_SECONDS:
            self._rebalanced_at = now
            released = self._rebalance(list(list_platforms()))
        return sorted(self.owned), released

    def _rebalance(self, platforms: list[str]) -> list[str]:
        row = self._conn.execute(_COUNT_WORKERS, (self._name,)).fetchone()
        workers = max(1, int(row[0]) if row else 1)  # this worker counts itself
        share = -(-len(platforms) // workers)
        released: list[str] = []
        if len(self.owned) > share:
            for platform in sorted(self.owned)[share:]:
                self._conn.execute(_RELEASE, (self._name, platform))
                self.owned.discard(platform)
                released.append(platform)
        elif len(self.owned) < share:
            free = [p for p in platforms if p not in self.owned]
            claimed = self._conn.execute(_CLAIM, (free, self._name, share - len(self.owned))).fetchall()
            self.owned.update(p for (p,) in claimed)
        self._claimed(len(self.owned))
        return released

    def close(self) -> None:
        """Give every platform up (closing the connection frees its locks)."""
        self._conn.close()
        self.owned.clear()


def open_claims(db_url: str, **kwargs: Any) -> PlatformClaims | None:
    """Claims for a worker on this database (a projection worker unless
    `kwargs` name another kind); None on SQLite."""
    pg = DbUrl.parse(db_url).pg
    return PlatformClaims(pg, **kwargs) if pg is not None else None
