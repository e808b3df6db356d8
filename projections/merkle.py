"""The Merkle tree of a platform's log: RFC 9162 §2.1 with SHA-256 (AUDIT.md §1–2).

Pure functions, no I/O.  The ledger stores the tree as the hashes of its
*perfect aligned subtrees*: node (level k, idx i) is the tree hash of the
2^k leaves [i·2^k, (i+1)·2^k).  Level 0 is the leaves themselves.  Every
hash the RFC asks for (a root, an element of a proof) is the tree hash of a
range [start, end) that the RFC's recursion produces, and such a range is
always the concatenation of at most log2(n) + 1 perfect aligned subtrees:
the RFC splits a range of n leaves at k, the largest power of two smaller
than n, so the left part [start, start + k) is perfect and aligned and the
right part recurses.  Hence:

* `perfect_parts(start, end)` names the stored nodes a range is made of,
* `range_hash(start, end, get)` folds them (right to left) into its hash,
* `inclusion_ranges` / `consistency_ranges` name the ranges of a proof,

and a caller fetches the O(log n) nodes it needs in one round trip (the
keys are known before any hash is), then folds.  `Frontier` is the other
half: it appends leaves and reports the perfect subtrees each leaf
completes, so a writer stores every node exactly once, about one per leaf.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

HASH_BYTES = 32
# RFC 9162 §2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, idx): the perfect aligned subtree of leaves [idx·2^level, (idx+1)·2^level).
NodeKey = tuple[int, int]
# [start, end): a range of leaf indexes (0-based; leaf i is the event at seq i + 1).
LeafRange = tuple[int, int]


def leaf_hash(canonical: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || canonical event bytes)."""
    return hashlib.sha256(b"\x00" + canonical).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(size: int) -> int:
    """k of RFC 9162 §2.1.1: the largest power of two smaller than `size` (> 1)."""
    assert size > 1
    return 1 << ((size - 1).bit_length() - 1)


def perfect_parts(start: int, end: int) -> list[NodeKey]:
    """The perfect aligned subtrees, left to right, whose fold is MTH(D[start:end]).

    Valid for the ranges the RFC's recursion produces (start is a multiple
    of the largest power of two ≤ end − start): each step takes the largest
    power of two that fits, which is exactly the RFC's left part.
    """
    parts: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        assert start % (1 << level) == 0, f"[{start}, {end}) is not an RFC 9162 subrange"
        parts.append((level, start >> level))
        start += 1 << level
    return parts


def subtree_hash(leaves: Sequence[bytes]) -> bytes:
    """The hash of a perfect subtree from its 2^k leaf hashes, level by level."""
    assert leaves and len(leaves) & (len(leaves) - 1) == 0, "a perfect subtree has 2^k leaves"
    level = list(leaves)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def fold_parts(hashes: Sequence[bytes]) -> bytes:
    """The tree hash of consecutive perfect subtrees (largest first): the RFC
    nests them to the right, h0 ⊕ (h1 ⊕ (h2 ⊕ …))."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def range_hash(start: int, end: int, get: Callable[[int, int], bytes]) -> bytes:
    """MTH(D[start:end]) from the stored perfect subtrees; `get(level, idx)`."""
    return fold_parts([get(level, idx) for level, idx in perfect_parts(start, end)])


def root_hash(size: int, get: Callable[[int, int], bytes]) -> bytes:
    """The tree hash of the first `size` leaves."""
    return range_hash(0, size, get) if size else EMPTY_ROOT


def inclusion_ranges(index: int, size: int) -> list[LeafRange]:
    """The ranges whose hashes form PATH(index, D[size]) (RFC 9162 §2.1.3.1),
    in proof order: the leaf's sibling first, the root's other child last."""
    assert 0 <= index < size
    siblings: list[LeafRange] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            siblings.append((start + k, end))
            end = start + k
        else:
            siblings.append((start, start + k))
            start += k
    return siblings[::-1]


def consistency_ranges(first: int, second: int) -> list[LeafRange]:
    """The ranges whose hashes form PROOF(first, D[second]) (RFC 9162 §2.1.4.1).

    SUBPROOF(m, D[start:end], b) walked top-down; each step's hash goes
    after the deeper steps', so the list is reversed at the end.
    """
    assert 1 <= first <= second
    path: list[LeafRange] = []
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        path.append((start, end))
    return path[::-1]


def nodes_of(ranges: Iterable[LeafRange]) -> list[NodeKey]:
    """Every stored node the hashes of `ranges` need (no duplicates, sorted)."""
    return sorted({key for start, end in ranges for key in perfect_parts(start, end)})


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step; equal sizes need an empty path and equal roots."""
    if not 1 <= first <= second:
        return False
    if first == second:
        return not path and first_root == second_root
    if not path:
        return False
    proof = list(path)
    if first & (first - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


class Frontier:
    """The right edge of a growing tree: one perfect subtree per set bit of `size`.

    `append` costs O(1) amortised hashes and returns the nodes (level ≥ 1)
    the new leaf completes, which a writer stores; `root` folds the edge in
    O(log n).  Nodes complete in index order within each level.
    """

    __slots__ = ("size", "_edge")

    def __init__(self) -> None:
        self.size = 0
        self._edge: list[bytes] = []  # largest subtree first

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        completed: list[tuple[int, int, bytes]] = []
        h, level, idx, carry = leaf, 0, self.size, self.size
        while carry & 1:  # a subtree of this level is waiting: merge, like binary addition
            h = node_hash(self._edge.pop(), h)
            level, idx, carry = level + 1, idx >> 1, carry >> 1
            completed.append((level, idx, h))
        self._edge.append(h)
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold_parts(self._edge) if self._edge else EMPTY_ROOT

    def copy(self) -> Frontier:
        return Frontier.restore(self.size, self.edge())

    def edge(self) -> bytes:
        """The right edge as bytes (one hash per set bit of `size`, largest
        subtree first): all a writer needs to keep to go on appending."""
        return b"".join(self._edge)

    @classmethod
    def restore(cls, size: int, edge: bytes) -> Frontier:
        """The frontier of a tree of `size` leaves from its stored `edge`."""
        assert len(edge) == HASH_BYTES * size.bit_count(), "edge does not match the tree size"
        f = cls()
        f.size = size
        f._edge = [edge[i:i + HASH_BYTES] for i in range(0, len(edge), HASH_BYTES)]
        return f
