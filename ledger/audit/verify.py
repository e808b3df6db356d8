"""`verify`: rebuild a platform from its log alone and compare with the ledger.

The stored canonical events are folded again, in seq order, into a scratch
database (`ledger.storage.replay`: bounded memory, whatever the log's
length), and compared, in this order; the first difference stops it and is
named by its seq where it has one:

1. per seq: the stored event is well-formed and canonical, its id record
   is its own, the ledger rules allow it at that point (the write side
   decided the same), the leaf hash and effect hash recorded when it was
   appended equal the replay's, and every Merkle tree node the event
   completes equals the stored one (`ledger.audit.tree.TreeCheck`), as does
   the root at each signed checkpoint;
2. per recorded seq: the balances digest the ledger recorded;
3. at the end: no event id twice, no tree node or checkpoint beyond the
   log, and every state table (the writer's state and the read models:
   heads, prosumers, works, reverse edges, payouts, values, vectors and
   explanations, balances, statements) equal to the rebuilt one, row for row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledger.audit.tree import TreeCheck
from ledger.contract.schema import parse_event
from ledger.ops.runtime import cache_budget_bytes
from ledger.storage.replay import NativeReplay, Replay, batches_of, new_replay, scratch_store
from ledger.storage.state import STATE_TABLES
from ledger.storage.store import LogGap, Store, leaf_hash
from ledger.storage.views import recorded_digests
from projections.balances import balance_rows, balances_digest

# The replay's state caches get this share of the process's budget: verify
# holds two databases' working sets and, at the end, pages of both sides'
# rows.  Over a 1M-event ledger it peaked at 286 MiB (SQLite) and 313 MiB
# (PostgreSQL) with the whole budget; with half, 255 MiB and 283 MiB, and on
# SQLite 128 s against 124 s (its reads are of a local scratch file).
VERIFY_CACHE_DIVISOR = 2
# Rows compared per query when the state tables are walked side by side.
COMPARE_CHUNK_ROWS = 10_000
# Compared at the end; the digests are compared per recorded seq instead.
_COMPARED_TABLES = [t for t in STATE_TABLES if t != "peerledger_digests"]


@dataclass
class VerifyReport:
    platform: str
    ok: bool
    events: int
    digest: str
    difference: str | None = None
    digests_checked: int = 0


class _Difference(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def verify(store: Store, platform: str) -> VerifyReport:
    with scratch_store() as scratch:
        replay = new_replay(scratch, platform, cache_budget_bytes() // VERIFY_CACHE_DIVISOR)
        checked = [0]
        try:
            digest = _verify(store, platform, replay, scratch, checked)
        except LogGap as gap:  # the log is read in seq order: everything before the gap was checked
            return VerifyReport(platform, False, gap.seq - 1, "",
                                f"seq {gap.seq}: missing from the stored log (event removed?)", checked[0])
        except _Difference as d:
            return VerifyReport(platform, False, replay.seq, "", d.message, checked[0])
        return VerifyReport(platform, True, replay.seq, digest, None, checked[0])


def _verify(store: Store, platform: str, replay: Replay | NativeReplay, scratch: Store, checked: list[int]) -> str:
    digests = recorded_digests(store, platform)
    ids: Iterator[tuple[str, int, bytes, bytes, str]] = store.id_records(platform)
    tree = TreeCheck(store, platform)
    for batch in batches_of(store.read_log(platform), stops=digests, parsed=False):
        decided = replay.decide(batch)
        for (seq, _, stored), d in itertools.zip_longest(batch, decided):
            if d is None:  # not reached: the replay stopped at the difference before
                raise AssertionError(f"seq {seq}: the replay stopped short of it")
            record = next(ids, None)
            if d.invalid is not None:
                raise _Difference(f"seq {seq}: stored event is not a valid v1 event: {d.invalid}")
            canonical = d.canonical if d.refusal is None else parse_event(stored).canonical  # refused: rare
            if canonical != stored:
                raise _Difference(f"seq {seq}: stored bytes are not canonical")
            if d.platform != platform:
                raise _Difference(f"seq {seq}: platform or type differs from the log's")
            if record is None or record[1] != seq or record[0] != d.event_id:
                raise _Difference(f"seq {seq}: id record missing or for another event")
            if d.refusal is not None:
                code, message = d.refusal
                raise _Difference(f"seq {seq}: the rules refuse this event on replay: {code}: {message}")
            if record[2] != leaf_hash(stored):
                raise _Difference(f"seq {seq}: leaf hash recorded at append differs from the stored bytes'")
            if problem := tree.leaf(seq, record[2]):
                raise _Difference(problem)
            if record[3] != d.effect_hash:
                raise _Difference(f"seq {seq}: bookings differ from those recorded when the event was appended")
        seq = replay.seq
        if seq in digests:
            checked[0] += 1
            rebuilt = balances_digest(balance_rows(replay.balances()))
            if rebuilt != digests[seq]:
                raise _Difference(f"seq {seq}: balances digest {rebuilt} differs from recorded {digests[seq]}")
    if next(ids, None) is not None:
        raise _Difference(f"seq {replay.seq + 1}: id record without an event (event removed?)")
    twice = store.query("SELECT event_id FROM peerledger_event_ids WHERE platform = ? GROUP BY event_id "
                        "HAVING COUNT(*) > 1 LIMIT 1", (platform,))
    if twice:
        raise _Difference(f"event id {twice[0][0]!r} appears twice in the log")
    if problem := tree.finish():
        raise _Difference(problem)
    if max(digests, default=0) > replay.seq:
        raise _Difference(f"seq {max(digests)}: a digest was recorded beyond the log's end ({replay.seq})")
    for table in _COMPARED_TABLES:
        _compare_table(store, scratch, platform, table)
    return balances_digest(balance_rows(replay.balances()))


def _compare_table(live: Store, rebuilt: Store, platform: str, name: str) -> None:
    """Every row of table `name`: the live one equals the rebuilt one.

    The live rows are walked in the live database's key order, a page at a
    time, and each page's rebuilt rows are fetched by key (one query), so the
    two databases need not agree on how they sort text; then the counts
    must agree, else a rebuilt row the live ledger lacks is named."""
    table = STATE_TABLES[name]
    live_count = 0
    for page in _pages(live, name, platform):
        rebuilt_rows = _by_key(rebuilt, name, platform, [_key(table, row) for row in page])
        for row in page:
            other = rebuilt_rows.get(_key(table, row))
            if other != row:
                _differ(name, table, row, other)
        live_count += len(page)
    rebuilt_count = int(rebuilt.query(f"SELECT COUNT(*) FROM {name} WHERE platform = ?", (platform,))[0][0])
    if rebuilt_count != live_count:
        for page in _pages(rebuilt, name, platform):
            live_rows = _by_key(live, name, platform, [_key(table, row) for row in page])
            for row in page:
                if _key(table, row) not in live_rows:
                    _differ(name, table, None, row)
        raise _Difference(f"live {name.removeprefix('peerledger_')}: {live_count} rows, the replay "
                          f"{rebuilt_count}")


def _pages(store: Store, name: str, platform: str) -> Iterator[list[tuple[Any, ...]]]:
    """The platform's rows of table `name`, in the database's own key order,
    a page at a time (keyset pagination: each page starts after the last
    key of the one before, so a page costs the same wherever it is)."""
    table = STATE_TABLES[name]
    columns = ", ".join(table.columns)
    if not table.keys:
        yield [_normalised(table, r) for r in store.query(f"SELECT {columns} FROM {name} WHERE platform = ?",
                                                           (platform,))]
        return
    keys = ", ".join(table.keys)
    after: tuple[Any, ...] | None = None
    while True:
        if after is None:
            rows = store.query(f"SELECT {columns} FROM {name} WHERE platform = ? ORDER BY {keys} LIMIT ?",
                               (platform, COMPARE_CHUNK_ROWS))
        else:
            marks = ", ".join("?" * len(after))
            rows = store.query(f"SELECT {columns} FROM {name} WHERE platform = ? AND ({keys}) > ({marks}) "
                               f"ORDER BY {keys} LIMIT ?", (platform, *after, COMPARE_CHUNK_ROWS))
        if not rows:
            return
        after = tuple(rows[-1][:len(table.keys)])  # the key columns lead every table's column list
        yield [_normalised(table, r) for r in rows]


def _by_key(store: Store, name: str, platform: str, keys: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], Any]:
    table = STATE_TABLES[name]
    if not table.keys:
        rows = store.query(f"SELECT {', '.join(table.columns)} FROM {name} WHERE platform = ?", (platform,))
    else:
        one = len(table.keys) == 1
        rows = store.state.select(name, ", ".join(table.columns), table.keys, platform,
                                  [k[0] if one else k for k in keys])
    return {_key(table, row): row for row in (_normalised(table, r) for r in rows)}


def _key(table: Any, row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(row[:len(table.keys)])


def _normalised(table: Any, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as comparable Python values, whichever database it came from:
    exact ints for money and counters, bytes for blobs."""
    out = []
    for column, x in zip(table.columns, row):
        if isinstance(x, (bytes, bytearray, memoryview)):
            x = bytes(x)
        elif isinstance(x, (bool, Decimal)) or column in table.money:
            x = int(x)
        out.append(x)
    return tuple(out)


