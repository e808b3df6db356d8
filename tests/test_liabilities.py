"""Liabilities trees and prosumer balance proofs (AUDIT.md §5), as the spec says them.

The trees are checked against a second implementation written here from
AUDIT.md's text alone (recursive, no frontier, no shared helper); proofs go
through the real CLI on both backends and the real HTTP server; tampered
proofs and cheating ledgers (a hidden balance, a negative one netted out)
are refused by the offline verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES
from cryptography.hazmat.primitives import serialization

from ledger.demo.generate import generate, write_jsonl
from projections.liabilities import Node, SumFrontier, combine, fold_path, leaf_node, salt_of

BASE_ENV = {k: v for k, v in os.environ.items() if k not in ("PEERLEDGER_DB", "PEERLEDGER_SIGNING_KEY")}
WORKED = str(EXAMPLES / "worked.jsonl")


def run(*args: str, db: str | None = None, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ledger.cli", *args] + (["--db", db] if db else [])
    env = {**BASE_ENV, **({"PEERLEDGER_SIGNING_KEY": str(key)} if key else {})}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def run_json(*args: str, db: str | None = None, key: Path | None = None) -> Any:
    r = run(*args, "--json", db=db, key=key)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


# -- the second implementation, from AUDIT.md §5's words ----------------------------------


def canon(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ref_leaf(leaf: dict[str, Any]) -> tuple[bytes, int]:
    return hashlib.sha256(b"\x02" + canon(leaf)).digest(), max(leaf["balance"], 0)


def ref_node(left: tuple[bytes, int], right: tuple[bytes, int]) -> tuple[bytes, int]:
    return (hashlib.sha256(b"\x03" + left[0] + right[0] + canon([left[1], right[1]])).digest(),
            left[1] + right[1])


def ref_tree(leaves: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    if not leaves:
        return hashlib.sha256(b"").digest(), 0
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return ref_node(ref_tree(leaves[:k]), ref_tree(leaves[k:]))


def ref_path(m: int, leaves: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]), siblings from the leaf up."""
    if len(leaves) <= 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return ref_path(m, leaves[:k]) + [ref_tree(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [ref_tree(leaves[:k])]


def ref_balances(db: str, size: int | None = None) -> dict[str, dict[str, int]]:
    """currency → prosumer → balance, from `peerledger balances --json`."""
    rows = run_json("balances", "--platform", "demo", *(["--as-of", str(size)] if size else []), db=db)
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        if not row["account"].startswith("@"):
            out.setdefault(row["currency"], {})[row["account"]] = row["balance"]
    return out


# -- one ledger per backend: the worked fixture, a key, a checkpoint at 10 and at the head ------


@pytest.fixture
def signed(db_url: str, tmp_path: Path) -> dict[str, Any]:
    key = tmp_path / "key.pem"
    assert run("ingest", WORKED, db=db_url).returncode == 3  # the fixture has rejected lines on purpose
    assert run("keys", "init", key=key).returncode == 0
    (tmp_path / "public.pem").write_text(run("keys", "public", key=key).stdout)
    cp10 = run_json("checkpoint", "--platform", "demo", "--size", "10", db=db_url, key=key)
    head = run_json("checkpoint", "--platform", "demo", db=db_url, key=key)
    return {"db": db_url, "key": key, "public": tmp_path / "public.pem", "cp10": cp10, "head": head,
            "dir": tmp_path}


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


# -- the worked numbers of the module doc -------------------------------------------------


def test_a_negative_balance_sums_as_zero_and_both_sums_are_hashed():
    bob = {"account": "bob", "balance": 120, "currency": "USD", "salt": "aa" * 32, "size": 9}
    carol = {"account": "carol", "balance": -7, "currency": "USD", "salt": "bb" * 32, "size": 9}
    frontier = SumFrontier()
    for leaf in (bob, carol):
        frontier.append(leaf_node(leaf))
    root = frontier.root()
    assert root.sum == 120
    expected = hashlib.sha256(b"\x03" + ref_leaf(bob)[0] + ref_leaf(carol)[0] + b"[120,0]").digest()
    assert root.hash == expected
    assert frontier.summary().accounts == 2


def test_the_tree_of_zero_leaves_hashes_the_empty_string_and_sums_to_zero():
    root = SumFrontier().root()
    assert (root.hash, root.sum) == (hashlib.sha256(b"").digest(), 0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 100])
def test_the_tree_and_the_fold_of_every_path_match_the_independent_implementation(n: int):
    leaves = [{"account": f"p{i}", "balance": (i * 37) % 200 - 50, "currency": "EUR",
               "salt": hashlib.sha256(str(i).encode()).hexdigest(), "size": 77} for i in range(n)]
    leaves.sort(key=lambda leaf: leaf["salt"])
    ref = [ref_leaf(leaf) for leaf in leaves]
    frontier = SumFrontier()
    for leaf in leaves:
        frontier.append(leaf_node(leaf))
    assert (frontier.root().hash, frontier.root().sum) == ref_tree(ref)
    for index in range(n):
        path = [Node(h, total) for h, total in ref_path(index, ref)]
        folded = fold_path(leaf_node(leaves[index]), index, n, path)
        assert folded is not None and (folded.hash, folded.sum) == ref_tree(ref)
        assert fold_path(leaf_node(leaves[index]), index, n, [*path, Node(bytes(32), 0)]) is None  # one too many


def test_a_left_sibling_keeps_its_side():
    left, right = Node(b"\x11" * 32, 5), Node(b"\x22" * 32, 7)
    assert combine(left, right).hash == hashlib.sha256(b"\x03" + left.hash + right.hash + b"[5,7]").digest()
    # Leaf 1 of 2: its sibling (leaf 0) is on the left.
    assert fold_path(right, 1, 2, [left]) == combine(left, right)


def test_sums_of_any_size_are_exact():
    big = 10**30
    node = combine(Node(b"\x00" * 32, big), Node(b"\x01" * 32, big + 1))
    assert node.sum == 2 * big + 1
    assert node.hash == hashlib.sha256(b"\x03" + b"\x00" * 32 + b"\x01" * 32
                                       + f"[{big},{big + 1}]".encode()).digest()


def test_salts_are_distinct_per_checkpoint_currency_and_account():
    seed, other = b"\x07" * 32, b"\x08" * 32
    salts = {salt_of(seed, c, a) for c in ("EUR", "USD") for a in ("alice", "bob")}
    assert len(salts) == 4
    assert salt_of(seed, "EUR", "alice") == salt_of(seed, "EUR", "alice")
    assert salt_of(other, "EUR", "alice") != salt_of(seed, "EUR", "alice")
    assert all(len(s) == 64 and s == s.lower() for s in salts)


# -- the checkpoint's field and the export, both backends ---------------------------------


def test_every_checkpoint_signs_one_tree_per_currency_that_the_leaves_rebuild(signed):
    db, head = signed["db"], signed["head"]
    assert list(head["liabilities"]) == sorted(head["liabilities"])
    balances = ref_balances(db)
    assert set(head["liabilities"]) == set(balances)
    for currency, tree in head["liabilities"].items():
        r = run("liabilities", "--platform", "demo", "--currency", currency, db=db)
        assert r.returncode == 0, r.stderr
        leaves = [json.loads(line) for line in r.stdout.splitlines()]
        assert [canon(leaf).decode() for leaf in leaves] == r.stdout.splitlines()
        salts = [leaf["salt"] for leaf in leaves]
        assert salts == sorted(set(salts)) and all(len(s) == 64 for s in salts)
        assert {leaf["account"]: leaf["balance"] for leaf in leaves} == balances[currency]
        assert all(leaf["size"] == head["size"] and leaf["currency"] == currency for leaf in leaves)
        root, total = ref_tree([ref_leaf(leaf) for leaf in leaves])
        assert tree == {"root": root.hex(), "total": total, "accounts": len(leaves)}
        assert total == sum(max(b, 0) for b in balances[currency].values())


def test_a_checkpoint_at_an_older_size_uses_the_replayed_balances_there(signed):
    db, cp10 = signed["db"], signed["cp10"]
    balances = ref_balances(db, 10)
    r = run("liabilities", "--platform", "demo", "--currency", "USD", "--size", "10", db=db)
    assert r.returncode == 0, r.stderr
    leaves = [json.loads(line) for line in r.stdout.splitlines()]
    assert {leaf["account"]: leaf["balance"] for leaf in leaves} == balances["USD"]
    root, total = ref_tree([ref_leaf(leaf) for leaf in leaves])
    assert cp10["liabilities"]["USD"] == {"root": root.hex(), "total": total, "accounts": len(leaves)}


def test_the_liabilities_field_is_signed_and_kept_as_signed(signed):
    db, head = signed["db"], signed["head"]
    listed = run_json("checkpoints", "--platform", "demo", db=db)
    assert listed[-1] == head and listed[0] == signed["cp10"]
    public = serialization.load_pem_public_key(signed["public"].read_bytes())
    body = canon({k: v for k, v in head.items() if k != "signature"})
    public.verify(base64.b64decode(head["signature"]), body)  # raises if the field were not signed


# -- proofs -------------------------------------------------------------------------------


def test_a_prosumers_proof_verifies_alone_and_asking_again_gives_the_same_leaf(signed):
    db, d = signed["db"], signed["dir"]
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", db=db)
    assert proof["checkpoint"] == signed["head"]
    assert [e["leaf"]["currency"] for e in proof["proofs"]] == sorted(ref_balances_currencies(db, "carol"))
    again = run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", db=db)
    assert again == proof
    for entry in proof["proofs"]:
        currency = entry["leaf"]["currency"]
        leaves = [json.loads(line) for line in
                  run("liabilities", "--platform", "demo", "--currency", currency, db=db).stdout.splitlines()]
        assert leaves[entry["index"]] == entry["leaf"]
        ref = [ref_leaf(leaf) for leaf in leaves]
        assert [(bytes.fromhex(p["hash"]), p["sum"]) for p in entry["path"]] == ref_path(entry["index"], ref)
    r = run("audit-proof", "--proof", str(write(d / "proof.json", proof)), "--public-key", str(signed["public"]))
    assert r.returncode == 0, r.stdout


def ref_balances_currencies(db: str, prosumer: str) -> set[str]:
    return {c for c, accounts in ref_balances(db).items() if prosumer in accounts}


def test_a_proof_at_an_older_checkpoint_shows_the_balance_there(signed):
    db = signed["db"]
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", "--size", "10", db=db)
    assert proof["checkpoint"] == signed["cp10"]
    usd = next(e for e in proof["proofs"] if e["leaf"]["currency"] == "USD")
    assert usd["leaf"]["balance"] == ref_balances(db, 10)["USD"]["carol"]
    r = run("audit-proof", "--proof", str(write(signed["dir"] / "p10.json", proof)),
            "--public-key", str(signed["public"]))
    assert r.returncode == 0, r.stdout


def test_a_prosumer_without_a_row_gets_no_proofs_and_a_system_account_is_refused(signed):
    db = signed["db"]
    assert run_json("prove", "balance", "--platform", "demo", "--prosumer", "nobody", db=db)["proofs"] == []
    r = run("prove", "balance", "--platform", "demo", "--prosumer", "@platform", db=db)
    assert r.returncode == 2 and "system account" in r.stderr


def test_no_checkpoint_or_a_checkpoint_before_revision_1_1_is_not_found(db_url: str, tmp_path: Path):
    assert run("ingest", WORKED, db=db_url).returncode == 3
    r = run("prove", "balance", "--platform", "demo", "--prosumer", "carol", db=db_url)
    assert r.returncode == 4 and "no checkpoint" in r.stderr
    r = run("liabilities", "--platform", "demo", "--currency", "USD", "--size", "5", db=db_url)
    assert r.returncode == 4


def tampered(proof: dict[str, Any], change: str) -> dict[str, Any]:
    p = json.loads(json.dumps(proof))
    entry = next(e for e in p["proofs"] if e["path"])
    if change == "balance":
        entry["leaf"]["balance"] += 1
    elif change == "salt":
        entry["leaf"]["salt"] = "0" * 64
    elif change == "sum":
        entry["path"][0]["sum"] += 1
    elif change == "hash":
        entry["path"][-1]["hash"] = "f" * 64
    elif change == "negative sum":
        entry["path"][0]["sum"] = -1
    elif change == "index":
        entry["index"] = (entry["index"] + 1) % entry["leaves"]
    elif change == "leaves":
        entry["leaves"] += 1
    elif change == "signed total":
        p["checkpoint"]["liabilities"][entry["leaf"]["currency"]]["total"] += 1
    return p


@pytest.mark.parametrize("change", ["balance", "salt", "sum", "hash", "negative sum", "index", "leaves",
                                    "signed total"])
def test_a_tampered_proof_is_refused(signed, change: str):
    db, d = signed["db"], signed["dir"]
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "alice", db=db)
    r = run("audit-proof", "--proof", str(write(d / f"{change}.json", tampered(proof, change))),
            "--public-key", str(signed["public"]), "--json")
    assert r.returncode == 1, r.stdout
    assert not json.loads(r.stdout)["ok"]


