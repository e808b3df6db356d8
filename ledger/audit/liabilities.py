"""Liabilities trees in the database (AUDIT.md §5): salts, leaf order, proofs.

Building.  A checkpoint's trees are built from the platform's balances after
its `size` events: the live read models when they are exactly there, else a
replay of the log into a scratch SQLite file (`ledger.storage.replay`).
Either way the rows are streamed, never held: a `BalanceSnapshot` writes
each prosumer row, with its salt, into a scratch table keyed by (currency,
salt), and that key *is* the leaf order, so a tree of a million leaves costs
a scratch file and O(log n) memory, not a sorted list.  The same pass
streams the balances digest.

Keeping.  The trees are kept with the checkpoint, so that a proof or an
export later needs neither the balances of that size (which, once the log
has moved on, only a replay of the whole log gives) nor a pass over every
leaf:

| table | a row per | holds |
|---|---|---|
| `peerledger_liability_blocks` | (checkpoint, currency, block of 256 leaves) | the block's first salt and its leaves' canonical bytes, one per line, zlib-compressed |
| `peerledger_liability_nodes` | (checkpoint, currency, complete subtree of 256 leaves or more) | its hash and sum |

A proof reads the block whose first salt is the greatest ≤ the prosumer's
salt (one index lookup; the salt is recomputed from the seed), finds the leaf
in it, folds the siblings below 256 leaves from the blocks they lie in (the
leaf's own and, at the right edge, the last) and fetches the larger ones by
key: a few lookups whatever the number of prosumers.  An export streams the
blocks in order.  Storage is about the compressed leaves, some 60 bytes per
prosumer per checkpoint (`bench/liabilities_bench.py`).

Salts.  Each checkpoint draws one random 32-byte seed (`os.urandom`) and
keeps it beside the checkpoint; the salt of (currency, account) is
HMAC-SHA256(seed, [currency, account]) (`projections.liabilities.salt_of`),
so one row keeps every salt, and the seed never leaves the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterator
from typing import Any

from ledger.audit.tree import StoredTree, create_audit_tables, newest_checkpoint
from ledger.storage.dialect import POSTGRES, Dialect
from ledger.storage.queries import NotFound, log_head
from ledger.storage.replay import replayed, scratch_store
from ledger.storage.state import streamed_balances
from ledger.storage.store import Store
from ledger.storage.views import views_seq
from projections.balances import balance_row, balances_digest
from projections.liabilities import (
    Node,
    SumFrontier,
    TreeSummary,
    fold_nodes,
    fold_path,
    is_prosumer,
    leaf_bytes,
    leaf_node,
    leaf_object,
    path_ranges,
    salt_of,
)
from projections.merkle import perfect_parts

SEED_BYTES = 32
# Leaves written to, and read from, the scratch table at a time.
LEAF_PAGE_ROWS = 10_000
# A stored block is the perfect subtree of 2^BLOCK_LEVEL leaves; nodes of
# that level and above are stored, smaller ones are folded from a block.
BLOCK_LEVEL = 8
BLOCK_LEAVES = 1 << BLOCK_LEVEL
# Bookings rows read at a time for a proof with bookings.
BOOKINGS_PAGE_ROWS = 5_000
# Stored rows copied, or read for an export, at a time.
STORED_PAGE_ROWS = 200


class LiabilitiesMismatch(Exception):
    """A tree rebuilt from the stored leaves (or a proof folded from them)
    differs from the one the checkpoint signed: the stored rows were changed."""


def new_seed() -> bytes:
    return os.urandom(SEED_BYTES)


class BalanceSnapshot:
    """The balances of one platform after `size` events, as liabilities leaves
    in leaf order (table `liability_leaves` of a scratch SQLite file), their
    digest (EVENTS.md §5), and, once `build` ran, the rows that keep the trees."""

    def __init__(self, scratch: Store, platform: str, size: int, seed: bytes, digest: str) -> None:
        self.scratch = scratch
        self.platform = platform
        self.size = size
        self.seed = seed
        self.digest = digest

    def currencies(self) -> list[str]:
        """Every currency with a prosumer row, in code point order."""
        rows = self.scratch.query("SELECT DISTINCT currency FROM liability_leaves ORDER BY currency")
        return [currency for (currency,) in rows]

    def leaves(self, currency: str) -> Iterator[dict[str, Any]]:
        """The leaf objects of `currency`'s tree in leaf order (by salt)."""
        with self.scratch.transaction(commit=False) as c:
            raw = c.sqlite_cursor
            raw.execute("SELECT account, balance, salt FROM liability_leaves WHERE currency = ? ORDER BY salt",
                        (currency,))
            while page := raw.fetchmany(LEAF_PAGE_ROWS):
                for account, balance, salt in page:
                    yield leaf_object(account, int(balance), currency, salt, self.size)

    def build(self) -> dict[str, TreeSummary]:
        """Every currency's tree (the checkpoint's field, keys in code point
        order), its blocks and nodes written to the scratch file to be kept."""
        with self.scratch.write_transaction() as c:
            c.execute("CREATE TABLE kept_blocks (currency TEXT NOT NULL, first_salt TEXT NOT NULL, "
                      "block INTEGER NOT NULL, leaves BLOB NOT NULL, PRIMARY KEY (currency, first_salt))")
            c.execute("CREATE TABLE kept_nodes (currency TEXT NOT NULL, level INTEGER NOT NULL, idx INTEGER NOT NULL, "
                      "hash BLOB NOT NULL, total TEXT NOT NULL, PRIMARY KEY (currency, level, idx))")
        return {currency: self._build(currency) for currency in self.currencies()}

    def _build(self, currency: str) -> TreeSummary:
        frontier = SumFrontier(BLOCK_LEVEL)
        block: list[bytes] = []
        blocks: list[tuple[str, str, int, bytes]] = []
        first_salt = ""
        for leaf in self.leaves(currency):
            if not block:
                first_salt = leaf["salt"]
            line = leaf_bytes(leaf)
            block.append(line)
            frontier.append(leaf_node(leaf))
            if len(block) == BLOCK_LEAVES:
                blocks.append((currency, first_salt, frontier.size // BLOCK_LEAVES - 1, _pack(block)))
                block = []
            if len(blocks) >= STORED_PAGE_ROWS:
                self._keep(blocks, frontier, currency)
        if block:
            blocks.append((currency, first_salt, frontier.size // BLOCK_LEAVES, _pack(block)))
        self._keep(blocks, frontier, currency)
        return frontier.summary()

    def _keep(self, blocks: list[tuple[str, str, int, bytes]], frontier: SumFrontier, currency: str) -> None:
        nodes = [(currency, level, idx, node.hash, str(node.sum)) for level, idx, node in frontier.completed]
        with self.scratch.write_transaction() as c:
            c.executemany("INSERT INTO kept_blocks (currency, first_salt, block, leaves) VALUES (?, ?, ?, ?)", blocks)
            c.executemany("INSERT INTO kept_nodes (currency, level, idx, hash, total) VALUES (?, ?, ?, ?, ?)", nodes)
        blocks.clear()
        frontier.completed.clear()

    def keep(self, c: Any, d: Dialect, checkpoint_id: int) -> None:
        """Copy the built blocks and nodes to the ledger under `checkpoint_id`,
        with cursor `c` of the transaction that records the checkpoint."""
        for table, columns in (("blocks", "currency, first_salt, block, leaves"),
                               ("nodes", "currency, level, idx, hash, total")):
            marks = ", ".join("?" * (1 + columns.count(",") + 1))
            insert = d.sql(f"INSERT INTO peerledger_liability_{table} (checkpoint_id, {columns}) VALUES ({marks})")
            with self.scratch.transaction(commit=False) as read:
                raw = read.sqlite_cursor
                raw.execute(f"SELECT {columns} FROM kept_{table}")
                while page := raw.fetchmany(STORED_PAGE_ROWS):
                    if table == "nodes" and d is POSTGRES:  # NUMERIC takes the integer, TEXT its decimal
                        page = [(*row[:-1], int(row[-1])) for row in page]
                    c.executemany(insert, [(checkpoint_id, *row) for row in page])


def _pack(lines: list[bytes]) -> bytes:
    return zlib.compress(b"\n".join(lines), 6)


def _unpack(data: bytes) -> list[bytes]:
    return zlib.decompress(bytes(data)).split(b"\n")


def stored_trees(store: Store, platform: str, size: int | None) -> StoredTrees:
    """The kept trees of the newest checkpoint of `platform` (of `size` when
    given); NotFound for a platform without one, or one signed before AUDIT.md
    revision 1.1 (it has no trees)."""
    log_head(store, platform)
    create_audit_tables(store)
    kept = newest_checkpoint(store, platform, size)
    at = "" if size is None else f" at size {size}"
    if kept is None:
        raise NotFound(f"platform {platform!r} has no checkpoint{at}; sign one with `peerledger checkpoint`")
    if kept.salt_seed is None:
        raise NotFound(f"the newest checkpoint of {platform!r}{at} was signed before AUDIT.md revision 1.1 and has no "
                       "liabilities trees; sign a new one with `peerledger checkpoint`")
    return StoredTrees(store, kept.checkpoint_id, kept.checkpoint, kept.salt_seed)


class StoredTrees:
    """The kept trees of one checkpoint: proofs and exports from its rows."""

    def __init__(self, store: Store, checkpoint_id: int, checkpoint: dict[str, Any], seed: bytes) -> None:
        self.store = store
        self.checkpoint_id = checkpoint_id
        self.checkpoint = checkpoint
        self.seed = seed

    def _block_at(self, currency: str, salt: str) -> tuple[int, list[dict[str, Any]]] | None:
        rows = self.store.query(
            "SELECT block, leaves FROM peerledger_liability_blocks WHERE checkpoint_id = ? AND currency = ? "
            "AND first_salt <= ? ORDER BY first_salt DESC LIMIT 1", (self.checkpoint_id, currency, salt))
        if not rows:
            return None
        return int(rows[0][0]), [json.loads(line) for line in _unpack(rows[0][1])]

    def _block(self, currency: str, block: int) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT leaves FROM peerledger_liability_blocks WHERE checkpoint_id = ? AND currency = ? AND block = ?",
            (self.checkpoint_id, currency, block))
        assert rows, f"block {block} of the {currency} tree of checkpoint #{self.checkpoint_id} is missing"
        return [json.loads(line) for line in _unpack(rows[0][0])]

    def proofs(self, account: str, with_bookings: bool = False) -> list[dict[str, Any]]:
        """The account's proof entries (AUDIT.md §5), one per currency in which
        it has a row, each folded to the signed root before it is given; with
        `with_bookings`, each entry also lists the account's bookings in that
        currency (`bookings`)."""
        out = []
        bookings = self._bookings(account) if with_bookings else {}
        for currency, signed in self.checkpoint["liabilities"].items():
            salt = salt_of(self.seed, currency, account)
            found = self._block_at(currency, salt)
            if found is None:
                continue
            block, leaves = found
            position = next((i for i, leaf in enumerate(leaves) if leaf["salt"] == salt), None)
            if position is None:
                continue
            leaf = leaves[position]
            assert leaf["account"] == account, "two accounts with one salt: HMAC-SHA256 collided"
            index, count = block * BLOCK_LEAVES + position, signed["accounts"]
            path = self._path(currency, index, count, {block: leaves})
            root = fold_path(leaf_node(leaf), index, count, path)
            if root is None or (root.hash.hex(), root.sum) != (signed["root"], signed["total"]):
                raise LiabilitiesMismatch(f"the stored {currency} tree of checkpoint #{self.checkpoint_id} does not "
                                          f"fold to the signed root for {account!r}")
            entry: dict[str, Any] = {"leaf": leaf, "index": index, "leaves": count,
                                     "path": [{"hash": n.hash.hex(), "sum": n.sum} for n in path]}
            if with_bookings:
                entry["bookings"] = bookings.get(currency, [])
                booked = sum(b["amount"] if b["column"] != "paid" else -b["amount"] for b in entry["bookings"])
                assert booked == leaf["balance"], f"{account}'s {currency} bookings add up to {booked}, not its balance"
            out.append(entry)
        return out

    def _bookings(self, account: str) -> dict[str, list[dict[str, Any]]]:
        """The account's bookings up to the checkpoint's size, per currency in
        seq order, each with its event and the event's RFC 9162 inclusion
        proof at that size (AUDIT.md §2).

        The ledger keeps bookings by seq, not by account, so this reads every
        bookings row up to the size, a page at a time: the cost of a prosumer
        asking for their whole history is that of the log's bookings."""
        platform, size = self.checkpoint["platform"], self.checkpoint["size"]
        needle = f"[{json.dumps(account, ensure_ascii=False)},".encode()
        found: list[tuple[int, str, str, int]] = []
        last = 0
        while rows := self.store.query(
                "SELECT seq, col, currency, entries FROM peerledger_bookings WHERE platform = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?", (platform, last, size, BOOKINGS_PAGE_ROWS)):
            for seq, column, currency, entries in rows:
                last = int(seq)
                if needle in entries.encode():
                    for booked, units in json.loads(entries):
                        if booked == account:
                            found.append((int(seq), column, currency, int(units)))
        tree = StoredTree(self.store, platform)
        out: dict[str, list[dict[str, Any]]] = {}
        for seq, column, currency, units in found:
            [event] = self.store.read_log(platform, after_seq=seq - 1, upto_seq=seq)
            leaf, path = tree.inclusion(seq, size)
            out.setdefault(currency, []).append({
                "seq": seq, "column": column, "amount": units, "event": json.loads(event.state),
                "inclusion": {"leaf_hash": leaf.hex(), "path": [h.hex() for h in path]}})
        return out

    def _path(self, currency: str, index: int, count: int, blocks: dict[int, list[dict[str, Any]]]) -> list[Node]:
        ranges = path_ranges(index, count)
        stored = sorted({key for start, end in ranges for key in perfect_parts(start, end) if key[0] >= BLOCK_LEVEL})
        nodes = self._nodes(currency, stored)
        path = []
        for start, end in ranges:
            parts = []
            for level, idx in perfect_parts(start, end):
                if level >= BLOCK_LEVEL:
                    parts.append(nodes[(level, idx)])
                    continue
                first = idx << level
                block = first // BLOCK_LEAVES
                if block not in blocks:
                    blocks[block] = self._block(currency, block)
                offset = first - block * BLOCK_LEAVES
                frontier = SumFrontier()
                for leaf in blocks[block][offset:offset + (1 << level)]:
                    frontier.append(leaf_node(leaf))
                parts.append(frontier.root())
            path.append(fold_nodes(parts))
        return path

    def _nodes(self, currency: str, keys: list[tuple[int, int]]) -> dict[tuple[int, int], Node]:
        if not keys:
            return {}
        pairs = " OR ".join("(level = ? AND idx = ?)" for _ in keys)
        rows = self.store.query(
            f"SELECT level, idx, hash, total FROM peerledger_liability_nodes WHERE checkpoint_id = ? AND currency = ? "
            f"AND ({pairs})", (self.checkpoint_id, currency, *[x for key in keys for x in key]))
        found = {(int(level), int(idx)): Node(bytes(h), int(total)) for level, idx, h, total in rows}
        missing = [key for key in keys if key not in found]
        assert not missing, f"nodes {missing} of the {currency} tree of checkpoint #{self.checkpoint_id} are missing"
        return found

    def lines(self, currency: str) -> Iterator[bytes]:
        """The leaves' canonical bytes in leaf order, a page of blocks at a time."""
        last = ""
        while True:
            rows = self.store.query(
                "SELECT first_salt, leaves FROM peerledger_liability_blocks WHERE checkpoint_id = ? AND currency = ? "
                "AND first_salt > ? ORDER BY first_salt LIMIT ?", (self.checkpoint_id, currency, last, STORED_PAGE_ROWS))
            if not rows:
                return
            for first_salt, data in rows:
                yield from _unpack(data)
                last = first_salt

    def check(self, currency: str) -> None:
        """Raise LiabilitiesMismatch unless the stored leaves rebuild the signed tree."""
        frontier = SumFrontier()
        for line in self.lines(currency):
            frontier.append(leaf_node(json.loads(line)))
        signed = self.checkpoint["liabilities"][currency]
        if frontier.summary().as_json() != signed:
            raise LiabilitiesMismatch(f"the stored leaves of the {currency} tree of checkpoint #{self.checkpoint_id} "
                                      f"make {frontier.summary().as_json()}; the checkpoint signed {signed}")


@contextlib.contextmanager
def balance_snapshot(store: Store, platform: str, size: int, seed: bytes) -> Iterator[BalanceSnapshot]:
    """The snapshot of `platform` after `size` events (module doc)."""
    with scratch_store() as scratch:
        _create_leaves(scratch)
        digest = _from_read_models(store, scratch, platform, size, seed)
        if digest is None:
            with scratch.write_transaction() as c:
                c.execute("DELETE FROM liability_leaves")
            # The replay has a scratch file of its own: its rows are read
            # while the leaves are written.
            with replayed(store, platform, size) as replay, replay.target.transaction(commit=False) as c:
                digest = _load(scratch, streamed_balances(c, replay.target.dialect, platform), seed)
        yield BalanceSnapshot(scratch, platform, size, seed, digest)


def _create_leaves(scratch: Store) -> None:
    with scratch.write_transaction() as c:
        c.execute("CREATE TABLE liability_leaves (currency TEXT NOT NULL, salt TEXT NOT NULL, account TEXT NOT NULL, "
                  "balance TEXT NOT NULL, PRIMARY KEY (currency, salt)) WITHOUT ROWID")


def _from_read_models(store: Store, scratch: Store, platform: str, size: int, seed: bytes) -> str | None:
    """The digest, with the leaves loaded, when the read models are at `size`;
    None when they are not (or moved on while they were read)."""
    if views_seq(store, platform) != size:
        return None
    with store.transaction(commit=False) as c:
        digest = _load(scratch, streamed_balances(c, store.dialect, platform), seed)
    # The head only grows and commits with the rows, and the rows were read by
    # one statement after the first look: unchanged now means they were `size`'s.
    return digest if views_seq(store, platform) == size else None


def _load(scratch: Store, rows: Any, seed: bytes) -> str:
    """Write the prosumer rows as leaves (with their salts) and return the digest of all rows."""
    page: list[tuple[str, str, str, str]] = []

    def digest_rows() -> Iterator[dict[str, object]]:
        for account, currency, f in rows:
            if is_prosumer(account):
                page.append((currency, salt_of(seed, currency, account), account, str(f.balance)))
                if len(page) >= LEAF_PAGE_ROWS:
                    _write_leaves(scratch, page)
            yield balance_row(account, currency, f)

    digest = balances_digest(digest_rows())
    _write_leaves(scratch, page)
    return digest


def _write_leaves(scratch: Store, page: list[tuple[str, str, str, str]]) -> None:
    with scratch.write_transaction() as c:
        c.executemany("INSERT INTO liability_leaves (currency, salt, account, balance) VALUES (?, ?, ?, ?)", page)
    page.clear()

