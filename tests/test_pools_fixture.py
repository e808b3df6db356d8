"""The spec's pools fixture (EVENTS.md §6–7), end to end, on SQLite and PostgreSQL."""

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

EXPECTED = json.loads((EXAMPLES / "pools.expected.json").read_text())
LINES = (EXAMPLES / "pools.jsonl").read_bytes().splitlines()


@pytest.fixture
def pools(db_url: str):
    with Store(db_url) as store:
        outcomes = Ingestor(store).ingest([Offered(line, f"pools.jsonl:{i + 1}") for i, line in enumerate(LINES)])
        yield store, outcomes


def test_each_line_gets_the_expected_outcome(pools):
    _, outcomes = pools
    got = [{"id": o.event_id, "outcome": o.outcome, "code": o.code} for o in outcomes]
    assert got == EXPECTED["outcomes"]


def test_final_balances_and_digest(pools):
    store, _ = pools
    assert read_balances(store, "pools") == EXPECTED["balances"]
    assert balances_digest(read_balances(store, "pools")) == EXPECTED["digest"]


def test_digest_after_every_seq(pools):
    store, _ = pools
    digests = [balances_digest(balances_as_of(store, "pools", seq))
               for seq in range(1, len(EXPECTED["digest_after_seq"]) + 1)]
    assert digests == EXPECTED["digest_after_seq"]


@pytest.mark.parametrize("pool", ["P", "U", "E"])
def test_explanation_of_each_pool_is_the_fixture_s_to_the_minor_unit(pools, pool: str):
    store, _ = pools
    assert read_explain(store, "pools", pool) == EXPECTED["explain"][pool]


def test_verify_rebuilds_the_pools_from_the_log_alone(pools):
    store, _ = pools
    report = verify(store, "pools")
    assert report.ok, report.difference
    assert report.digest == EXPECTED["digest"]