def test_a_proof_against_another_checkpoint_is_refused(signed):
    db, d = signed["db"], signed["dir"]
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "alice", db=db)
    proof["checkpoint"] = signed["cp10"]
    r = run("audit-proof", "--proof", str(write(d / "other.json", proof)), "--public-key", str(signed["public"]))
    assert r.returncode == 1
    assert "size" in r.stdout


def test_a_proof_signed_by_another_key_is_refused(signed, tmp_path: Path):
    db = signed["db"]
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "alice", db=db)
    other = tmp_path / "other-key.pem"
    assert run("keys", "init", "--key-file", str(other)).returncode == 0
    (tmp_path / "other.pem").write_text(run("keys", "public", "--key-file", str(other)).stdout)
    r = run("audit-proof", "--proof", str(write(tmp_path / "p.json", proof)),
            "--public-key", str(tmp_path / "other.pem"))
    assert r.returncode == 1 and "FAIL checkpoint signature" in r.stdout


def test_a_file_that_is_not_a_proof_is_a_clear_failure(signed, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    r = run("audit-proof", "--proof", str(bad), "--public-key", str(signed["public"]))
    assert r.returncode == 1 and "not JSON" in r.stdout


# -- cheating ledgers, caught by the auditor ----------------------------------------------


def cheat(signed: dict[str, Any], leaves: list[dict[str, Any]], currency: str, sums: Any = None) -> Path:
    """A checkpoint at the head whose `currency` tree is built from `leaves`,
    signed with the ledger's own key (the ledger is the one cheating)."""
    from ledger.audit.signing import load_private_key, sign_checkpoint

    head = signed["head"]
    ref = [ref_leaf(leaf) for leaf in leaves]
    root, total = ref_tree(ref)
    liabilities = {**head["liabilities"], currency: {"root": root.hex(), "total": total, "accounts": len(leaves)}}
    key = load_private_key(signed["key"])
    cp = sign_checkpoint(key, "demo", head["size"], bytes.fromhex(head["root"]), head["balances_digest"],
                         head["issued_at"], liabilities)
    return write(signed["dir"] / "cheat.json", cp)


def honest_leaves(signed: dict[str, Any], currency: str) -> list[dict[str, Any]]:
    r = run("liabilities", "--platform", "demo", "--currency", currency, db=signed["db"])
    return [json.loads(line) for line in r.stdout.splitlines()]


def audit(signed: dict[str, Any], checkpoint: Path, leaves: list[dict[str, Any]] | None) -> dict[str, Any]:
    d = signed["dir"]
    export = d / "export.jsonl"
    assert run("export", "--platform", "demo", "--output", str(export), db=signed["db"]).returncode == 0
    extra: list[str] = []
    if leaves is not None:
        (d / "leaves.jsonl").write_text("".join(canon(leaf).decode() + "\n" for leaf in leaves))
        extra = ["--liabilities", str(d / "leaves.jsonl")]
    r = run("audit", "--log", str(export), "--checkpoint", str(checkpoint), "--public-key", str(signed["public"]),
            *extra, "--json")
    return {c["check"]: c for c in json.loads(r.stdout)["checks"]} | {"ok": r.returncode == 0}


def test_the_audit_of_an_honest_checkpoint_passes_with_its_liabilities_exports(signed):
    checks = audit(signed, write(signed["dir"] / "head.json", signed["head"]), honest_leaves(signed, "USD"))
    assert checks["ok"], checks
    assert checks["liabilities totals"]["ok"] and checks["liabilities export leaves.jsonl"]["ok"]


def test_a_ledger_that_hid_one_balance_is_caught(signed):
    leaves = [leaf for leaf in honest_leaves(signed, "USD") if leaf["account"] != "alice"]
    checks = audit(signed, cheat(signed, leaves, "USD"), leaves)
    assert not checks["ok"]
    assert not checks["liabilities totals"]["ok"]
    export = checks["liabilities export leaves.jsonl"]
    assert not export["ok"] and "'alice' has a balances row but no leaf" in export["detail"]


def test_a_ledger_that_changed_one_balance_is_caught(signed):
    leaves = honest_leaves(signed, "USD")
    leaves[0]["balance"] -= 1
    checks = audit(signed, cheat(signed, leaves, "USD"), leaves)
    assert not checks["ok"] and "the replay gives" in checks["liabilities export leaves.jsonl"]["detail"]


def test_a_ledger_that_netted_a_negative_balance_is_caught_by_the_prosumers_verifier(signed, tmp_path: Path):
    """A ledger that sums a debtor's −7 into the tree (lowering the total) must
    show a negative sum on some creditor's path, which the verifier refuses."""
    bob = {"account": "bob", "balance": 120, "currency": "USD", "salt": "aa" * 32, "size": signed["head"]["size"]}
    carol = {"account": "carol", "balance": -7, "currency": "USD", "salt": "bb" * 32, "size": signed["head"]["size"]}
    bob_h, carol_h = ref_leaf(bob)[0], hashlib.sha256(b"\x02" + canon(carol)).digest()
    netted = (hashlib.sha256(b"\x03" + bob_h + carol_h + b"[120,-7]").digest(), 113)
    from ledger.audit.signing import load_private_key, sign_checkpoint

    head = signed["head"]
    cp = sign_checkpoint(load_private_key(signed["key"]), "demo", head["size"], bytes.fromhex(head["root"]),
                         head["balances_digest"], head["issued_at"],
                         {"USD": {"root": netted[0].hex(), "total": netted[1], "accounts": 2}})
    proof = {"checkpoint": cp, "proofs": [{"leaf": bob, "index": 0, "leaves": 2,
                                           "path": [{"hash": carol_h.hex(), "sum": -7}]}]}
    r = run("audit-proof", "--proof", str(write(tmp_path / "netted.json", proof)),
            "--public-key", str(signed["public"]))
    assert r.returncode == 1 and "non-negative" in r.stdout
    checks = audit(signed, write(tmp_path / "netted-cp.json", cp), None)
    assert not checks["liabilities totals"]["ok"]


def test_an_export_with_an_account_twice_or_salts_out_of_order_is_refused(signed):
    leaves = honest_leaves(signed, "USD")
    twice = sorted(leaves + [{**leaves[0], "salt": "f" * 64}], key=lambda leaf: leaf["salt"])
    checks = audit(signed, cheat(signed, twice, "USD"), twice)
    assert "twice" in checks["liabilities export leaves.jsonl"]["detail"]
    reordered = list(reversed(leaves))
    checks = audit(signed, write(signed["dir"] / "head.json", signed["head"]), reordered)
    assert "ascending" in checks["liabilities export leaves.jsonl"]["detail"]


def test_a_system_account_among_the_leaves_is_refused(signed):
    leaves = honest_leaves(signed, "USD")
    leaves.append({"account": "@platform", "balance": 1, "currency": "USD", "salt": "f" * 64,
                   "size": signed["head"]["size"]})
    checks = audit(signed, cheat(signed, leaves, "USD"), leaves)
    assert "not a prosumer account" in checks["liabilities export leaves.jsonl"]["detail"]


# -- a bigger stream: every event type, many prosumers ------------------------------------


def test_a_generated_stream_gives_trees_that_the_auditor_accepts(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    stream = tmp_path / "g.jsonl"
    write_jsonl(stream, generate(5, 3000, "demo"))
    run("ingest", str(stream), db=db)
    key = tmp_path / "key.pem"
    assert run("keys", "init", key=key).returncode == 0
    (tmp_path / "public.pem").write_text(run("keys", "public", key=key).stdout)
    head = run_json("checkpoint", "--platform", "demo", db=db, key=key)
    balances = ref_balances(db)
    assert {c: t["accounts"] for c, t in head["liabilities"].items()} == {c: len(a) for c, a in balances.items()}
    export = tmp_path / "export.jsonl"
    assert run("export", "--platform", "demo", "--output", str(export), db=db).returncode == 0
    paths = []
    for currency in head["liabilities"]:
        path = tmp_path / f"{currency}.jsonl"
        path.write_text(run("liabilities", "--platform", "demo", "--currency", currency, db=db).stdout)
        paths += ["--liabilities", str(path)]
    write(tmp_path / "cp.json", head)
    r = run("audit", "--log", str(export), "--checkpoint", str(tmp_path / "cp.json"),
            "--public-key", str(tmp_path / "public.pem"), *paths)
    assert r.returncode == 0, r.stdout
    someone = next(iter(next(iter(balances.values()))))
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", someone, db=db)
    r = run("audit-proof", "--proof", str(write(tmp_path / "p.json", proof)),
            "--public-key", str(tmp_path / "public.pem"))
    assert r.returncode == 0, r.stdout


# -- HTTP ---------------------------------------------------------------------------------


def test_http_serves_proofs_to_operators_and_leaves_to_auditors(tmp_path: Path):
    from http_helpers import make_token, worked_example_server

    with worked_example_server(tmp_path) as server:
        key = tmp_path / "key.pem"
        assert run("keys", "init", key=key).returncode == 0
        (tmp_path / "public.pem").write_text(run("keys", "public", key=key).stdout)
        checkpoint = run_json("checkpoint", "--platform", "demo", db=server.db_url, key=key)
        operator = make_token(server.db_url, "operator", "demo")
        auditor = make_token(server.db_url, "auditor", "demo")
        with server.client(operator) as c:
            r = c.get("/v1/platforms/demo/prosumers/carol/proof")
            assert r.status_code == 200, r.text
            proof = r.json()
            assert proof["checkpoint"] == checkpoint
            assert proof == run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol",
                                     db=server.db_url)
            assert c.get("/v1/platforms/demo/liabilities", params={"currency": "USD"}).status_code == 403
            assert c.get("/v1/platforms/demo/prosumers/@platform/proof").status_code == 400
            assert c.get("/v1/platforms/demo/prosumers/carol/proof", params={"size": 3}).status_code == 404
        r = run("audit-proof", "--proof", str(write(tmp_path / "p.json", proof)),
                "--public-key", str(tmp_path / "public.pem"))
        assert r.returncode == 0, r.stdout
        with server.client(auditor) as c:
            assert c.get("/v1/platforms/demo/prosumers/carol/proof").status_code == 403
            r = c.get("/v1/platforms/demo/liabilities", params={"currency": "USD"})
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
            assert r.text == run("liabilities", "--platform", "demo", "--currency", "USD", db=server.db_url).stdout
            assert c.get("/v1/platforms/demo/liabilities", params={"currency": "GBP"}).status_code == 404
            assert c.get("/v1/platforms/other/liabilities", params={"currency": "USD"}).status_code == 404


def test_the_fast_leaf_bytes_are_the_canonical_bytes():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from projections.liabilities import leaf_bytes

    @settings(max_examples=300, deadline=None)
    @given(account=st.text(), balance=st.integers(), currency=st.text(max_size=5), size=st.integers(0, 2**70),
           salt=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
    def same(account: str, balance: int, currency: str, size: int, salt: str) -> None:
        leaf = {"account": account, "balance": balance, "currency": currency, "salt": salt, "size": size}
        try:
            expected = canon(leaf)
        except UnicodeEncodeError:  # a lone surrogate is not UTF-8 either way
            return
        assert leaf_bytes(leaf) == expected

    same()


def test_the_standalone_verifier_of_docs_audit_md_accepts_a_real_proof_and_refuses_a_tampered_one(signed):
    text = (Path(__file__).resolve().parents[1] / "docs" / "audit.md").read_text()
    start = text.index("```python\nimport base64, hashlib, json, sys") + len("```python\n")
    code = text[start:text.index("```", start)]
    assert len(code.splitlines()) <= 40  # "a few dozen lines"
    d = signed["dir"]
    (d / "verify_proof.py").write_text(code)
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", db=signed["db"])
    ok = subprocess.run([sys.executable, str(d / "verify_proof.py"), str(write(d / "ok.json", proof)),
                         str(signed["public"])], capture_output=True, text=True)
    assert ok.returncode == 0 and "carol" in ok.stdout, ok.stderr
    for change in ("balance", "sum", "hash", "negative sum"):
        bad = subprocess.run([sys.executable, str(d / "verify_proof.py"),
                              str(write(d / "bad.json", tampered(proof, change))), str(signed["public"])],
                             capture_output=True, text=True)
        assert bad.returncode != 0, change


# -- kept trees: blocks of 256 leaves and the nodes above them ----------------------------


def test_kept_trees_of_several_blocks_give_every_proof_of_the_independent_implementation(db_url: str):
    """700 prosumers (two full blocks of 256 and a partial one), balances
    read from the read models as the writer keeps them: every leaf's stored
    proof equals RFC 9162's PATH over the reference tree."""
    import random

    from ledger.audit.liabilities import StoredTrees, balance_snapshot, new_seed
    from ledger.audit.tree import create_audit_tables, newest_checkpoint, record_checkpoint
    from ledger.storage.store import Store

    rng = random.Random(7)
    with Store(db_url) as store:
        create_audit_tables(store)
        with store.write_transaction() as c:
            c.execute(store.dialect.sql("INSERT INTO peerledger_heads (platform, seq, fee_bps, tree_edge) "
                                        "VALUES (?, ?, ?, ?)"), ("big", 1, 0, b""))
            rows = [("big", f"p{i:04d}", "EUR", e, 0, p, e - p)
                    for i in range(700) for e, p in [(rng.randrange(0, 10**6), rng.randrange(0, 10**6))]]
            rows.append(("big", "@platform", "EUR", 5, 0, 0, 5))
            c.executemany(store.dialect.sql("INSERT INTO peerledger_balances (platform, account, currency, earned, "
                                            "reversed, paid, balance) VALUES (?, ?, ?, ?, ?, ?, ?)"), rows)
        seed = new_seed()
        with balance_snapshot(store, "big", 1, seed) as snapshot:
            trees = {c: t.as_json() for c, t in snapshot.build().items()}
            checkpoint = {"platform": "big", "size": 1, "liabilities": trees, "root": "0" * 64,
                          "balances_digest": snapshot.digest, "issued_at": "x", "key_id": "0" * 16, "signature": "x"}
            record_checkpoint(store, checkpoint, seed, snapshot.keep)
        kept = newest_checkpoint(store, "big", 1)
        assert kept is not None
        stored = StoredTrees(store, kept.checkpoint_id, kept.checkpoint, seed)
        leaves = [json.loads(line) for line in stored.lines("EUR")]
        assert len(leaves) == 700 and [leaf["salt"] for leaf in leaves] == sorted(leaf["salt"] for leaf in leaves)
        ref = [ref_leaf(leaf) for leaf in leaves]
        root, total = ref_tree(ref)
        assert trees["EUR"] == {"root": root.hex(), "total": total, "accounts": 700}
        assert total == sum(max(r[6], 0) for r in rows if not r[1].startswith("@"))
        for index in range(0, 700, 7):
            [entry] = stored.proofs(leaves[index]["account"])
            assert entry["index"] == index and entry["leaf"] == leaves[index]
            assert [(bytes.fromhex(p["hash"]), p["sum"]) for p in entry["path"]] == ref_path(index, ref)
        stored.check("EUR")


def test_a_proof_after_the_log_moved_on_is_still_the_checkpoints(signed):
    db = signed["db"]
    before = run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", db=db)
    sale = {"v": 1, "id": "late-sale", "platform": "demo", "type": "value.realized", "at": "2026-12-01T00:00:00Z",
            "data": {"value": "late", "work": "o1", "amount": 5000, "currency": "USD"}}
    (signed["dir"] / "late.jsonl").write_text(json.dumps(sale) + "\n")
    assert run("ingest", str(signed["dir"] / "late.jsonl"), db=db).returncode == 0
    assert run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", db=db) == before


def test_kept_leaves_that_were_changed_are_refused_not_served(signed):
    import sqlite3

    if not signed["db"].startswith("sqlite"):
        pytest.skip("the change is made with sqlite3 on the file")
    import zlib

    path = signed["db"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        [(cid, first, data)] = conn.execute(
            "SELECT checkpoint_id, first_salt, leaves FROM peerledger_liability_blocks WHERE currency = 'USD' "
            "ORDER BY checkpoint_id DESC LIMIT 1").fetchall()
        lines = zlib.decompress(data).split(b"\n")
        leaf = json.loads(lines[0])
        leaf["balance"] += 1000
        lines[0] = canon(leaf)
        conn.execute("UPDATE peerledger_liability_blocks SET leaves = ? WHERE checkpoint_id = ? AND currency = 'USD' "
                     "AND first_salt = ?", (zlib.compress(b"\n".join(lines)), cid, first))
    r = run("liabilities", "--platform", "demo", "--currency", "USD", db=signed["db"])
    assert r.returncode == 1 and r.stdout == "" and "checkpoint signed" in " ".join(r.stderr.split())
    r = run("prove", "balance", "--platform", "demo", "--prosumer", leaf["account"], db=signed["db"])
    assert r.returncode == 1 and "does not fold to the signed root" in " ".join(r.stderr.split())


# -- a prosumer's own bookings ------------------------------------------------------------


def test_a_proof_with_bookings_shows_each_booked_event_included_and_adding_up_to_the_balance(signed):
    """carol in USD at the head of the worked fixture: 601 earned (seq 8), −300
    reversed (seq 9), 162 earned (seq 12), 400 paid (seq 13): 63."""
    db, d = signed["db"], signed["dir"]
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", "--with-bookings", db=db)
    usd = next(e for e in proof["proofs"] if e["leaf"]["currency"] == "USD")
    assert [(b["seq"], b["column"], b["amount"]) for b in usd["bookings"]] == \
        [(8, "earned", 601), (9, "reversed", -300), (12, "earned", 162), (13, "paid", 400)]
    assert usd["leaf"]["balance"] == 63
    r = run("audit-proof", "--proof", str(write(d / "b.json", proof)), "--public-key", str(signed["public"]))
    assert r.returncode == 0, r.stdout

    def refused(change: Any) -> str:
        bad = json.loads(json.dumps(proof))
        change(next(e for e in bad["proofs"] if e["leaf"]["currency"] == "USD")["bookings"])
        r = run("audit-proof", "--proof", str(write(d / "bad.json", bad)), "--public-key", str(signed["public"]))
        assert r.returncode == 1
        return r.stdout

    assert "add up to" in refused(lambda b: b.pop(1))                       # a refund hidden
    assert "add up to" in refused(lambda b: b[0].update(amount=602))         # an amount changed
    assert "not the one at that seq" in refused(lambda b: b[0]["event"]["data"].update(amount=1))  # an event changed
    assert "books no" in refused(lambda b: b[3].update(column="earned"))     # a payout booked as earnings


def test_a_checkpoint_without_liabilities_stays_valid_and_proves_no_balance(signed):
    """A checkpoint signed before AUDIT.md revision 1.1 has no `liabilities`:
    the audit still passes it, and a balance proof built on it is refused."""
    from ledger.audit.signing import load_private_key, sign_checkpoint

    head, d = signed["head"], signed["dir"]
    old = sign_checkpoint(load_private_key(signed["key"]), "demo", head["size"], bytes.fromhex(head["root"]),
                          head["balances_digest"], head["issued_at"])
    assert "liabilities" not in old
    checks = audit(signed, write(d / "old.json", old), None)
    assert checks["ok"] and "liabilities totals" not in checks
    proof = run_json("prove", "balance", "--platform", "demo", "--prosumer", "carol", db=signed["db"])
    proof["checkpoint"] = old
    r = run("audit-proof", "--proof", str(write(d / "p.json", proof)), "--public-key", str(signed["public"]))
    assert r.returncode == 1 and "no liabilities field" in r.stdout
