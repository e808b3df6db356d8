"""Liabilities trees and prosumer balance proofs (AUDIT.md §5): pure functions.

A liabilities tree is a Merkle *sum* tree over one currency's prosumer
balances at a checkpoint.  Each node carries a hash and a sum; the sum of a
leaf is max(balance, 0) and an interior node's is its children's total, so
the root's sum is what the platform owes its prosumers in that currency.
The tree has the shape of the log's tree (RFC 9162, `projections.merkle`):
the same `inclusion_ranges` name a leaf's siblings, and the same fold
verifies a path, with sums carried beside the hashes.

Why both children's sums go into a node's hash, not only their total: with
the total alone, a ledger could move value between two siblings (report
−5 and +5 as 0 and 0) and still fold to the signed root.  Hashing [L.sum,
R.sum] pins every subtree's sum, and non-negative sums on a path stop the
ledger from hiding a balance behind a negative one.

Worked example (one currency, two prosumers, salts "aa…" < "bb…"):
leaf 0 = bob 120, leaf 1 = carol −7.  Sums 120 and 0; the root's hash is
SHA-256(0x03 || h(leaf 0) || h(leaf 1) || b"[120,0]") and its sum 120:
carol's debt is not a liability and is not netted against bob's credit.

`SumFrontier` builds a tree from leaves in leaf order in O(log n) memory
(one (hash, sum) per set bit of the count) and lists the large subtrees it
completes, which a checkpoint keeps; `fold_path` is the verifier's half.
Nothing here reads a database or a clock: the shell
(`ledger.audit.liabilities`) draws the salts and orders the leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from projections.balances import canonical_json

# The json module's string encoder (C), as `canonical_json` uses it: quotes,
# escapes, non-ASCII left raw.
_string = json.encoder.encode_basestring  # type: ignore[attr-defined]
from projections.merkle import EMPTY_ROOT, HASH_BYTES, LeafRange, inclusion_ranges

LEAF_PREFIX = b"\x02"
NODE_PREFIX = b"\x03"
SALT_HEX_CHARS = 64
SALT_RE = re.compile(r"^[0-9a-f]{64}$")
SYSTEM_ACCOUNT_PREFIX = "@"
LEAF_FIELDS = ("account", "balance", "currency", "salt", "size")


@dataclass(frozen=True, slots=True)
class Node:
    """A subtree: its hash (raw 32 bytes) and the sum of its leaves."""

    hash: bytes
    sum: int


EMPTY_TREE = Node(EMPTY_ROOT, 0)


@dataclass(frozen=True, slots=True)
class TreeSummary:
    """What a checkpoint signs of one currency's tree (AUDIT.md §5)."""

    root: bytes
    total: int
    accounts: int

    def as_json(self) -> dict[str, Any]:
        return {"root": self.root.hex(), "total": self.total, "accounts": self.accounts}


def is_prosumer(account: str) -> bool:
    """A prosumer account: every account of EVENTS.md §5 not starting with `@`."""
    return not account.startswith(SYSTEM_ACCOUNT_PREFIX)


def salt_of(seed: bytes, currency: str, account: str) -> str:
    """The salt of (checkpoint, currency, account), as 64 hex characters.

    HMAC-SHA256 under the checkpoint's random 32-byte seed is a pseudo-random
    function: without the seed, a salt is indistinguishable from one drawn
    at random, and keeping the seed keeps every salt (asking again for a
    proof gives the same leaf) in one row instead of one per account.  The
    message is canonical JSON, so no two (currency, account) pairs collide.
    """
    assert len(seed) == HASH_BYTES, "a checkpoint's salt seed is 32 bytes"
    message = f"[{_string(currency)},{_string(account)}]".encode()  # canonical JSON of [currency, account]
    return hmac.digest(seed, message, "sha256").hex()


def leaf_object(account: str, balance: int, currency: str, salt: str, size: int) -> dict[str, Any]:
    return {"account": account, "balance": balance, "currency": currency, "salt": salt, "size": size}


