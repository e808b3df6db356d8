"""Liabilities trees in the database (AUDIT.md §5): salts, leaf order, proofs.

A checkpoint's trees are built from the platform's balances after its
`size` events: the live read models when they are exactly there, else a
replay of the log into a scratch SQLite file (`ledger.storage.replay`).
Either way the rows are streamed, never held: a `BalanceSnapshot` writes
each prosumer row, with its salt, into a scratch table keyed by (currency,
salt), and that table's primary key *is* the leaf order, so a tree of a
million leaves costs a scratch file and O(log n) memory, not a sorted list.
The same pass streams the balances digest.

Salts.  Each checkpoint draws one random 32-byte seed (`os.urandom`) and
keeps it beside the checkpoint; the salt of (currency, account) is
HMAC-SHA256(seed, [currency, account]) (`projections.liabilities.salt_of`).
Keeping one seed keeps every salt, so a proof asked for twice shows the
same leaf; the seed never leaves the database (a proof shows one salt,
from which no other can be derived).

Cost model.  Building the trees, an export and a proof each stream the
balances at `size` once (a replay when `size` is not the read models'
seq) and hash every leaf once: O(accounts) time, bounded memory.  A proof
is therefore a pass over its currency's leaves, not a lookup; the
closing note of the feature says what storing the upper levels would buy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ledger.storage.replay import replayed, scratch_store
from ledger.storage.state import streamed_balances
from ledger.storage.store import Store
from ledger.storage.views import views_seq
from projections.balances import balance_row, balances_digest
from projections.liabilities import (
    SumFrontier,
    TreeSummary,
    is_prosumer,
    leaf_node,
    leaf_object,
    path_of,
    salt_of,
    wanted_nodes,
)

SEED_BYTES = 32
# Leaves written to, and read from, the scratch table at a time.
LEAF_PAGE_ROWS = 10_000


class LiabilitiesMismatch(Exception):
    """The tree rebuilt from the balances differs from the one the checkpoint
    signed: the balances at that size are not the ones that were signed."""


def new_seed() -> bytes:
    return os.urandom(SEED_BYTES)


class BalanceSnapshot:
    """The balances of one platform after `size` events, as liabilities leaves
    in leaf order (table `liability_leaves` of a scratch SQLite file), and
    their digest (EVENTS.md §5)."""

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

    def tree(self, currency: str, wanted: set[tuple[int, int]] = frozenset()) -> SumFrontier:  # type: ignore[assignment]
        frontier = SumFrontier(wanted)
        for leaf in self.leaves(currency):
            frontier.append(leaf_node(leaf))
        return frontier

    def trees(self) -> dict[str, TreeSummary]:
        """One summary per currency, keys in code point order (the checkpoint's field)."""
        return {currency: self.tree(currency).summary() for currency in self.currencies()}

    def proofs(self, account: str, signed: dict[str, Any]) -> list[dict[str, Any]]:
        """The account's proof entries (AUDIT.md §5), one per currency in which
        it has a row, against the checkpoint's `liabilities` field `signed`."""
        out = []
        for currency in self.currencies():
            salt = salt_of(self.seed, currency, account)
            rows = self.scratch.query("SELECT account, balance FROM liability_leaves WHERE currency = ? AND salt = ?",
                                      (currency, salt))
            if not rows:
                continue
            assert rows[0][0] == account, "two accounts with one salt: HMAC-SHA256 collided"
            [(index,)] = self.scratch.query(
                "SELECT COUNT(*) FROM liability_leaves WHERE currency = ? AND salt < ?", (currency, salt))
            summary = _expect(signed, currency)
            frontier = self.tree(currency, wanted_nodes(index, summary.accounts))
            if frontier.summary() != summary:
                raise LiabilitiesMismatch(
                    f"the {currency} tree rebuilt at size {self.size} is {frontier.summary().as_json()}, the "
                    f"checkpoint signed {summary.as_json()}")
            leaf = leaf_object(account, int(rows[0][1]), currency, salt, self.size)
            out.append({"leaf": leaf, "index": index, "leaves": summary.accounts,
                        "path": path_of(index, summary.accounts, frontier.kept)})
        return out


def _expect(signed: dict[str, Any], currency: str) -> TreeSummary:
    entry = signed.get(currency)
    if entry is None:
        raise LiabilitiesMismatch(f"the balances at this size have {currency} rows; the checkpoint signed no "
                                  f"{currency} tree")
    return TreeSummary(bytes.fromhex(entry["root"]), entry["total"], entry["accounts"])


def check_signed(snapshot: BalanceSnapshot, signed: dict[str, Any]) -> None:
    """Raise LiabilitiesMismatch unless the snapshot's trees are the signed ones."""
    rebuilt = {currency: summary.as_json() for currency, summary in snapshot.trees().items()}
    if rebuilt != signed:
        raise LiabilitiesMismatch(f"the trees rebuilt at size {snapshot.size} are {rebuilt}, the checkpoint "
                                  f"signed {signed}")


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

