"""The spec's public fixture (EVENTS.md §6), end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from conftest import EXAMPLES

from ledger.audit.verify import verify
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered
from ledger.storage.replay import balances_as_of
from ledger.storage.store import Store
from ledger.storage.views import read_balances, read_explain
from projections.balances import balances_digest

EXPECTED = json.loads((EXAMPLES / "worked.expected.json").read_text())
LINES = (EXAMPLES / "worked.jsonl").read_bytes().splitlines()


@pytest.fixture
def worked(db_url: str):
    with Store(db_url) as store:
        outcomes = Ingestor(store).ingest([Offered(line, f"worked.jsonl:{i + 1}") for i, line in enumerate(LINES)])
        yield store, outcomes


def test_each_line_gets_the_expected_outcome(worked):
    _, outcomes = worked
    got = [{"id": o.event_id, "outcome": o.outcome, "code": o.code} for o in outcomes]
    assert got == EXPECTED["outcomes"]


def test_accepted_events_get_seq_1_to_13_without_gaps(worked):
    _, outcomes = worked
    assert [o.seq for o in outcomes if o.outcome == "accepted"] == list(range(1, 14))


def test_final_balances_and_digest(worked):
    store, _ = worked
    assert read_balances(store, "demo") == EXPECTED["balances"]
    assert balances_digest(read_balances(store, "demo")) == EXPECTED["digest"]


def test_digest_after_every_seq(worked):
    store, _ = worked
    digests = [balances_digest(balances_as_of(store, "demo", seq)) for seq in range(1, 14)]
    assert digests == EXPECTED["digest_by_seq"]


@pytest.mark.parametrize("value", ["v1", "v2", "v3"])
def test_explanation_of_each_value(worked, value: str):
    store, _ = worked
    ex = read_explain(store, "demo", value)
    assert ex is not None
    assert {k: ex[k] for k in EXPECTED["explain"][value]} == EXPECTED["explain"][value]


def test_canonical_bytes_of_the_first_event(worked):
    store, _ = worked
    first = next(store.read_log("demo"))
    assert first.state.decode() == EXPECTED["canonical_first_event"]


def test_every_rejected_line_is_kept_with_reason_raw_line_and_source(worked):
    store, _ = worked
    rows = store.rejects("demo", 100)
    assert [(r[2], r[3]) for r in rows] == [
        ("e13", "conflict"), ("e14", "insufficient_balance"), ("e15", "unknown_reference"),
        ("e16", "invalid"), ("e17", "invalid_state"), ("e18", "over_reversal"), ("e19", "already_exists"),
    ]
    for reject_id, platform, event_id, code, message, raw, truncated, source, received_at in rows:
        assert message and not truncated and received_at.endswith("Z")
        line_no = int(source.rsplit(":", 1)[1])
        assert bytes(raw) == LINES[line_no - 1]


def test_verify_passes_and_names_the_digest(worked):
    store, _ = worked
    report = verify(store, "demo")
    assert report.ok, report.difference
    assert report.digest == EXPECTED["digest"]
