"""Upgrading a database written by an older peerledger.

The schema is versioned per part (`peerledger_schema`: part -> version,
`Store.ensure_schema`).  Until the state lived in tables, a database held
the log (events, id records, rejects, Merkle nodes) and the projector's read
models; the state the writer decided with was rebuilt in memory at every
start.  Such a database (state part below `STATE_SCHEMA_VERSION`) opens
with `Store.upgrade_pending`, and `upgrade` builds each platform's state
from its log, once: it clears whatever read models the projector had left
(they may be behind the log) and replays the log into the state tables
(`ledger.storage.replay`), under the platform's lock, then records the new
version.  The log itself is not touched, so digests, Merkle roots and
explanations are those the log implies, as before.

An interrupted upgrade leaves the version unrecorded; the next one starts
again from scratch for every platform.  No writer may write meanwhile: they
refuse a database whose upgrade is pending.  Two processes that open an old
database at once both find the upgrade pending; the second waits for the
schema lock and then finds the version recorded, so it builds nothing again
(rebuilding would empty the read models of a ledger already in service).
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.storage.replay import rebuild
from ledger.storage.state import STATE_TABLES
from ledger.storage.store import EVENTS_TABLE, Store


def upgrade(store: Store, progress: Callable[[str, int, int], None] | None = None) -> list[str]:
    """Build every platform's state from its log; returns the platforms
    (none if another process upgraded the database first).

    `progress(platform, events_done, events_total)` is called as it goes.
    """
    with store.schema_lock():
        if store.state_built():  # another process upgraded it while this one waited for the lock
            store.upgrade_pending = False
            return []
        platforms = [r[0] for r in store.query(
            f"SELECT DISTINCT originator_id FROM {EVENTS_TABLE} ORDER BY originator_id")]
        for platform in platforms:
            total = store.head(platform)
            with store.platform_locks([platform]):
                with store.write_transaction() as c:
                    for table in STATE_TABLES:
                        c.execute(store.dialect.sql(f"DELETE FROM {table} WHERE platform = ?"), (platform,))
                done = 0

                def advance(n: int, platform: str = platform, total: int = total) -> None:
                    nonlocal done
                    done += n
                    if progress is not None:
                        progress(platform, done, total)

                rebuild(store, store, platform, progress=advance)
        store.record_state_built()
    return platforms
