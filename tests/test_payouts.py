"""Payout runs (`peerledger payouts plan`): one rule per test.

The plan itself is a pure function (`projections.payouts`); the ledger side
(`ledger.storage.queries.payout_plan`) reads the balances at the log's head,
on SQLite and PostgreSQL; the CLI is run as a real process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import EXAMPLES

from ledger.contract.schema import ID_PATTERN, parse_event, validate_event_obj
from ledger.demo.generate import generate
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered, batches
from ledger.storage.queries import balances_at, payout_plan
from ledger.storage.store import Store
from ledger.storage.views import read_balances
from projections.payouts import (
    CSV_HEADER,
    PayoutRun,
    payout_id,
    plan_csv,
    plan_jsonl,
    plan_payouts,
)

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
WORKED = EXAMPLES / "worked.jsonl"


def row(account: str, balance: int, currency: str = "USD") -> dict[str, Any]:
    return {"account": account, "currency": currency, "earned": max(balance, 0), "reversed": min(balance, 0),
            "paid": 0, "balance": balance}


def run_of(min_balance: int = 100, seq: int = 42, reference: str | None = None, currency: str = "USD") -> PayoutRun:
    return PayoutRun("demo", currency, seq, "2026-12-01T00:00:00Z", min_balance, reference)


BALANCES = [row("@platform", 300), row("@unattributed", 500), row("alice", 1500), row("bob", 99),
            row("carol", 0), row("dave", -20), row("erin", 100), row("alice", 700, "EUR")]


# -- the plan (pure) ---------------------------------------------------------------


def test_a_run_pays_each_prosumer_at_or_over_the_minimum_their_whole_balance():
    plan = plan_payouts(run_of(100), BALANCES)
    assert [(e["data"]["prosumer"], e["data"]["amount"]) for e in plan.events] == [("alice", 1500), ("erin", 100)]
    assert plan.total_minor == 1600


def test_balances_below_the_minimum_carry_forward():
    plan = plan_payouts(run_of(100), BALANCES)
    assert "bob" not in {e["data"]["prosumer"] for e in plan.events}
    assert plan.carried_forward == 1  # bob's 99; carol's 0 and dave's -20 are nothing to carry


def test_system_accounts_are_never_paid():
    plan = plan_payouts(run_of(1), BALANCES)
    assert not {e["data"]["prosumer"] for e in plan.events} & {"@platform", "@unattributed"}


def test_only_the_run_s_currency_is_paid():
    plan = plan_payouts(run_of(1, currency="EUR"), BALANCES)
    assert [(e["data"]["prosumer"], e["data"]["amount"], e["data"]["currency"]) for e in plan.events] == \
        [("alice", 700, "EUR")]


def test_payouts_are_in_prosumer_id_order_whatever_the_rows_order():
    rows = [row("b", 5), row("B", 5), row("a", 5)]
    assert [e["data"]["prosumer"] for e in plan_payouts(run_of(1), rows).events] == ["B", "a", "b"]


def test_event_and_payout_ids_are_derived_from_currency_seq_and_prosumer():
    event = plan_payouts(run_of(100, seq=42), BALANCES).events[0]
    assert event["id"] == event["data"]["payout"] == "payout:USD:42:alice"
    assert event == {"v": 1, "id": "payout:USD:42:alice", "platform": "demo", "type": "payout.issued",
                     "at": "2026-12-01T00:00:00Z",
                     "data": {"payout": "payout:USD:42:alice", "prosumer": "alice", "amount": 1500, "currency": "USD"}}


def test_ids_too_long_for_a_prosumer_id_are_hashed_and_still_valid_and_distinct():
    import re

    long_a, long_b = "a" * 128, "a" * 127 + "b"
    ids = {payout_id("USD", 2**62, p) for p in (long_a, long_b, "a" * 108, "a" * 109)}
    assert len(ids) == 4
    for pid in ids:
        assert re.fullmatch(ID_PATTERN[1:-1], pid) and len(pid) <= 128
    assert payout_id("USD", 7, long_a).startswith("payout-h:USD:7:")
    plan = plan_payouts(run_of(1), [row(long_a, 5), row(long_b, 6)])
    for event in plan.events:
        validate_event_obj(event)


def test_the_events_are_valid_with_and_without_a_reference():
    for reference in (None, "", "wire, \"December\"\n2026 é", "x" * 200):
        for event in plan_payouts(run_of(1, reference=reference), BALANCES).events:
            assert validate_event_obj(event).data.get("reference") == reference


def test_the_same_run_gives_the_same_bytes():
    a = plan_jsonl(plan_payouts(run_of(100), BALANCES))
    b = plan_jsonl(plan_payouts(run_of(100), list(reversed(BALANCES))))
    assert a == b
    for line in a.splitlines():
        assert parse_event(line).canonical == line  # canonical bytes, ready for ingest


def test_a_balance_over_2_pow_63_minus_1_is_paid_up_to_the_limit_and_the_rest_carries_forward():
    plan = plan_payouts(run_of(1), [row("alice", 2**63 + 5)])
    assert plan.events[0]["data"]["amount"] == 2**63 - 1
    validate_event_obj(plan.events[0])


def test_csv_is_the_same_run_as_the_jsonl():
    plan = plan_payouts(run_of(1, reference='wire, "Dec"\nline 2'), BALANCES)
    rows = list(csv.reader(io.StringIO(plan_csv(plan), newline="")))
    assert tuple(rows[0]) == CSV_HEADER == ("prosumer", "amount", "currency", "payout", "reference")
    events = [orjson.loads(line) for line in plan_jsonl(plan).splitlines()]
    assert rows[1:] == [[e["data"]["prosumer"], str(e["data"]["amount"]), e["data"]["currency"],
                         e["data"]["payout"], e["data"]["reference"]] for e in events]
    assert plan_csv(plan).endswith("\r\n")


def test_csv_of_a_run_without_reference_has_empty_references_and_of_an_empty_run_only_the_header():
    plan = plan_payouts(run_of(100), BALANCES)
    assert plan_csv(plan).splitlines()[1] == "alice,1500,USD,payout:USD:42:alice,"
    assert plan_csv(plan_payouts(run_of(10**6), BALANCES)) == "prosumer,amount,currency,payout,reference\r\n"


@pytest.mark.parametrize("minimum", [0, -1, 2**63])
def test_the_minimum_is_1_to_2_pow_63_minus_1(minimum):
    with pytest.raises(AssertionError):
        plan_payouts(run_of(minimum), BALANCES)


# -- the plan at the log's head (SQLite and PostgreSQL) -------------------------------------


def ingest(store: Store, lines: list[bytes]) -> list[str]:
    ingestor = Ingestor(store)
    return [o.outcome for batch in batches(Offered(line, "test") for line in lines) for o in ingestor.ingest(batch)]


def generated(n: int = 3000) -> list[bytes]:
    return [orjson.dumps(e) for e in generate(15, n, "gen")]


def test_plan_then_ingest_pays_every_balance_at_or_over_the_minimum_and_nothing_else(db_url: str):
    with Store(db_url) as store:
        ingest(store, generated())
        before = {(r["account"], r["currency"]): r for r in read_balances(store, "gen")}
        plan = payout_plan(store, "gen", "USD", 500, "run 1")
        assert plan.events and plan.run.seq == store.head("gen")
        ingest(store, plan_jsonl(plan).splitlines())
        after = {(r["account"], r["currency"]): r for r in read_balances(store, "gen")}
    paid = {e["data"]["prosumer"]: e["data"]["amount"] for e in plan.events}
    for (account, currency), r in after.items():
        was = before[(account, currency)]
        if currency == "USD" and account in paid:
            assert paid[account] == was["balance"] >= 500
            assert (r["balance"], r["paid"]) == (0, was["paid"] + paid[account])
        else:
            assert r == was  # carried forward (or not this run's currency), untouched
            if currency == "USD" and not account.startswith("@"):
                assert r["balance"] < 500


def test_ingesting_the_same_plan_twice_pays_once(db_url: str):
    with Store(db_url) as store:
        ingest(store, generated())
        lines = plan_jsonl(payout_plan(store, "gen", "USD", 1)).splitlines()
        first = ingest(store, lines)
        second = ingest(store, lines)
    assert lines and set(first) == {"accepted"}
    assert set(second) == {"duplicate"}


def test_planning_again_at_the_same_head_prints_the_same_bytes(db_url: str):
    with Store(db_url) as store:
        ingest(store, generated())
        a = payout_plan(store, "gen", "USD", 1)
        b = payout_plan(store, "gen", "USD", 1)
    assert plan_jsonl(a) == plan_jsonl(b) and a.events


def test_the_events_at_defaults_to_the_head_event_s_at(db_url: str):
    lines = WORKED.read_bytes().splitlines()
    with Store(db_url) as store:
        ingest(store, lines)
        plan = payout_plan(store, "demo", "USD", 1)
        head_at = orjson.loads(next(iter(store.read_log("demo", after_seq=plan.run.seq - 1))).state)["at"]
        given = payout_plan(store, "demo", "USD", 1, at="2026-12-31T23:00:00-02:00")
    assert {e["at"] for e in plan.events} == {head_at}
    assert {e["at"] for e in given.events} == {"2026-12-31T23:00:00-02:00"}


def test_balances_at_a_past_seq_are_replayed_and_at_the_head_read(db_url: str):
    lines = generated()
    with Store(db_url) as store:
        ingest(store, lines[:2000])
        seq = store.head("gen")
        then = read_balances(store, "gen")
        ingest(store, lines[2000:])
        assert balances_at(store, "gen", seq) == then
        assert balances_at(store, "gen", store.head("gen")) == read_balances(store, "gen")


def test_a_plan_of_a_platform_without_events_is_empty(db_url: str):
    with Store(db_url) as store:
        plan = payout_plan(store, "nobody", "USD", 1)
    assert (plan.events, plan.run.seq) == ((), 0)


@pytest.mark.parametrize(("options", "message"), [
    (("usd", 1, None, None), "currency"),
    (("USD", 0, None, None), "min balance"),
    (("USD", 2**63, None, None), "min balance"),
    (("USD", 1, "x" * 201, None), "reference"),
    (("USD", 1, None, "2026-02-30T00:00:00Z"), "at:"),
    (("USD", 1, None, "yesterday"), "at:"),
])
def test_options_the_events_could_not_carry_are_refused(sqlite_url: str, options, message):
    with Store(sqlite_url) as store:
        with pytest.raises(ValueError, match=message):
            payout_plan(store, "demo", *options)


# -- the CLI ---------------------------------------------------------------------------------


def cli(db: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], capture_output=True,
                          env=BASE_ENV, timeout=120)


def test_cli_plan_ingest_twice_pays_once_and_csv_is_the_same_run(sqlite_url: str, tmp_path: Path):
    assert cli(sqlite_url, "ingest", str(WORKED)).returncode == 3  # the fixture has its rejects
    r = cli(sqlite_url, "payouts", "plan", "--platform", "demo", "--currency", "USD", "--min-balance", "61",
            "--reference", "December")
    assert r.returncode == 0, r.stderr
    assert b"2 payout.issued, 2.07 USD in all" in r.stderr and b"1 positive balances below 0.61 USD" in r.stderr
    events = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [(e["data"]["prosumer"], e["data"]["amount"]) for e in events] == [("alice", 144), ("carol", 63)]
    c = cli(sqlite_url, "payouts", "plan", "--platform", "demo", "--currency", "USD", "--min-balance", "61",
            "--reference", "December", "--csv")
    assert c.returncode == 0
    assert c.stdout.decode() == ("prosumer,amount,currency,payout,reference\r\n"
                                 "alice,144,USD,payout:USD:13:alice,December\r\n"
                                 "carol,63,USD,payout:USD:13:carol,December\r\n")
    plan = tmp_path / "plan.jsonl"
    plan.write_bytes(r.stdout)
    once = cli(sqlite_url, "ingest", str(plan), "--json")
    twice = cli(sqlite_url, "ingest", str(plan), "--json")
    assert json.loads(once.stdout)["accepted"] == 2 and once.returncode == 0
    assert json.loads(twice.stdout) == {"accepted": 0, "duplicate": 2, "rejected": 0, "rejected_by_code": {}}
    balances = json.loads(cli(sqlite_url, "balances", "--platform", "demo", "--currency", "USD", "--json").stdout)
    assert {b["account"]: b["balance"] for b in balances} == {"@platform": 80, "@unattributed": 54, "alice": 0,
                                                              "bob": 60, "carol": 0}


@pytest.mark.parametrize("args", [
    ["--currency", "USD", "--min-balance", "0"],
    ["--currency", "usd", "--min-balance", "1"],
    ["--currency", "USD", "--min-balance", "1", "--at", "2026-13-01T00:00:00Z"],
    ["--currency", "USD", "--min-balance", "1", "--reference", "x" * 201],
    ["--currency", "USD"],
])
def test_cli_bad_options_are_usage_errors(sqlite_url: str, args: list[str]):
    r = cli(sqlite_url, "payouts", "plan", "--platform", "demo", *args)
    assert r.returncode == 2 and not r.stdout
