"""The tree as the ledger keeps it: written with each append, equal to RFC
9162 over the accepted events, rebuilt after failures and rival writers,
and recomputed by `verify`, which names the first seq that disagrees."""

from __future__ import annotations

import json
import random

import orjson
import pytest
from conftest import EXAMPLES
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_audit_merkle import (
    ref_mth,
    ref_verify_consistency,
    ref_verify_inclusion,
    sha256,
)

from ledger.audit.signing import sign_checkpoint
from ledger.audit.tree import StoredTree, create_audit_tables, record_checkpoint
from ledger.audit.verify import verify
from ledger.demo.generate import generate
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered
from ledger.storage.store import Store

EXPECTED = json.loads((EXAMPLES / "worked.expected.json").read_text())
WORKED_LINES = (EXAMPLES / "worked.jsonl").read_bytes().splitlines()


def ingest_in_batches(store: Store, lines: list[bytes], batch_sizes: list[int], *, fresh_writer_each_batch: bool) -> None:
    ingestor = Ingestor(store)
    position = 0
    for size in batch_sizes:
        if fresh_writer_each_batch:  # a new process: the frontier is read from the stored head
            ingestor = Ingestor(store)
        ingestor.ingest([Offered(line, "test") for line in lines[position:position + size]])
        position += size
    assert position == len(lines)


def leaves(store: Store, platform: str) -> list[bytes]:
    return [sha256(b"\x00" + e.state) for e in store.read_log(platform)]


@pytest.mark.parametrize("fresh_writer_each_batch", [False, True])
def test_worked_fixture_root_is_the_spec_merkle_root(db_url: str, fresh_writer_each_batch: bool):
    with Store(db_url) as store:
        ingest_in_batches(store, WORKED_LINES, [1, 2, 3, 1, 14], fresh_writer_each_batch=fresh_writer_each_batch)
        assert store.head("demo") == 13
        assert StoredTree(store, "demo").root(13).hex() == EXPECTED["merkle_root"]
        report = verify(store, "demo")
        assert report.ok, report.difference


def generated_lines(n: int, seed: int = 5, platform: str = "gen") -> list[bytes]:
    return [json.dumps(e).encode() for e in generate(seed, n, platform)]