def leaf_bytes(leaf: dict[str, Any]) -> bytes:
    """The canonical bytes of a leaf object (EVENTS.md §5 serialisation).

    Formatted directly, a million times faster to say than `canonical_json`
    and equal to it for a leaf of the right types (the tests compare them):
    keys in sorted order, integers in decimal, strings escaped by the json
    module's own encoder, non-ASCII kept raw."""
    if not (type(leaf["balance"]) is int and type(leaf["size"]) is int and isinstance(leaf["account"], str)
            and isinstance(leaf["currency"], str) and isinstance(leaf["salt"], str) and len(leaf) == 5):
        return canonical_json(leaf)
    return (f'{{"account":{_string(leaf["account"])},"balance":{leaf["balance"]},'
            f'"currency":{_string(leaf["currency"])},"salt":{_string(leaf["salt"])},"size":{leaf["size"]}}}').encode()


def leaf_node(leaf: dict[str, Any]) -> Node:
    """Leaf hash = SHA-256(0x02 || canonical leaf), leaf sum = max(balance, 0)."""
    return Node(hashlib.sha256(LEAF_PREFIX + leaf_bytes(leaf)).digest(), max(leaf["balance"], 0))


def combine(left: Node, right: Node) -> Node:
    """SHA-256(0x03 || L.hash || R.hash || canonical [L.sum, R.sum]), sum L + R."""
    sums = f"[{left.sum},{right.sum}]".encode()  # canonical JSON of two integers
    return Node(hashlib.sha256(NODE_PREFIX + left.hash + right.hash + sums).digest(), left.sum + right.sum)


def fold_nodes(parts: Sequence[Node]) -> Node:
    """The tree of consecutive perfect subtrees (largest first), nested to the
    right as RFC 9162 splits: p0 ⊕ (p1 ⊕ (p2 ⊕ …))."""
    node = parts[-1]
    for left in reversed(parts[:-1]):
        node = combine(left, node)
    return node


class SumFrontier:
    """The right edge of a growing sum tree, keeping the subtrees it was asked for.

    `append` costs O(1) amortised combines; with `store_level`, every
    completed subtree of that level or above is listed in `completed`
    (level, idx, node), for a writer to store and drain.
    """

    __slots__ = ("size", "_edge", "_store_level", "completed")

    def __init__(self, store_level: int | None = None) -> None:
        self.size = 0
        self._edge: list[Node] = []  # largest subtree first
        self._store_level = store_level
        self.completed: list[tuple[int, int, Node]] = []

    def append(self, leaf: Node) -> None:
        node, level, idx, carry = leaf, 0, self.size, self.size
        while carry & 1:  # as binary addition: a subtree of this level waits on the edge
            node = combine(self._edge.pop(), node)
            level, idx, carry = level + 1, idx >> 1, carry >> 1
            if self._store_level is not None and level >= self._store_level:
                self.completed.append((level, idx, node))
        self._edge.append(node)
        self.size += 1

    def root(self) -> Node:
        return fold_nodes(self._edge) if self._edge else EMPTY_TREE

    def summary(self) -> TreeSummary:
        root = self.root()
        return TreeSummary(root.hash, root.sum, self.size)


def path_ranges(index: int, leaves: int) -> list[LeafRange]:
    """The leaf ranges of a leaf's siblings, from the leaf up (RFC 9162 §2.1.3.1)."""
    return inclusion_ranges(index, leaves)


def fold_path(leaf: Node, index: int, leaves: int, path: Iterable[Node]) -> Node | None:
    """RFC 9162 §2.1.3.2 with sums: the root a path leads to, or None when the
    path has the wrong length for (index, leaves)."""
    if not 0 <= index < leaves:
        return None
    fn, sn, node = index, leaves - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:  # the sibling is on the left
            node = combine(sibling, node)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = combine(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    return node if sn == 0 else None


