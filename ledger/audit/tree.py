"""The audit trail in the database: the Merkle tree, checkpoints, time travel.

Tree storage.  Each platform's log is the RFC 9162 tree of AUDIT.md §1.  Its
leaves are `peerledger_event_ids.leaf_hash`; `peerledger_merkle_nodes`
holds (platform, level, idx, hash) for every *perfect aligned subtree* of
level ≥ MERKLE_STORED_LEVEL_MIN (8), i.e. the hash of leaves
[idx·2^level, (idx+1)·2^level) for subtrees of 256 leaves or more.  The
write side keeps the tree's right edge with the platform's head and writes,
in the batch's append transaction, the nodes the batch completes: about
n/128 rows for n events.  A node, like an event, is never updated: a
complete subtree never changes.  (Ledgers written before kept every level
from 1; those rows are still checked by verify, and ignored otherwise.)

Cost model.  The root of any size n ≤ head, and each hash of an inclusion
or consistency proof, is the fold of at most log2(n) + 1 perfect subtrees
(`projections.merkle`), and a whole proof needs O(log n) of them: the
stored ones are fetched by primary key in one query, the smaller ones
folded from at most three ranges of 255 leaf hashes, so a root or a proof
is a few round trips and ~60 index lookups plus ≤ 765 leaf hashes read
whatever the log's length.

`TreeCheck` is the other direction: `verify` replays the log, recomputes
every node from the stored events and compares it with the stored one,
then the root with every checkpoint the ledger signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ledger.storage.dialect import Dialect
from ledger.storage.store import MERKLE_STORED_LEVEL_MIN, REPLAY_CHUNK_EVENTS, Store
from projections.balances import canonical_json
from projections.merkle import (
    EMPTY_ROOT,
    Frontier,
    LeafRange,
    NodeKey,
    consistency_ranges,
    inclusion_ranges,
    nodes_of,
    range_hash,
    subtree_hash,
)

# `checkpoints` lists at most this many (the newest) unless asked for fewer.
CHECKPOINTS_LIST_MAX = 10_000


class TreeError(Exception):
    """A stored node that a root or proof needs is missing."""


class StoredTree:
    """Roots and proofs of one platform's tree, from the stored nodes."""

    def __init__(self, store: Store, platform: str) -> None:
        self.store = store
        self.platform = platform

    def fetch(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """The hashes of `keys` (O(log n) of them) in a few round trips: the
        stored nodes (level ≥ MERKLE_STORED_LEVEL_MIN) in one query, the
        smaller subtrees folded from their leaves, one range of leaf hashes
        per block of 2^MERKLE_STORED_LEVEL_MIN leaves they fall in (a root
        or a proof touches at most three such blocks).

        The stored keys go in as a VALUES list joined by primary key: one
        index lookup per key.  (SQLite's planner scans the platform's whole
        index for an OR of (level, idx) pairs or a row-value IN list; a
        UNION ALL of point queries costs PostgreSQL a plan per branch.)
        """
        stored = [key for key in keys if key[0] >= MERKLE_STORED_LEVEL_MIN]
        found: dict[NodeKey, bytes] = {}
        if stored:
            statement = (
                "WITH k (level, idx) AS (VALUES " + ", ".join(["(?, ?)"] * len(stored)) + ") "
                "SELECT k.level, k.idx, n.hash FROM k JOIN peerledger_merkle_nodes n "
                "ON n.platform = ? AND n.level = k.level AND n.idx = k.idx"
            )
            params = [x for key in stored for x in key] + [self.platform]
            found = {(int(level), int(idx)): bytes(h) for level, idx, h in self.store.query(statement, params)}
        folded = [key for key in keys if key[0] < MERKLE_STORED_LEVEL_MIN]
        if folded:
            leaves = self._leaves({(idx << level) >> MERKLE_STORED_LEVEL_MIN for level, idx in folded})
            for level, idx in folded:
                first = idx << level
                hashes = [leaves.get(i) for i in range(first, first + (1 << level))]
                if all(h is not None for h in hashes):
                    found[(level, idx)] = subtree_hash(hashes)  # type: ignore[arg-type]
        missing = [key for key in keys if key not in found]
        if missing:
            level, idx = missing[0]
            raise TreeError(
                f"{self.platform}: tree node (level {level}, index {idx}) is missing from the database "
                f"(seqs {(idx << level) + 1}–{(idx + 1) << level}); run `peerledger verify`"
            )
        return found

    def _leaves(self, blocks: set[int]) -> dict[int, bytes]:
        """leaf index -> leaf hash of every stored leaf in `blocks` (blocks of
        2^MERKLE_STORED_LEVEL_MIN leaves), one indexed range read each."""
        out: dict[int, bytes] = {}
        width = 1 << MERKLE_STORED_LEVEL_MIN
        for block in sorted(blocks):
            for seq, h in self.store.query(
                    "SELECT seq, leaf_hash FROM peerledger_event_ids WHERE platform = ? AND seq > ? AND seq <= ?",
                    (self.platform, block * width, (block + 1) * width)):
                out[int(seq) - 1] = bytes(h)
        return out

    def hashes(self, ranges: Sequence[LeafRange]) -> list[bytes]:
        got = self.fetch(nodes_of(ranges))
        return [range_hash(start, end, lambda level, idx: got[(level, idx)]) for start, end in ranges]

    def root(self, size: int) -> bytes:
        return self.hashes([(0, size)])[0] if size else EMPTY_ROOT

    def inclusion(self, seq: int, size: int) -> tuple[bytes, list[bytes]]:
        """(leaf hash, audit path) of the event at `seq` in the tree of `size` events."""
        leaf, *path = self.hashes([(seq - 1, seq), *inclusion_ranges(seq - 1, size)])
        return leaf, path

    def consistency(self, first: int, second: int) -> list[bytes]:
        return self.hashes(consistency_ranges(first, second))


class TreeCheck:
    """Recomputes the tree while `verify` replays the log and compares.

    Call `leaf(seq, leaf_hash)` for each event in order (after checking the
    leaf hash against the stored bytes), then `finish()`.  Each returns the
    first difference as a message naming a seq, or None.  Stored nodes are
    read level by level in index order, a chunk at a time, which is the
    order in which the recomputation completes them: memory stays bounded
    (one chunk per level) whatever the log's length.
    """

    def __init__(self, store: Store, platform: str) -> None:
        self.store = store
        self.platform = platform
        self.frontier = Frontier()
        self._stored: dict[int, _Peekable] = {}
        self._checkpoints: dict[int, list[tuple[int, bytes]]] = {}
        create_audit_tables(store)
        for checkpoint_id, size, root in store.query(
            "SELECT checkpoint_id, size, root FROM peerledger_checkpoints WHERE platform = ?", (platform,)
        ):
            self._checkpoints.setdefault(int(size), []).append((int(checkpoint_id), bytes.fromhex(root)))

    def _stored_level(self, level: int) -> Iterator[tuple[int, bytes]]:
        after = -1
        while True:
            rows = self.store.query(
                "SELECT idx, hash FROM peerledger_merkle_nodes WHERE platform = ? AND level = ? AND idx > ? "
                "ORDER BY idx LIMIT ?",
                (self.platform, level, after, REPLAY_CHUNK_EVENTS),
            )
            if not rows:
                return
            for idx, h in rows:
                after = int(idx)
                yield after, bytes(h)

    def _checkpoint_difference(self) -> str | None:
        size = self.frontier.size
        for checkpoint_id, root in self._checkpoints.get(size, ()):
            if root != self.frontier.root():
                return (f"seq ≤ {size}: the events' root differs from checkpoint #{checkpoint_id} "
                        f"signed at size {size}")
        return None

    def leaf(self, seq: int, leaf: bytes) -> str | None:
        assert seq == self.frontier.size + 1
        if seq == 1 and (problem := self._checkpoint_difference()):
            return problem
        for level, idx, h in self.frontier.append(leaf):
            rows = self._stored.get(level)
            if rows is None:  # once per level: opening the rows reads their first chunk
                rows = self._stored[level] = _Peekable(self._stored_level(level))
            stored = rows.peek()
            first, last = (idx << level) + 1, (idx + 1) << level
            if level < MERKLE_STORED_LEVEL_MIN and (stored is None or stored[0] != idx):
                continue  # not stored (a ledger written before only nodes of 2^8 leaves or more were)
            rows.next()
            if stored is None or stored[0] != idx:
                return f"seq {first}: tree node (level {level}, index {idx}, seqs {first}–{last}) is missing"
            if stored[1] != h:
                return (f"seq {first}: stored tree node (level {level}, index {idx}, seqs {first}–{last}) "
                        "differs from the one recomputed from the events")
        return self._checkpoint_difference()

    def finish(self) -> str | None:
        """After the last event: no node or checkpoint beyond it, and the stored root."""
        size = self.frontier.size
        if size == 0 and (problem := self._checkpoint_difference()):
            return problem
        beyond = self.store.query(
            "SELECT level, idx FROM peerledger_merkle_nodes WHERE platform = ? AND ((idx + 1) << level) > ? "
            "ORDER BY level, idx LIMIT 1",
            (self.platform, size),
        )
        if beyond:
            level, idx = int(beyond[0][0]), int(beyond[0][1])
            return (f"seq {size + 1}: a stored tree node (level {level}, index {idx}) covers seqs up to "
                    f"{(idx + 1) << level}, beyond the log's end: events removed?")
        later = [s for s in self._checkpoints if s > size]
        if later:
            return (f"seq {size + 1}: checkpoint #{self._checkpoints[min(later)][0][0]} was signed at size "
                    f"{min(later)}, beyond the log's end: events removed?")
        try:
            stored_root = StoredTree(self.store, self.platform).root(size)
        except TreeError as e:
            return str(e)
        if stored_root != self.frontier.root():
            return f"seq ≤ {size}: the root from the stored nodes differs from the recomputed root"
        return None


class _Peekable:
    """An iterator of stored (idx, hash) rows that can look one row ahead."""

    def __init__(self, rows: Iterator[tuple[int, bytes]]) -> None:
        self._rows = rows
        self._next: tuple[int, bytes] | None = next(rows, None)

    def peek(self) -> tuple[int, bytes] | None:
        return self._next

    def next(self) -> None:
        self._next = next(self._rows, None)


# -- checkpoints -----------------------------------------------------------------


def audit_ddl(d: Dialect) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_checkpoints ("
        f"checkpoint_id {d.serial_pk}, platform TEXT NOT NULL, size BIGINT NOT NULL, "
        "root TEXT NOT NULL, balances_digest TEXT NOT NULL, issued_at TEXT NOT NULL, "
        "key_id TEXT NOT NULL, signature TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS peerledger_checkpoints_platform "
        "ON peerledger_checkpoints (platform, checkpoint_id)",
        # AUDIT.md §5 (revision 1.1): a checkpoint's signed `liabilities` field
        # (canonical JSON) and the secret seed of its salts, and its trees
        # (`ledger.audit.liabilities`); checkpoints signed before have no rows.
        "CREATE TABLE IF NOT EXISTS peerledger_checkpoint_liabilities ("
        "checkpoint_id BIGINT PRIMARY KEY, liabilities TEXT NOT NULL, salt_seed TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS peerledger_liability_blocks (checkpoint_id BIGINT NOT NULL, "
        f"currency TEXT NOT NULL, first_salt TEXT NOT NULL, block BIGINT NOT NULL, leaves {d.blob} NOT NULL, "
        "PRIMARY KEY (checkpoint_id, currency, first_salt))",
        "CREATE TABLE IF NOT EXISTS peerledger_liability_nodes (checkpoint_id BIGINT NOT NULL, "
        f"currency TEXT NOT NULL, level INTEGER NOT NULL, idx BIGINT NOT NULL, hash {d.blob} NOT NULL, "
        f"total {d.big_int} NOT NULL, PRIMARY KEY (checkpoint_id, currency, level, idx)){d.clustered}",
    ]


# Bump when the statements change: existing databases then run them once more.
AUDIT_SCHEMA_VERSION = 3


def create_audit_tables(store: Store) -> None:
    store.ensure_schema("audit", AUDIT_SCHEMA_VERSION, audit_ddl(store.dialect))


CHECKPOINT_COLUMNS = ("platform", "size", "root", "balances_digest", "issued_at", "key_id", "signature")
_SELECT_CHECKPOINTS = (
    f"SELECT {', '.join('c.' + k for k in CHECKPOINT_COLUMNS)}, c.checkpoint_id, l.liabilities, l.salt_seed "
    "FROM peerledger_checkpoints c LEFT JOIN peerledger_checkpoint_liabilities l "
    "ON l.checkpoint_id = c.checkpoint_id WHERE c.platform = ?"
)


@dataclass(frozen=True)
class KeptCheckpoint:
    """A recorded checkpoint as signed, its row id, and the seed of its salts
    (None for a checkpoint signed before AUDIT.md revision 1.1)."""

    checkpoint: dict[str, Any]
    checkpoint_id: int
    salt_seed: bytes | None


def record_checkpoint(store: Store, checkpoint: dict[str, Any], salt_seed: bytes | None = None,
                      keep_trees: Callable[[Any, Dialect, int], None] | None = None) -> None:
    """Keep a signed checkpoint in one transaction, with the seed of its
    liabilities salts and its trees (`keep_trees(cursor, dialect, id)`) when it has them."""
    assert ("liabilities" in checkpoint) == (salt_seed is not None), "a seed goes with a liabilities field"
    with store.transaction(commit=True) as c:
        c.execute(
            store.dialect.sql(
                f"INSERT INTO peerledger_checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING checkpoint_id"
            ),
            tuple(checkpoint[k] for k in CHECKPOINT_COLUMNS),
        )
        [row] = c.fetchall()
        checkpoint_id = int(row["checkpoint_id"] if isinstance(row, dict) else row[0])
        if salt_seed is not None:
            c.execute(
                store.dialect.sql("INSERT INTO peerledger_checkpoint_liabilities (checkpoint_id, liabilities, "
                                  "salt_seed) VALUES (?, ?, ?)"),
                (checkpoint_id, canonical_json(checkpoint["liabilities"]).decode("utf-8"), salt_seed.hex()),
            )
        if keep_trees is not None:
            keep_trees(c, store.dialect, checkpoint_id)


def _kept(row: tuple[Any, ...]) -> KeptCheckpoint:
    checkpoint = {**dict(zip(CHECKPOINT_COLUMNS, row)), "size": int(row[1])}
    checkpoint_id, liabilities, seed = row[len(CHECKPOINT_COLUMNS):]
    if liabilities is None:
        return KeptCheckpoint(checkpoint, int(checkpoint_id), None)
    signature = checkpoint.pop("signature")  # as signed: the field goes before the signature
    checkpoint["liabilities"] = json.loads(liabilities)  # not orjson: a total may exceed 64 bits
    checkpoint["signature"] = signature
    return KeptCheckpoint(checkpoint, int(checkpoint_id), bytes.fromhex(seed))


def list_checkpoints(store: Store, platform: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` checkpoints of a platform, oldest first, as issued."""
    create_audit_tables(store)  # a ledger from before revision 1.1 gets the liabilities tables here
    rows = store.query(_SELECT_CHECKPOINTS + " ORDER BY c.checkpoint_id DESC LIMIT ?",
                       (platform, min(limit, CHECKPOINTS_LIST_MAX)))
    return [_kept(row).checkpoint for row in reversed(rows)]


def newest_checkpoint(store: Store, platform: str, size: int | None = None) -> KeptCheckpoint | None:
    """The newest checkpoint of `platform` (of tree size `size` when given), or None."""
    create_audit_tables(store)
    sql, params = _SELECT_CHECKPOINTS, [platform]
    if size is not None:
        sql, params = sql + " AND c.size = ?", [platform, size]
    rows = store.query(sql + " ORDER BY c.checkpoint_id DESC LIMIT 1", params)
    return _kept(rows[0]) if rows else None


# -- time travel -------------------------------------------------------------------