def test_tree_nodes_are_right_after_a_failed_append_and_a_rival_writer(sqlite_url: str, monkeypatch: pytest.MonkeyPatch):
    """A failed append forgets the batch, frontier and all (no node of the
    failed batch is kept), and a writer that another one overtook starts
    from the stored head, frontier included."""
    lines = generated_lines(700)
    with Store(sqlite_url) as store:
        a, b = Ingestor(store), Ingestor(store)
        a.ingest([Offered(x, "a") for x in lines[:101]])
        b.ingest([Offered(x, "b") for x in lines[101:230]])  # b starts at 101
        a.ingest([Offered(x, "a") for x in lines[230:333]])  # a catches up b's 129 first

        real_append = Store.append
        calls = {"n": 0}

        def failing_append(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("disk full")
            return real_append(self, *args, **kwargs)

        monkeypatch.setattr(Store, "append", failing_append)
        head_before = a.head_seq("gen")
        with pytest.raises(OSError):
            a.ingest([Offered(x, "a") for x in lines[333:500]])
        assert a.head_seq("gen") == 0  # forgotten: read again under the lock at the next batch
        a.ingest([Offered(x, "a") for x in lines[333:500]])
        assert a.head_seq("gen") > head_before
        b.ingest([Offered(x, "b") for x in lines[500:]])
        monkeypatch.undo()

        head = store.head("gen")
        assert head > 600  # the generator's stream is mostly accepted
        assert StoredTree(store, "gen").root(head) == ref_mth(leaves(store, "gen"))
        report = verify(store, "gen")
        assert report.ok, report.difference
        assert store.state.head("gen").tree.root() == ref_mth(leaves(store, "gen"))


def test_proofs_of_a_really_ingested_log_verify_at_every_seq(sqlite_url: str):
    with Store(sqlite_url) as store:
        ingest_in_batches(store, generated_lines(400, seed=11), [37, 200, 163], fresh_writer_each_batch=True)
        log = leaves(store, "gen")
        n = len(log)
        tree = StoredTree(store, "gen")
        roots = {size: ref_mth(log[:size]) for size in range(1, n + 1)}
        for size in (n, n - 1, 256, 129):
            for seq in range(1, size + 1):
                leaf, path = tree.inclusion(seq, size)
                assert leaf == log[seq - 1]
                assert ref_verify_inclusion(seq - 1, size, path, leaf, roots[size]), (seq, size)
        rng = random.Random(4)
        for first, second in [(1, n), (n, n), (128, 256), *((rng.randint(1, n), n) for _ in range(60))]:
            path = tree.consistency(first, second)
            assert ref_verify_consistency(first, second, path, roots[first], roots[second]), (first, second)


# -- verify recomputes the tree and names the first seq that disagrees ------------------


@pytest.fixture
def worked(sqlite_url: str):
    with Store(sqlite_url) as store:
        ingest_in_batches(store, WORKED_LINES, [21], fresh_writer_each_batch=False)
        yield store


@pytest.fixture
def long_ledger(sqlite_url: str):
    """600 generated events: two stored tree nodes of 256 (seqs 1–256, 257–512) and one of 512."""
    with Store(sqlite_url) as store:
        lines = [orjson.dumps(e) for e in generate(7, 600, "demo")]
        Ingestor(store).ingest([Offered(line, "gen") for line in lines[:500]])
        Ingestor(store).ingest([Offered(line, "gen") for line in lines[500:]])
        assert store.head("demo") == 600
        yield store


def execute(store: Store, statement: str, params: tuple = ()) -> None:
    with store.transaction(commit=True) as c:
        c.execute(store.dialect.sql(statement), params)


def state_at(store: Store, seq: int) -> bytes:
    return next(store.read_log("demo", after_seq=seq - 1, upto_seq=seq)).state


def test_verify_names_the_seq_of_an_event_with_one_byte_changed(worked: Store):
    changed = state_at(worked, 9).replace(b'"amount":500', b'"amount":600')
    execute(worked, "UPDATE peerledger_events SET state = ? WHERE originator_id = 'demo' AND originator_version = 9",
            (changed,))
    report = verify(worked, "demo")
    assert not report.ok and report.difference.startswith("seq 9: leaf hash")


def test_verify_names_the_seq_of_a_deleted_last_event(worked: Store):
    execute(worked, "DELETE FROM peerledger_events WHERE originator_id = 'demo' AND originator_version = 13")
    report = verify(worked, "demo")
    assert not report.ok and report.difference.startswith("seq 13:")


def test_verify_names_the_seq_of_an_event_deleted_from_the_middle(worked: Store):
    execute(worked, "DELETE FROM peerledger_events WHERE originator_id = 'demo' AND originator_version = 6")
    report = verify(worked, "demo")
    assert not report.ok and report.difference == "seq 6: missing from the stored log (event removed?)"


def delete_events_and_id_records(store: Store, *seqs: int) -> None:
    for seq in seqs:
        execute(store, "DELETE FROM peerledger_events WHERE originator_id = 'demo' AND originator_version = ?", (seq,))
        execute(store, "DELETE FROM peerledger_event_ids WHERE platform = 'demo' AND seq = ?", (seq,))


def test_verify_names_the_seq_of_deleted_last_events_by_the_head_left_behind(worked: Store):
    """Event and id record removed together: the head still counts them."""
    delete_events_and_id_records(worked, 13, 12)
    report = verify(worked, "demo")
    assert not report.ok and report.difference.startswith("seq 12: the head records 13 events, the log holds 11")


def test_verify_names_the_seq_of_deleted_last_events_by_the_tree_node_left_behind(long_ledger: Store):
    """A ledger of 600 events loses its last 100, and its head is set back to 500 to hide it: the
    stored node over seqs 257–512 still covers seqs 501–512."""
    delete_events_and_id_records(long_ledger, *range(600, 500, -1))
    execute(long_ledger, "UPDATE peerledger_heads SET seq = 500 WHERE platform = 'demo'")
    report = verify(long_ledger, "demo")
    assert not report.ok and report.difference.startswith("seq 501: a stored tree node (level 8, index 1)")


def test_verify_names_the_seq_of_a_deleted_last_event_by_the_checkpoint_that_covered_it(worked: Store):
    """Leaf 13 completes no node: only the signed checkpoint remembers it."""
    checkpoint = sign_checkpoint(Ed25519PrivateKey.generate(), "demo", 13, StoredTree(worked, "demo").root(13),
                                 "0" * 64, "2026-11-26T10:00:00.000Z")
    create_audit_tables(worked)
    record_checkpoint(worked, checkpoint)
    delete_events_and_id_records(worked, 13)
    report = verify(worked, "demo")
    assert not report.ok and report.difference.startswith("seq 13: checkpoint #1 was signed at size 13")


def test_verify_names_the_first_seq_of_two_swapped_events(worked: Store):
    a, b = state_at(worked, 2), state_at(worked, 3)  # two registrations: the rules allow either order
    execute(worked, "UPDATE peerledger_events SET state = ? WHERE originator_id = 'demo' AND originator_version = 2", (b,))
    execute(worked, "UPDATE peerledger_events SET state = ? WHERE originator_id = 'demo' AND originator_version = 3", (a,))
    report = verify(worked, "demo")
    assert not report.ok and report.difference.startswith("seq 2:")


def test_verify_reads_each_level_of_stored_tree_nodes_once_not_once_per_node(long_ledger: Store,
                                                                             monkeypatch: pytest.MonkeyPatch):
    """600 events complete 599 nodes over levels 1–9 (300 at level 1, 2 stored at level 8, 1 at
    level 9).  The stored rows of a level are read a chunk at a time as the replay completes
    them: about one query per level, whatever the log's length (once it was one per completed
    node, each from the level's first row: a 1M-event verify spent 28 % of its time there)."""
    node_queries = [0]
    query = Store.query

    def counting(self: Store, statement: str, *args: object, **kwargs: object) -> object:
        node_queries[0] += "peerledger_merkle_nodes" in statement
        return query(self, statement, *args, **kwargs)

    monkeypatch.setattr(Store, "query", counting)
    report = verify(long_ledger, "demo")
    assert report.ok, report.difference
    levels = 9
    # each level opened once, the two stored levels read to their end, then finish's two reads
    assert node_queries[0] <= levels + 2 + 2, node_queries[0]


def test_verify_names_the_first_seq_under_a_tampered_tree_node(long_ledger: Store):
    execute(long_ledger, "UPDATE peerledger_merkle_nodes SET hash = ? WHERE platform = 'demo' AND level = 8 "
            "AND idx = 1", (bytes(32),))
    report = verify(long_ledger, "demo")
    assert not report.ok
    assert report.difference.startswith("seq 257: stored tree node (level 8, index 1, seqs 257–512) differs")


def test_verify_names_a_leaf_hash_rewritten_to_match_tampered_bytes_by_the_heads_tree_edge(worked: Store):
    """An attacker who fixes the leaf hash too is still caught by the tree's right edge kept with the
    head, which covers the events no stored node covers yet (the change leaves the bookings alone, so
    no other check sees it)."""
    changed = state_at(worked, 9).replace(b'"reason":"refund"', b'"reason":"refunx"')
    assert changed != state_at(worked, 9)
    execute(worked, "UPDATE peerledger_events SET state = ? WHERE originator_id = 'demo' AND originator_version = 9",
            (changed,))
    execute(worked, "UPDATE peerledger_event_ids SET leaf_hash = ? WHERE platform = 'demo' AND seq = 9",
            (sha256(b"\x00" + changed),))
    report = verify(worked, "demo")
    assert not report.ok and report.difference.startswith(
        "seq 9: the tree's right edge kept with the head differs from the one recomputed from the events over "
        "seqs 9–12")


def test_verify_names_a_leaf_hash_rewritten_to_match_tampered_bytes_by_its_tree_node(long_ledger: Store):
    """Below a stored node (subtrees of 256 events and more), the node catches it."""
    changed = next(long_ledger.read_log("demo", after_seq=99, upto_seq=100)).state
    changed = changed.replace(b'"platform":"demo"', b'"platform":"demo","x":1')
    execute(long_ledger, "UPDATE peerledger_events SET state = ? WHERE originator_id = 'demo' AND originator_version = 100",
            (changed,))
    execute(long_ledger, "UPDATE peerledger_event_ids SET leaf_hash = ? WHERE platform = 'demo' AND seq = 100",
            (sha256(b"\x00" + changed),))
    report = verify(long_ledger, "demo")
    assert not report.ok and report.difference.startswith("seq 100:")
