"""The auditor's commands as real processes: keys, checkpoints, proofs,
export, the offline audit (on SQLite and PostgreSQL), tampering caught by
`verify` and `audit`, and time travel by acceptance time."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES
from cryptography.hazmat.primitives import serialization
from test_audit_merkle import (
    ref_mth,
    ref_verify_consistency,
    ref_verify_inclusion,
    sha256,
)

from ledger.demo.generate import generate, write_jsonl

BASE_ENV = {k: v for k, v in os.environ.items() if k not in ("PEERLEDGER_DB", "PEERLEDGER_SIGNING_KEY")}
WORKED = str(EXAMPLES / "worked.jsonl")
EXPECTED = json.loads((EXAMPLES / "worked.expected.json").read_text())


def run(*args: str, db: str | None = None, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ledger.cli", *args] + (["--db", db] if db else [])
    env = {**BASE_ENV, **({"PEERLEDGER_SIGNING_KEY": str(key)} if key else {})}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def run_json(*args: str, db: str | None = None, key: Path | None = None) -> object:
    r = run(*args, "--json", db=db, key=key)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


# -- one ledger for most tests: the worked fixture, a key, checkpoints at 7 and 13 -------


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audit")
    db, key = d / "ledger.db", d / "keys" / "signing-key.pem"
    url = f"sqlite:///{db}"
    assert run("ingest", WORKED, db=url).returncode == 3
    assert run("keys", "init", key=key).returncode == 0
    (d / "public.pem").write_text(run("keys", "public", key=key).stdout)
    for size, name in ((7, "cp7.json"), (13, "cp13.json")):
        r = run("checkpoint", "--platform", "demo", "--size", str(size), "--json", db=url, key=key)
        assert r.returncode == 0, r.stderr
        (d / name).write_text(r.stdout)
    assert run("export", "--platform", "demo", "--output", str(d / "export.jsonl"), db=url).returncode == 0
    return {"dir": d, "db": db, "key": key, "public": d / "public.pem", "cp7": d / "cp7.json",
            "cp13": d / "cp13.json", "export": d / "export.jsonl"}


def url_of(db: Path) -> str:
    return f"sqlite:///{db}"


def test_keys_init_writes_a_0600_key_outside_the_database_and_refuses_to_overwrite(ledger, tmp_path: Path):
    assert stat.S_IMODE(os.stat(ledger["key"]).st_mode) == 0o600
    before = ledger["key"].read_bytes()
    r = run("keys", "init", "--key-file", str(ledger["key"]))
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    assert ledger["key"].read_bytes() == before
    assert run("keys", "init", "--key-file", str(tmp_path / "other.pem")).returncode == 0


def test_keys_public_is_spki_pem_with_the_key_id_of_the_raw_key(ledger):
    doc = run_json("keys", "public", key=ledger["key"])
    public = serialization.load_pem_public_key(doc["public_key"].encode())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert doc["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
    assert doc["public_key"].startswith("-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    assert serialization.load_pem_public_key(ledger["public"].read_bytes()) == public  # the plain output is a PEM file


def test_checkpoint_is_signed_over_the_canonical_bytes_without_its_signature(ledger):
    cp = json.loads(ledger["cp13"].read_text())
    assert list(cp) == ["platform", "size", "root", "balances_digest", "issued_at", "key_id", "liabilities",
                        "signature"]  # liabilities: AUDIT.md §5 (revision 1.1), tests/test_liabilities.py
    assert (cp["platform"], cp["size"]) == ("demo", 13)
    assert cp["root"] == EXPECTED["merkle_root"] and cp["balances_digest"] == EXPECTED["digest"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", cp["issued_at"])
    unsigned = {k: v for k, v in cp.items() if k != "signature"}
    message = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    public = serialization.load_pem_public_key(ledger["public"].read_bytes())
    public.verify(base64.b64decode(cp["signature"], validate=True), message)  # raises if not
    cp7 = json.loads(ledger["cp7"].read_text())
    assert cp7["balances_digest"] == EXPECTED["digest_by_seq"][6]  # replayed: the views are at 13


def test_checkpoints_lists_the_issued_ones_oldest_first(ledger):
    listed = run_json("checkpoints", "--platform", "demo", db=url_of(ledger["db"]))
    assert listed[-2:] == [json.loads(ledger["cp7"].read_text()), json.loads(ledger["cp13"].read_text())]


def test_checkpoint_beyond_the_log_is_not_found(ledger):
    r = run("checkpoint", "--platform", "demo", "--size", "14", db=url_of(ledger["db"]), key=ledger["key"])
    assert r.returncode == 4


def test_prove_prints_rfc9162_proofs_in_the_audit_format(ledger):
    url = url_of(ledger["db"])
    log = [sha256(b"\x00" + line) for line in ledger["export"].read_bytes().splitlines()]
    for seq, size in ((1, 13), (13, 13), (6, 7)):
        proof = run_json("prove", "inclusion", "--platform", "demo", "--seq", str(seq), "--size", str(size), db=url)
        assert set(proof) == {"platform", "seq", "tree_size", "leaf_hash", "path"}
        assert proof["leaf_hash"] == log[seq - 1].hex()
        path = [bytes.fromhex(h) for h in proof["path"]]
        assert ref_verify_inclusion(seq - 1, size, path, log[seq - 1], ref_mth(log[:size]))
    proof = run_json("prove", "consistency", "--platform", "demo", "--from", "7", db=url)
    assert set(proof) == {"platform", "first", "second", "path"} and proof["second"] == 13
    path = [bytes.fromhex(h) for h in proof["path"]]
    assert ref_verify_consistency(7, 13, path, ref_mth(log[:7]), ref_mth(log))


@pytest.mark.parametrize("args, code", [
    (("inclusion", "--seq", "0"), 2),
    (("inclusion", "--seq", "5", "--size", "4"), 2),
    (("inclusion", "--seq", "14"), 4),
    (("consistency", "--from", "9", "--to", "8"), 2),
    (("consistency", "--from", "1", "--to", "99"), 4),
])
def test_prove_exit_codes_are_2_for_impossible_and_4_for_beyond_the_log(ledger, args, code):
    assert run("prove", *args, "--platform", "demo", db=url_of(ledger["db"])).returncode == code


def test_export_is_the_canonical_bytes_one_per_line_in_seq_order(ledger):
    lines = ledger["export"].read_bytes().split(b"\n")
    assert len(lines) == 14 and lines[-1] == b""
    assert lines[0].decode() == EXPECTED["canonical_first_event"]
    assert [json.loads(x)["id"] for x in lines[:-1]] == [f"e{i}" for i in range(1, 14)]
    r = subprocess.run([sys.executable, "-m", "ledger.cli", "export", "--platform", "demo", "--to", "7",
                        "--db", url_of(ledger["db"])], capture_output=True, env=BASE_ENV)
    assert r.returncode == 0 and r.stdout == b"\n".join(lines[:7]) + b"\n"


def audit(ledger, log: Path, checkpoint: Path, previous: Path | None = None, public: Path | None = None):
    args = ["audit", "--log", str(log), "--checkpoint", str(checkpoint), "--public-key", str(public or ledger["public"])]
    return run(*args, *(["--previous", str(previous)] if previous else []))


def test_audit_of_the_untouched_export_passes_every_check(ledger):
    r = audit(ledger, ledger["export"], ledger["cp13"], ledger["cp7"])
    assert r.returncode == 0, r.stdout
    lines = r.stdout.splitlines()
    assert lines and all(line.startswith("PASS ") for line in lines)
    names = {line[5:].split(":")[0] for line in lines}
    assert {"checkpoint signature", "checkpoint key id", "root", "balances digest", "rules", "consistency",
            "previous root", "previous balances digest"} <= names


def test_audit_fails_a_checkpoint_altered_after_signing_or_checked_with_another_key(ledger, tmp_path: Path):
    cp = json.loads(ledger["cp13"].read_text())
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**cp, "balances_digest": "0" * 64}))
    r = audit(ledger, ledger["export"], forged)
    assert r.returncode == 1 and "FAIL checkpoint signature" in r.stdout and "FAIL balances digest" in r.stdout
    other = tmp_path / "other.pem"
    assert run("keys", "init", "--key-file", str(other)).returncode == 0
    (tmp_path / "other.pub").write_text(run("keys", "public", "--key-file", str(other)).stdout)
    r = audit(ledger, ledger["export"], ledger["cp13"], public=tmp_path / "other.pub")
    assert r.returncode == 1 and "FAIL checkpoint key id" in r.stdout and "FAIL checkpoint signature" in r.stdout


# -- tampering with the database is caught by verify and by audit --------------------


def tampered_copy(ledger, tmp_path: Path, *statements: tuple[str, tuple]) -> str:
    db = tmp_path / "tampered.db"
    shutil.copy(ledger["db"], db)
    with sqlite3.connect(db) as c:
        for statement, params in statements:
            c.execute(statement, params)
    return url_of(db)


def state(ledger, seq: int) -> bytes:
    return ledger["export"].read_bytes().splitlines()[seq - 1]


def verify_and_audit(ledger, tmp_path: Path, url: str) -> tuple[str, str]:
    v = run("verify", "--platform", "demo", db=url)
    assert v.returncode == 1
    export = tmp_path / "tampered.jsonl"
    assert run("export", "--platform", "demo", "--output", str(export), db=url).returncode == 0
    a = audit(ledger, export, ledger["cp13"], ledger["cp7"])
    assert a.returncode == 1
    return v.stdout, a.stdout


SET_STATE = "UPDATE peerledger_events SET state = ? WHERE originator_id = 'demo' AND originator_version = ?"


def test_one_byte_changed_is_named_by_verify_and_placed_after_the_previous_checkpoint_by_audit(ledger, tmp_path):
    url = tampered_copy(ledger, tmp_path, (SET_STATE, (state(ledger, 9).replace(b'"amount":500', b'"amount":600'), 9)))
    verified, audited = verify_and_audit(ledger, tmp_path, url)
    assert "seq 9: leaf hash recorded at append differs" in verified
    assert "FAIL root" in audited and "FAIL balances digest" in audited and "FAIL consistency" in audited
    assert "PASS previous root" in audited  # so the change lies after seq 7


def test_deleted_last_event_is_named_by_verify_and_audit(ledger, tmp_path):
    url = tampered_copy(ledger, tmp_path, (
        "DELETE FROM peerledger_events WHERE originator_id = 'demo' AND originator_version = 13", ()))
    verified, audited = verify_and_audit(ledger, tmp_path, url)
    assert "seq 13:" in verified
    assert "FAIL export length: the export ends at seq 12; the checkpoint covers seq 1–13: seq 13 is missing" in audited


def test_two_swapped_events_are_named_by_verify_and_audit(ledger, tmp_path):
    """c1 (seq 5) after o1 (seq 7) that is made of it: the rules place the swap."""
    five, seven = state(ledger, 5), state(ledger, 7)
    url = tampered_copy(ledger, tmp_path, (SET_STATE, (seven, 5)), (SET_STATE, (five, 7)))
    verified, audited = verify_and_audit(ledger, tmp_path, url)
    assert "seq 5:" in verified
    assert "FAIL rules: seq 5: the rules refuse this event: unknown_reference" in audited
    assert "FAIL previous root" in audited and "seq ≤ 7" in audited


def test_export_of_a_log_with_a_gap_fails_naming_the_seq_and_leaves_no_file(ledger, tmp_path):
    url = tampered_copy(ledger, tmp_path, (
        "DELETE FROM peerledger_events WHERE originator_id = 'demo' AND originator_version = 6", ()))
    r = run("export", "--platform", "demo", "--output", str(tmp_path / "x.jsonl"), db=url)
    assert r.returncode == 1 and "seq 6 is missing" in r.stderr
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "x.jsonl.partial").exists()


# -- the export replayed by audit gives the live digest, on both backends ---------------


def test_export_replayed_by_audit_gives_the_live_digest(db_url: str, tmp_path: Path):
    events = tmp_path / "events.jsonl"
    write_jsonl(events, generate(21, 3000, "zazzle"))
    key = tmp_path / "key.pem"
    assert run("ingest", str(events), db=db_url).returncode in (0, 3)
    assert run("keys", "init", key=key).returncode == 0
    (tmp_path / "public.pem").write_text(run("keys", "public", key=key).stdout)
    (tmp_path / "old.json").write_text(run("checkpoint", "--platform", "zazzle", "--size", "1234", "--json",
                                           db=db_url, key=key).stdout)
    cp = run_json("checkpoint", "--platform", "zazzle", db=db_url, key=key)
    (tmp_path / "cp.json").write_text(json.dumps(cp))
    live = run("digest", "--platform", "zazzle", db=db_url).stdout.strip()
    assert cp["balances_digest"] == live and cp["size"] > 2500
    assert run("export", "--platform", "zazzle", "--output", str(tmp_path / "x.jsonl"), db=db_url).returncode == 0
    report = run_json("audit", "--log", str(tmp_path / "x.jsonl"), "--checkpoint", str(tmp_path / "cp.json"),
                      "--public-key", str(tmp_path / "public.pem"), "--previous", str(tmp_path / "old.json"))
    assert report["ok"], report
    digest_check = next(c for c in report["checks"] if c["check"] == "balances digest")
    assert digest_check["detail"] == f"replayed {live}, signed {live}"
    old_digest = json.loads((tmp_path / "old.json").read_text())["balances_digest"]
    assert old_digest == run("digest", "--platform", "zazzle", "--as-of", "1234", db=db_url).stdout.strip()


# -- time travel by acceptance time ----------------------------------------------------


SET_ACCEPTED_AT = ("UPDATE peerledger_event_ids SET accepted_at = "
                   "'2026-12-01T00:00:' || substr('0' || (CASE WHEN seq = ? THEN 30 ELSE seq END), -2) || '.000Z'")


@pytest.fixture
def timed(ledger, tmp_path: Path) -> str:
    """The worked ledger with seq k accepted at 2026-12-01T00:00:k (UTC)."""
    return tampered_copy(ledger, tmp_path, (SET_ACCEPTED_AT, (0,)))


def digest_as_of_time(url: str, instant: str) -> str:
    r = run("digest", "--platform", "demo", "--as-of-time", instant, db=url)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def digest_after(seq: int) -> str:
    return EXPECTED["digest_by_seq"][seq - 1] if seq else hashlib.sha256(b"[]").hexdigest()


@pytest.mark.parametrize("instant, seq", [
    ("2026-12-01T00:00:08Z", 8),
    ("2026-12-01T01:00:09.999+01:00", 9),  # an offset, and a fraction
    ("2026-12-01T00:00:59Z", 13),
    ("2026-11-30T23:59:59Z", 0),
])
def test_as_of_time_is_the_state_after_the_last_event_accepted_by_then(timed: str, instant: str, seq: int):
    assert digest_as_of_time(timed, instant) == digest_after(seq)


def test_as_of_time_is_a_prefix_of_the_log_even_if_the_clock_stepped_back(ledger, tmp_path: Path):
    """Seq 5 stamped :30, seq 6 :06: at :10 the ledger had not yet seq 5, so not 6."""
    url = tampered_copy(ledger, tmp_path, (SET_ACCEPTED_AT, (5,)))
    assert digest_as_of_time(url, "2026-12-01T00:00:10Z") == digest_after(4)
    assert digest_as_of_time(url, "2026-12-01T00:00:30Z") == digest_after(13)


def test_balances_as_of_time_equal_balances_as_of_the_seq(timed: str):
    assert (run_json("balances", "--platform", "demo", "--as-of-time", "2026-12-01T00:00:09Z", db=timed)
            == run_json("balances", "--platform", "demo", "--as-of", "9", db=timed))


def test_explain_as_of_time_needs_the_value_to_exist_and_shows_its_reversals_by_then(timed: str):
    assert run("explain", "--platform", "demo", "--value", "v1", "--as-of-time", "2026-12-01T00:00:07Z",
               db=timed).returncode == 4
    assert run_json("explain", "--platform", "demo", "--value", "v1", "--as-of-time", "2026-12-01T00:00:08Z",
                    db=timed)["reversed"] == 0
    assert run_json("explain", "--platform", "demo", "--value", "v1", "--as-of-time", "2026-12-01T00:00:09Z",
                    db=timed)["reversed"] == 500
    assert run_json("explain", "--platform", "demo", "--value", "v1", "--as-of", "8", db=timed)["reversed"] == 0


def test_as_of_time_must_be_rfc3339_with_a_zone_and_excludes_as_of(timed: str):
    assert run("digest", "--platform", "demo", "--as-of-time", "2026-12-01", db=timed).returncode == 2
    assert run("digest", "--platform", "demo", "--as-of-time", "2026-12-01T00:00:00", db=timed).returncode == 2
    assert run("digest", "--platform", "demo", "--as-of-time", "2026-12-01T00:00:00Z", "--as-of", "3",
               db=timed).returncode == 2
