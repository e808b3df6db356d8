"""A closed pool through every face: `explain` (JSON and readable), the HTTP
explanation, and `statement`, on the spec's pools fixture (EVENTS.md §6-7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from conftest import EXAMPLES
from http_helpers import Server, make_token, running_server
from pydantic import TypeAdapter
from test_cli import run

from ledger.contract import documents as api

EXPECTED = json.loads((EXAMPLES / "pools.expected.json").read_text())
POOLS = str(EXAMPLES / "pools.jsonl")


@pytest.fixture(scope="module")
def pools_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('pool_faces') / 'ledger.db'}"
    assert run("ingest", POOLS, "--json", db=url).returncode == 3  # the fixture's rejects
    return url


@pytest.mark.parametrize("pool", ["P", "U", "E"])
def test_explain_json_of_a_pool_is_the_fixture_s_and_fits_the_pool_model(pools_db: str, pool: str):
    r = run("explain", "--platform", "pools", "--value", pool, "--json", db=pools_db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == EXPECTED["explain"][pool]
    TypeAdapter(api.PoolExplanation).validate_python(json.loads(r.stdout))


def test_explain_of_a_pool_as_of_a_seq_before_its_close_is_not_found(pools_db: str):
    """P closes at seq 22 (the 27th line, after five rejects)."""
    assert run("explain", "--platform", "pools", "--value", "P", "--as-of", "21", db=pools_db).returncode == 4
    r = run("explain", "--platform", "pools", "--value", "P", "--as-of", "22", "--json", db=pools_db)
    assert json.loads(r.stdout) == EXPECTED["explain"]["P"]


def test_explain_of_a_pool_says_per_recipient_what_they_got_and_what_the_other_method_would_give(pools_db: str):
    """U is user_centric: alice got 28 where pro_rata would have given her 5 (-23),
    bob 36 where pro_rata gives 82 (+46)."""
    r = run("explain", "--platform", "pools", "--value", "U", db=pools_db)
    assert r.returncode == 0, r.stderr
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in r.stdout.splitlines() if line.count("│") >= 5}
    # People see money in major units (USD: exponent 2).
    assert lines["alice"] == ["549/2020", "0.28 USD", "0.05 USD", "-0.23 USD"]
    assert lines["bob"] == ["36/101", "0.36 USD", "0.82 USD", "+0.46 USD"]
    assert lines["@platform"][1:] == ["0.10 USD", "0.10 USD", "+0.00 USD"]
    assert "pro_rata − user_centric" in r.stdout and "stage 1" in r.stdout


def test_explain_of_a_pool_nobody_used_says_there_was_no_stage_1(pools_db: str):
    r = run("explain", "--platform", "pools", "--value", "E", db=pools_db)
    assert r.returncode == 0 and "nothing was used" in r.stdout


def test_statement_shows_pool_earnings_like_sales_in_the_close_s_month(pools_db: str):
    """bob: 82 from P (closed 2026-11-30T23:59:59Z) in November; 36 from U (closed
    2026-12-01T00:00:00Z) and U's refund of 50 (-18) in December."""
    r = run("statement", "--platform", "pools", "--prosumer", "bob", "--json", db=pools_db)
    assert json.loads(r.stdout)["periods"] == [
        {"period": "2026-11", "currency": "USD", "earned": 82, "reversed": 0, "paid": 0, "net": 82},
        {"period": "2026-12", "currency": "USD", "earned": 36, "reversed": -18, "paid": 0, "net": 18}]


@pytest.fixture(scope="module")
def server(pools_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    token = make_token(pools_db, "auditor", "pools")
    with running_server(pools_db, Path(tmp_path_factory.mktemp("pool_faces_http"))) as srv:
        srv.tokens["auditor"] = token
        yield srv


@pytest.mark.parametrize("pool", ["P", "U", "E"])
def test_http_explain_of_a_pool_is_the_cli_s_json(server: Server, pool: str):
    with server.client(server.tokens["auditor"]) as c:
        r = c.get(f"/v1/platforms/pools/values/{pool}/explain")
    assert r.status_code == 200 and r.json() == EXPECTED["explain"][pool]
    TypeAdapter(api.PoolExplanation).validate_python(r.json())


def test_http_explain_documents_both_shapes(server: Server):
    with server.client() as c:
        schema = c.get("/openapi.json").json()
    ok = schema["paths"]["/v1/platforms/{platform}/values/{value}/explain"]["get"]["responses"]["200"]
    refs = json.dumps(ok["content"]["application/json"]["schema"])
    assert "#/components/schemas/Explanation" in refs and "#/components/schemas/PoolExplanation" in refs
