"""The CLI contract, run as real processes on a real SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
WORKED = str(EXAMPLES / "worked.jsonl")
EXPECTED = json.loads((EXAMPLES / "worked.expected.json").read_text())


def run(*args: str, db: str | None = None, stdin: bytes | None = None, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ledger.cli", *args] + (["--db", db] if db else [])
    return subprocess.run(argv, input=stdin.decode() if stdin is not None else None, capture_output=True,
                          text=True, cwd=cwd, env={**BASE_ENV, **(env or {})}, timeout=120)


@pytest.fixture
def worked_db(sqlite_url: str) -> str:
    r = run("ingest", WORKED, "--json", db=sqlite_url)
    assert r.returncode == 3, r.stderr
    return sqlite_url


def test_ingest_json_counts_and_exit_3_when_some_were_rejected(sqlite_url: str):
    r = run("ingest", WORKED, "--json", db=sqlite_url)
    assert r.returncode == 3
    assert json.loads(r.stdout) == {
        "accepted": 13, "duplicate": 1, "rejected": 7,
        "rejected_by_code": {"already_exists": 1, "conflict": 1, "insufficient_balance": 1, "invalid": 1,
                             "invalid_state": 1, "over_reversal": 1, "unknown_reference": 1},
    }


def test_ingest_exit_0_when_nothing_was_rejected_and_resend_is_all_duplicates(sqlite_url: str, tmp_path: Path):
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"\n".join(Path(WORKED).read_bytes().splitlines()[:13]) + b"\n")
    assert run("ingest", str(clean), db=sqlite_url).returncode == 0
    r = run("ingest", str(clean), "--json", db=sqlite_url)
    assert r.returncode == 0 and json.loads(r.stdout)["duplicate"] == 13


def test_ingest_reads_stdin_with_dash(sqlite_url: str):
    r = run("ingest", "-", "--json", db=sqlite_url, stdin=Path(WORKED).read_bytes())
    assert r.returncode == 3 and json.loads(r.stdout)["accepted"] == 13


def test_ingest_of_a_missing_file_fails_with_another_code(sqlite_url: str):
    r = run("ingest", "/nonexistent.jsonl", db=sqlite_url)
    assert r.returncode not in (0, 3) and "nonexistent" in r.stderr


def test_default_database_is_peerledger_db_in_the_current_directory(tmp_path: Path):
    r = run("ingest", WORKED, cwd=tmp_path)
    assert r.returncode == 3 and (tmp_path / "peerledger.db").exists()


def test_peerledger_db_environment_variable_selects_the_database(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    assert run("ingest", WORKED, env={"PEERLEDGER_DB": url}).returncode == 3
    assert (tmp_path / "env.db").exists()


def test_balances_json_is_the_spec_array(worked_db: str):
    r = run("balances", "--platform", "demo", "--json", db=worked_db)
    assert r.returncode == 0 and json.loads(r.stdout) == EXPECTED["balances"]


def test_balances_filtered_by_currency(worked_db: str):
    r = run("balances", "--platform", "demo", "--currency", "EUR", "--json", db=worked_db)
    assert json.loads(r.stdout) == [b for b in EXPECTED["balances"] if b["currency"] == "EUR"]


def test_digest_and_digest_as_of_a_seq(worked_db: str):
    assert run("digest", "--platform", "demo", db=worked_db).stdout.strip() == EXPECTED["digest"]
    r = run("digest", "--platform", "demo", "--as-of", "9", db=worked_db)
    assert r.stdout.strip() == EXPECTED["digest_by_seq"][8]


def test_explain_json_and_unknown_value(worked_db: str):
    r = run("explain", "--platform", "demo", "--value", "v1", "--json", db=worked_db)
    ex = json.loads(r.stdout)
    assert {k: ex[k] for k in EXPECTED["explain"]["v1"]} == EXPECTED["explain"]["v1"]
    assert ex["paths"] and all(set(p) == {"works", "recipient", "share"} for p in ex["paths"])
    assert run("explain", "--platform", "demo", "--value", "nope", db=worked_db).returncode == 4


def test_statement_json_by_utc_month(worked_db: str):
    r = run("statement", "--platform", "demo", "--prosumer", "carol", "--json", db=worked_db)
    doc = json.loads(r.stdout)
    assert doc["periods"] == [
        {"period": "2026-10", "currency": "USD", "earned": 601, "reversed": 0, "paid": 0, "net": 601},
        {"period": "2026-11", "currency": "USD", "earned": 162, "reversed": -300, "paid": 400, "net": -538},
    ]
    one = run("statement", "--platform", "demo", "--prosumer", "carol", "--period", "2026-10", "--json", db=worked_db)
    assert [p["period"] for p in json.loads(one.stdout)["periods"]] == ["2026-10"]


@pytest.mark.parametrize("command", [["balances"], ["digest"], ["explain", "--value", "v1"]])
def test_as_of_past_the_log_s_head_is_not_found_exit_4(worked_db: str, command: list[str]):
    """The worked log has 13 events: as of 13 is the head, as of 14 never was."""
    assert run(*command, "--platform", "demo", "--as-of", "13", db=worked_db).returncode == 0
    r = run(*command, "--platform", "demo", "--as-of", "14", db=worked_db)
    assert (r.returncode, r.stdout) == (4, "")
    assert "'demo' has 13 events: there is no state as of seq 14" in r.stderr


def test_as_of_zero_is_the_empty_ledger_and_a_negative_seq_is_bad_usage(worked_db: str):
    assert run("balances", "--platform", "demo", "--as-of", "0", "--json", db=worked_db).stdout.strip() == "[]"
    r = run("digest", "--platform", "demo", "--as-of", "-1", db=worked_db)
    assert r.returncode == 2 and "must be ≥ 0" in r.stderr


@pytest.mark.parametrize("command", [
    ["balances"], ["digest"], ["digest", "--as-of", "0"], ["explain", "--value", "v1"],
    ["statement", "--prosumer", "carol"], ["checkpoints"], ["verify"], ["export"],
    ["prove", "inclusion", "--seq", "1"],
])
def test_an_unknown_platform_is_not_found_exit_4(worked_db: str, command: list[str]):
    """`dem0` has no events: its balances are not those of an empty ledger."""
    at = 2 if command[0] == "prove" else 1
    r = run(*command[:at], "--platform", "dem0", *command[at:], db=worked_db)
    assert (r.returncode, r.stdout) == (4, ""), r.stderr
    assert "dem0" in r.stderr


def test_statement_of_a_prosumer_neither_registered_nor_booked_is_exit_4(worked_db: str, tmp_path: Path):
    r = run("statement", "--platform", "demo", "--prosumer", "dave", db=worked_db)
    assert r.returncode == 4 and "no prosumer 'dave'" in r.stderr
    dave = tmp_path / "dave.jsonl"
    dave.write_text(json.dumps({"v": 1, "id": "e99", "platform": "demo", "type": "prosumer.registered",
                                "at": "2026-12-01T00:00:00Z", "data": {"name": "\"prosumer\":\"eve\"",
                                                                       "prosumer": "dave"}}) + "\n")
    assert run("ingest", str(dave), db=worked_db).returncode == 0
    registered = run("statement", "--platform", "demo", "--prosumer", "dave", "--json", db=worked_db)
    assert registered.returncode == 0 and json.loads(registered.stdout)["periods"] == []
    # a name that spells a registration registers nobody
    assert run("statement", "--platform", "demo", "--prosumer", "eve", db=worked_db).returncode == 4


def test_a_registration_without_bookings_is_found_in_the_log_on_both_backends(db_url: str, tmp_path: Path):
    events = tmp_path / "two.jsonl"
    events.write_text("".join(json.dumps({"v": 1, "id": f"r{i}", "platform": "reg", "type": "prosumer.registered",
                                          "at": "2026-12-01T00:00:00Z", "data": {"prosumer": who}}) + "\n"
                              for i, who in enumerate(["ann", "ann.b"])))
    assert run("ingest", str(events), db=db_url).returncode == 0
    assert [run("statement", "--platform", "reg", "--prosumer", who, db=db_url).returncode
            for who in ("ann", "ann.b", "an", "nn")] == [0, 0, 4, 4]


def test_statement_of_a_period_the_platform_booked_nothing_in_is_exit_4(worked_db: str):
    r = run("statement", "--platform", "demo", "--prosumer", "carol", "--period", "2026-12", db=worked_db)
    assert r.returncode == 4 and "booked nothing in 2026-12" in r.stderr
    # @unattributed was booked only in November; October had bookings: an honest empty month
    r = run("statement", "--platform", "demo", "--prosumer", "@unattributed", "--period", "2026-10", "--json",
            db=worked_db)
    assert r.returncode == 0 and json.loads(r.stdout)["periods"] == []


def test_rejects_lists_code_message_raw_and_source(worked_db: str):
    docs = json.loads(run("rejects", "--platform", "demo", "--json", db=worked_db).stdout)
    assert [d["code"] for d in docs] == ["conflict", "insufficient_balance", "unknown_reference", "invalid",
                                        "invalid_state", "over_reversal", "already_exists"]
    assert docs[3]["source"].endswith("worked.jsonl:18") and '"amount": 5.0' in docs[3]["raw"]


def test_tables_are_the_default_output(worked_db: str):
    r = run("balances", "--platform", "demo", db=worked_db)
    assert r.returncode == 0 and "carol" in r.stdout and "@unattributed" in r.stdout


def test_verify_prints_the_digest_when_all_agrees(worked_db: str):
    r = run("verify", "--platform", "demo", db=worked_db)
    assert r.returncode == 0 and EXPECTED["digest"] in r.stdout


def _tamper(url: str, statement: str) -> None:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    with con:
        con.execute(statement)
    con.close()


def test_verify_names_the_seq_of_a_changed_byte(worked_db: str):
    _tamper(worked_db, "UPDATE peerledger_events SET state = replace(state, X'31303031', X'31303032') "
                       "WHERE originator_version = 8")  # amount 1001 -> 1002
    r = run("verify", "--platform", "demo", db=worked_db)
    assert r.returncode == 1 and "seq 8" in r.stdout


def test_verify_notices_a_deleted_last_event(worked_db: str):
    _tamper(worked_db, "DELETE FROM peerledger_events WHERE originator_version = 13")
    r = run("verify", "--platform", "demo", db=worked_db)
    assert r.returncode == 1 and "seq 13" in r.stdout


def test_verify_notices_a_changed_read_model(worked_db: str):
    _tamper(worked_db, "UPDATE peerledger_balances SET earned = '764', balance = '64' WHERE account = 'carol'")
    r = run("verify", "--platform", "demo", db=worked_db)
    assert r.returncode == 1 and "balances" in r.stdout


def test_every_cli_process_collects_garbage_at_the_ledger_thresholds(capsys):
    # ledger/ops/runtime.py: a fold's heap made CPython's default GC thresholds
    # cost a fifth of the fold's CPU time.  main() applies the ledger's first.
    import gc

    from ledger.cli.main import main
    from ledger.ops.runtime import GC_THRESHOLDS

    before = gc.get_threshold()
    try:
        with pytest.raises(SystemExit):
            main(["digest"])  # argparse refuses the missing --platform after main() started
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_a_database_url_is_logged_without_its_password():
    from ledger.cli.common import redacted

    assert redacted("postgresql://ledger:s3cret@db.internal:5432/prod") == "postgresql://ledger:***@db.internal:5432/prod"
    assert redacted("sqlite:///peerledger.db") == "sqlite:///peerledger.db"
