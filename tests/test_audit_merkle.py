"""RFC 9162 §2.1: roots and proofs of the stored tree, checked by a verifier
written here from the RFC's text, independent of `projections.merkle`.

Small sizes: every size up to 300, every seq and every (first, second)
pair up to 64 and a sample above.  Large sizes: logs of up to 100 000
leaves whose leaf hashes and nodes are written through the tree layer
(`Frontier`) into a real SQLite store, and read back by `StoredTree`.
"""

from __future__ import annotations

import functools
import hashlib
import random

import pytest

from ledger.audit.tree import StoredTree, TreeError
from ledger.storage.store import MERKLE_STORED_LEVEL_MIN, Store
from projections.merkle import (
    Frontier,
    consistency_ranges,
    inclusion_ranges,
    nodes_of,
    range_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# -- the reference: RFC 9162 transcribed, sharing no code with the ledger -------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    """§2.1.1 MTH over already leaf-hashed entries."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_verify_inclusion(leaf_index: int, tree_size: int, path: list[bytes], leaf: bytes, root: bytes) -> bool:
    """§2.1.3.2 Verifying an Inclusion Proof, step by step."""
    if leaf_index >= tree_size:  # 1
        return False
    fn, sn = leaf_index, tree_size - 1  # 2
    r = leaf  # 3
    for p in path:  # 4
        if sn == 0:  # 4a
            return False
        if fn % 2 == 1 or fn == sn:  # 4b
            r = sha256(b"\x01" + p + r)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn //= 2
                    sn //= 2
        else:
            r = sha256(b"\x01" + r + p)
        fn //= 2  # 4c
        sn //= 2
    return sn == 0 and r == root  # 5


def ref_verify_consistency(first: int, second: int, path: list[bytes], first_hash: bytes, second_hash: bytes) -> bool:
    """§2.1.4.2 Verifying Consistency between Two Tree Heads, step by step
    (first == second: nothing to prove, the heads must be equal)."""
    if first == second:
        return path == [] and first_hash == second_hash
    if not path:  # 1
        return False
    path = list(path)
    if first & (first - 1) == 0:  # 2: an exact power of 2
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1  # 3
    while fn % 2 == 1:  # 4
        fn //= 2
        sn //= 2
    fr = sr = path[0]  # 5
    for c in path[1:]:  # 6
        if sn == 0:  # 6a
            return False
        if fn % 2 == 1 or fn == sn:  # 6b
            fr = sha256(b"\x01" + c + fr)
            sr = sha256(b"\x01" + c + sr)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn //= 2
                    sn //= 2
        else:
            sr = sha256(b"\x01" + sr + c)
        fn //= 2  # 6c
        sn //= 2
    return fr == first_hash and sr == second_hash and sn == 0  # 7


def test_reference_tree_hash_of_three_leaves_is_the_hand_computed_one():
    """The reference itself, against RFC 9162 §2.1.1 by hand: 3 leaves split at 2."""
    a, b, c = (sha256(b"\x00" + x) for x in (b"a", b"b", b"c"))

    def node(x: bytes, y: bytes) -> bytes:
        return sha256(b"\x01" + x + y)

    assert ref_mth([a, b, c]) == node(node(a, b), c)


def leaves_of(n: int, salt: str = "") -> list[bytes]:
    return [sha256(b"\x00" + f"{salt}event-{i}".encode()) for i in range(n)]


# -- an in-memory stored tree, built the way the writer builds it ----------------


class MemoryTree:
    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        frontier = Frontier()
        for i, leaf in enumerate(leaves):
            self.nodes[(0, i)] = leaf
            for level, idx, h in frontier.append(leaf):
                self.nodes[(level, idx)] = h
        self.frontier = frontier

    def get(self, level: int, idx: int) -> bytes:
        return self.nodes[(level, idx)]

    def hashes(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        return [range_hash(s, e, self.get) for s, e in ranges]


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


SMALL_MAX = 300
EXHAUSTIVE_MAX = 64
SAMPLES_PER_SIZE = 12


@pytest.fixture(scope="module")
def small() -> tuple[list[bytes], MemoryTree, list[bytes]]:
    leaves = leaves_of(SMALL_MAX)
    return leaves, MemoryTree(leaves), [ref_mth(leaves[:n]) for n in range(SMALL_MAX + 1)]


def test_root_of_every_size_up_to_300_is_the_rfc_tree_hash(small):
    leaves, tree, roots = small
    frontier = Frontier()
    assert root_hash(0, tree.get) == frontier.root() == roots[0] == sha256(b"")
    for n in range(1, SMALL_MAX + 1):
        frontier.append(leaves[n - 1])
        assert root_hash(n, tree.get) == roots[n], n
        assert frontier.root() == roots[n], n


def test_inclusion_proofs_verify_for_every_seq_up_to_64_and_sampled_to_300(small):
    leaves, tree, roots = small
    rng = random.Random(9162)
    for n in range(1, SMALL_MAX + 1):
        indexes = range(n) if n <= EXHAUSTIVE_MAX else rng.sample(range(n), SAMPLES_PER_SIZE)
        for i in indexes:
            path = tree.hashes(inclusion_ranges(i, n))
            assert ref_verify_inclusion(i, n, path, leaves[i], roots[n]), (i, n)
            assert verify_inclusion(i, n, leaves[i], path, roots[n])
            # the verifier is not vacuous: a wrong leaf, hash or position fails
            assert not ref_verify_inclusion(i, n, path, flip(leaves[i]), roots[n])
            if path:
                assert not ref_verify_inclusion(i, n, [flip(path[0]), *path[1:]], leaves[i], roots[n])
                assert not verify_inclusion(i, n, leaves[i], path[:-1], roots[n])
            if n > 1:
                assert not ref_verify_inclusion((i + 1) % n, n, path, leaves[i], roots[n])


def test_consistency_proofs_verify_for_every_pair_up_to_64_and_sampled_to_300(small):
    _, tree, roots = small
    rng = random.Random(6962)
    for n in range(1, SMALL_MAX + 1):
        firsts = range(1, n + 1) if n <= EXHAUSTIVE_MAX else rng.sample(range(1, n + 1), SAMPLES_PER_SIZE)
        for m in firsts:
            path = tree.hashes(consistency_ranges(m, n))
            assert ref_verify_consistency(m, n, path, roots[m], roots[n]), (m, n)
            assert verify_consistency(m, n, roots[m], roots[n], path)
            if m < n:
                assert not ref_verify_consistency(m, n, path, flip(roots[m]), roots[n])
                assert not ref_verify_consistency(m, n, [flip(path[-1]), *path[:-1]], roots[m], roots[n])
                assert not verify_consistency(m, n, roots[m], flip(roots[n]), path)


def test_a_root_or_proof_needs_at_most_two_nodes_per_tree_level():
    """O(log n) stored nodes per root or proof, whatever n."""
    for n in [*range(1, 300), 65_535, 65_536, 65_537, 999_999, 1_000_000, 2**40 + 12_345]:
        budget = 2 * n.bit_length()
        for i in {0, n // 3, n - 1}:
            assert len(nodes_of([(i, i + 1), *inclusion_ranges(i, n)])) <= budget
        for m in {1, n // 2 or 1, n - 1 or 1, n}:
            assert len(nodes_of(consistency_ranges(m, n))) <= budget
        assert len(nodes_of([(0, n)])) <= n.bit_length()


def test_frontier_writes_each_perfect_subtree_once_about_one_node_per_leaf():
    frontier = Frontier()
    written: list[tuple[int, int]] = []
    for leaf in leaves_of(1000):
        written += [(level, idx) for level, idx, _ in frontier.append(leaf)]
    assert len(written) == len(set(written)) == sum(1000 >> k for k in range(1, 10))  # 994 < 1000
    assert all(((idx + 1) << level) <= 1000 for level, idx in written)


# -- large synthetic logs in a real store -----------------------------------------


def write_synthetic_log(store: Store, platform: str, leaves: list[bytes], *, every_level: bool = False) -> None:
    """Leaf hashes and nodes as the writer stores them (or, `every_level`, as
    a ledger written before stored them: every level from 1), without events."""
    frontier = Frontier()
    nodes = []
    lowest = 1 if every_level else MERKLE_STORED_LEVEL_MIN
    for leaf in leaves:
        nodes += [(platform, level, idx, h) for level, idx, h in frontier.append(leaf) if level >= lowest]
    with store.transaction(commit=True) as c:
        c.executemany(
            store.dialect.sql("INSERT INTO peerledger_event_ids VALUES (?, ?, ?, ?, ?, ?)"),
            [(platform, f"e{i}", i + 1, leaf, b"", "2026-01-01T00:00:00.000Z") for i, leaf in enumerate(leaves)],
        )
        c.executemany(store.dialect.sql("INSERT INTO peerledger_merkle_nodes VALUES (?, ?, ?, ?)"), nodes)


LARGE_MAX = 100_000


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory):
    leaves = leaves_of(LARGE_MAX, salt="large")
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('large') / 'large.db'}")
    write_synthetic_log(store, "big", leaves)
    yield leaves, StoredTree(store, "big")
    store.close()


def test_stored_roots_and_proofs_of_random_sizes_up_to_100000_verify(large):
    leaves, tree = large
    rng = random.Random(100_000)
    sizes = [65_535, 65_536, 65_537, LARGE_MAX, *rng.sample(range(SMALL_MAX, LARGE_MAX), 6)]

    @functools.lru_cache(maxsize=None)
    def mth(start: int, end: int) -> bytes:
        """ref_mth(leaves[start:end]), remembering subtrees shared between sizes."""
        if end - start <= 1:
            return ref_mth(leaves[start:end])
        k = 1
        while k * 2 < end - start:
            k *= 2
        return sha256(b"\x01" + mth(start, start + k) + mth(start + k, end))

    def root(n: int) -> bytes:
        return mth(0, n)

    for n in sizes:
        assert tree.root(n) == root(n), n
        for i in [0, n - 1, *rng.sample(range(n), 8)]:
            leaf, path = tree.inclusion(i + 1, n)
            assert leaf == leaves[i]
            assert ref_verify_inclusion(i, n, path, leaf, root(n)), (i, n)
        for m in [1, n - 1, n, *rng.sample(range(1, n), 3)]:
            path = tree.consistency(m, n)
            assert ref_verify_consistency(m, n, path, root(m), root(n)), (m, n)


def test_a_missing_stored_node_is_an_error_naming_it(sqlite_url: str):
    with Store(sqlite_url) as store:
        write_synthetic_log(store, "small", leaves_of(1000))
        with store.transaction(commit=True) as c:
            c.execute("DELETE FROM peerledger_merkle_nodes WHERE level = 9 AND idx = 0")
        with pytest.raises(TreeError, match=r"level 9, index 0\) is missing .*seqs 1–512"):
            StoredTree(store, "small").root(1000)


def test_a_missing_leaf_is_an_error_naming_the_subtree_it_is_folded_into(sqlite_url: str):
    with Store(sqlite_url) as store:
        write_synthetic_log(store, "small", leaves_of(100))
        with store.transaction(commit=True) as c:
            c.execute("DELETE FROM peerledger_event_ids WHERE seq = 3")
        with pytest.raises(TreeError, match=r"level 6, index 0\) is missing .*seqs 1–64"):
            StoredTree(store, "small").root(100)


def test_nodes_a_ledger_stored_below_256_leaves_are_not_needed_and_agree(sqlite_url: str):
    leaves = leaves_of(1000, salt="old")
    with Store(sqlite_url) as old, Store(sqlite_url.replace(".db", "-new.db")) as new:
        write_synthetic_log(old, "p", leaves, every_level=True)
        write_synthetic_log(new, "p", leaves)
        stored = dict(old.query("SELECT level, COUNT(*) FROM peerledger_merkle_nodes GROUP BY level"))
        assert stored[1] == 500 and dict(new.query("SELECT level, COUNT(*) FROM peerledger_merkle_nodes "
                                                    "GROUP BY level")) == {8: 3, 9: 1}
        for size in (1, 255, 256, 257, 999, 1000):
            assert StoredTree(old, "p").root(size) == StoredTree(new, "p").root(size) == ref_mth(leaves[:size])
            assert StoredTree(old, "p").inclusion(size, 1000) == StoredTree(new, "p").inclusion(size, 1000)