def _differ(name: str, table: Any, live_row: tuple[Any, ...] | None, rebuilt_row: tuple[Any, ...] | None) -> None:
    if name == "peerledger_heads" and live_row is not None and rebuilt_row is not None:
        _head_differ(live_row, rebuilt_row)
    seqs = [int(r[table.columns.index("seq")]) for r in (live_row, rebuilt_row)
            if r is not None and "seq" in table.columns]
    where = f"seq {min(seqs)}: " if seqs else ""
    raise _Difference(f"{where}live {name.removeprefix('peerledger_')} differ from the replay: "
                      f"live {_show(live_row)} != rebuilt {_show(rebuilt_row)}")


def _head_differ(live_row: tuple[Any, ...], rebuilt_row: tuple[Any, ...]) -> None:
    """The head differs from the replay's: name the seq.  A head past the
    log's end means events were removed; a different tree edge names the
    perfect subtree, and so the seqs, where an event or its leaf hash was
    changed (the edge holds one hash per set bit of the log's size, largest
    subtree first: it covers the events no stored node covers yet, the log's
    last partial block of 256)."""
    (live_seq, _, live_edge), (seq, _, edge) = live_row[:3], rebuilt_row[:3]
    if live_seq > seq:
        raise _Difference(f"seq {seq + 1}: the head records {live_seq} events, the log holds {seq}: "
                          "events removed?")
    if live_seq != seq or live_edge == edge:
        return
    first, part = 0, 0
    for bit in reversed(range(int(seq).bit_length())):
        if not seq >> bit & 1:
            continue
        if live_edge[part * 32:(part + 1) * 32] != edge[part * 32:(part + 1) * 32]:
            raise _Difference(f"seq {first + 1}: the tree's right edge kept with the head differs from the one "
                              f"recomputed from the events over seqs {first + 1}–{first + (1 << bit)}: an event or "
                              "its leaf hash was changed there")
        first, part = first + (1 << bit), part + 1


def _show(row: tuple[Any, ...] | None) -> str:
    if row is None:
        return "(none)"
    text = ", ".join(x.hex()[:16] + "…" if isinstance(x, bytes) else repr(x) for x in row)
    return f"({text[:300]})"
