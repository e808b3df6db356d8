"""The HTTP API's rules, against a real `peerledger serve` on loopback.

Reads are compared with what the CLI prints with `--json` on the same
database: the two must be the same JSON.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from conftest import EXAMPLES
from http_helpers import BASE_ENV, Server, running_server, worked_example_server
from pydantic import TypeAdapter

from ledger.contract import documents as api
from ledger.http.app import BODY_MAX_BYTES
from ledger.ingest.sources import EVENTS_PER_REQUEST_MAX

EXPECTED = json.loads((EXAMPLES / "worked.expected.json").read_text())
WORKED = (EXAMPLES / "worked.jsonl").read_bytes()
NDJSON = {"content-type": "application/x-ndjson"}


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db_url], capture_output=True,
                          text=True, env=BASE_ENV, timeout=120)


def cli_json(db_url: str, *args: str) -> Any:
    r = cli(db_url, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose platform `demo` holds the spec's worked example, posted as NDJSON."""
    with worked_example_server(tmp_path_factory.mktemp("http_api")) as srv:
        yield srv


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.tokens["admin"]) as c:
        yield c


def event(platform: str, event_id: str, kind: str = "prosumer.registered", **data: Any) -> dict[str, Any]:
    return {"v": 1, "id": event_id, "platform": platform, "type": kind, "at": "2026-12-01T00:00:00Z",
            "data": data or {"prosumer": event_id}}


# -- POST ------------------------------------------------------------------------


def test_post_answers_every_event_in_input_order_even_when_some_are_rejected(admin: httpx.Client):
    body = b"[" + b",".join(WORKED.replace(b'"demo"', b'"order"').splitlines()) + b"]"
    r = admin.post("/v1/platforms/order/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200
    doc = r.json()
    TypeAdapter(api.IngestResponse).validate_python(doc)
    assert [{"id": x["id"], "outcome": x["outcome"], "code": x.get("code")} for x in doc["results"]] == \
        EXPECTED["outcomes"]
    assert (doc["accepted"], doc["duplicate"], doc["rejected"]) == (13, 1, 7)
    assert [x["seq"] for x in doc["results"] if x["outcome"] == "accepted"] == list(range(1, 14))
    assert all(set(x) == {"id", "outcome", "code", "message"} for x in doc["results"] if x["outcome"] == "rejected")


def test_ndjson_line_that_is_not_json_is_that_event_s_invalid_and_the_others_count(admin: httpx.Client):
    lines = [json.dumps(event("nd", "a")), "{not json", "", json.dumps(event("nd", "b"))]
    r = admin.post("/v1/platforms/nd/events", content="\n".join(lines).encode(), headers=NDJSON)
    doc = r.json()
    assert r.status_code == 200 and (doc["accepted"], doc["rejected"]) == (2, 1)
    assert [x["outcome"] for x in doc["results"]] == ["accepted", "rejected", "accepted"]  # blank line: no event
    assert doc["results"][1]["code"] == "invalid" and "not valid JSON" in doc["results"][1]["message"]
    rejects = admin.get("/v1/platforms/nd/rejects").json()
    assert rejects[-1]["raw"] == "{not json" and rejects[-1]["source"].endswith(":2")


def test_event_of_another_platform_is_rejected_invalid_and_filed_under_the_path_s_platform(admin: httpx.Client):
    r = admin.post("/v1/platforms/mine/events", json=[event("mine", "ok"), event("theirs", "sneaky")])
    results = r.json()["results"]
    assert results[0]["outcome"] == "accepted"
    assert results[1]["code"] == "invalid" and "'theirs'" in results[1]["message"]
    assert admin.get("/v1/platforms/theirs/log").status_code == 404  # nothing was appended there
    assert admin.get("/v1/platforms/theirs/rejects").json() == []
    assert admin.get("/v1/platforms/mine/rejects").json()[-1]["id"] == "sneaky"


def test_rejects_of_a_post_name_the_token_and_item_as_source(server: Server, admin: httpx.Client):
    admin.post("/v1/platforms/src/events", json=[event("src", "x"), {"v": 2}])
    rejects = admin.get("/v1/platforms/src/rejects").json()
    token_id = server.tokens["admin"][4:20]
    assert rejects[-1]["source"] == f"http:{token_id}:2" and rejects[-1]["platform"] == "src"


def test_duplicate_key_in_one_array_element_rejects_only_that_element(admin: httpx.Client):
    body = ('[' + json.dumps(event("dup", "a")) + ',{"v":1,"v":1,"id":"b","platform":"dup",'
            '"type":"prosumer.registered","at":"2026-12-01T00:00:00Z","data":{"prosumer":"b"}}]')
    results = admin.post("/v1/platforms/dup/events", content=body.encode(),
                         headers={"content-type": "application/json"}).json()["results"]
    assert results[0]["outcome"] == "accepted"
    assert results[1]["code"] == "invalid" and "duplicate key" in results[1]["message"]


def test_array_body_that_does_not_parse_is_400(admin: httpx.Client):
    r = admin.post("/v1/platforms/bad/events", content=b'[{"v": 1,', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = admin.post("/v1/platforms/bad/events", json={"v": 1})
    assert r.status_code == 400 and "array" in r.json()["detail"]


def test_other_content_type_is_415(admin: httpx.Client):
    r = admin.post("/v1/platforms/ct/events", content=b"[]", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert admin.post("/v1/platforms/ct/events", content=b"[]", headers={"content-type": ""}).status_code == 415


def test_declared_body_over_16_mib_is_413_before_it_is_read(server: Server):
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30) as s:
        s.sendall(b"POST /v1/platforms/big/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {server.tokens['admin']}\r\nContent-Length: {BODY_MAX_BYTES + 1}\r\n\r\n"
                  .encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 413 ")  # without a byte of the body sent


def test_streamed_body_over_16_mib_is_413_while_streaming(server: Server):
    """Chunked, no Content-Length: the server stops reading past the limit and
    answers at once; the client sees the 413 before it has sent everything."""
    chunk_bytes = 1024 * 1024
    sent = 0
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30) as s:
        s.sendall(b"POST /v1/platforms/big/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                  + f"Authorization: Bearer {server.tokens['admin']}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        answer = b""
        s.settimeout(0.05)
        while sent < 4 * BODY_MAX_BYTES and not answer:
            try:
                s.sendall(f"{chunk_bytes:x}\r\n".encode() + b"x" * chunk_bytes + b"\r\n")
                sent += chunk_bytes
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer = s.recv(65536)
            except TimeoutError:
                pass
        s.settimeout(10)
        if not answer:
            answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert sent < 2 * BODY_MAX_BYTES  # it answered soon after the limit, not at the end


def test_more_than_10000_events_is_413(admin: httpx.Client):
    body = b"\n".join([b"{}"] * (EVENTS_PER_REQUEST_MAX + 1))
    r = admin.post("/v1/platforms/many/events", content=body, headers=NDJSON)
    assert r.status_code == 413 and "10000" in r.json()["detail"]
    assert admin.get("/v1/platforms/many/rejects").json() == []


def test_a_json_array_of_a_million_tiny_items_is_413(admin: httpx.Client):
    body = b"[" + b"0," * (1024 * 1024 - 1) + b"0]"  # 2 MiB
    r = admin.post("/v1/platforms/many/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "10000" in r.json()["detail"]


def _nested_event(platform: str, event_id: str, depth: int) -> bytes:
    return json.dumps(event(platform, event_id)).encode().replace(b"}}", b', "name": ' + b"[" * depth + b"]" * depth
                                                                    + b"}}")


@pytest.mark.parametrize("depth", [300, 1000, 5000])
def test_an_item_nested_too_deep_is_that_item_s_invalid_and_the_others_count(admin: httpx.Client, depth: int):
    """Array elements and NDJSON lines alike: 200, the deep item rejected (kept),
    its neighbours accepted."""
    platform = f"deep{depth}"
    items = [json.dumps(event(platform, "a")).encode(), _nested_event(platform, "b", depth),
             json.dumps(event(platform, "c")).encode()]
    for body, media in ((b"[" + b",".join(items) + b"]", "application/json"), (b"\n".join(items), NDJSON["content-type"])):
        r = admin.post(f"/v1/platforms/{platform}/events", content=body, headers={"content-type": media})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["outcome"] for x in results[::2]] in (["accepted"] * 2, ["duplicate"] * 2)
        assert results[1]["code"] == "invalid" and "deeper than 32 levels" in results[1]["message"]
    assert [x["source"][-2:] for x in admin.get(f"/v1/platforms/{platform}/rejects").json()] == [":2", ":2"]


def test_an_ndjson_line_of_a_form_feed_is_an_invalid_event_not_a_blank_line(admin: httpx.Client):
    body = json.dumps(event("ff", "a")).encode() + b"\n\f\n\v\n \t\r\n" + json.dumps(event("ff", "b")).encode()
    results = admin.post("/v1/platforms/ff/events", content=body, headers=NDJSON).json()["results"]
    assert [x["outcome"] for x in results] == ["accepted", "rejected", "rejected", "accepted"]
    assert [x["source"][-2:] for x in admin.get("/v1/platforms/ff/rejects").json()] == [":2", ":3"]


def _batches_appended(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith('peerledger_batch_append_latency_seconds_count{source="http"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_post_of_2500_events_is_appended_in_batches_of_at_most_1000(admin: httpx.Client):
    before = _batches_appended(admin.get("/metrics").text)
    events = [event("split", f"p{i}") for i in range(2500)]
    doc = admin.post("/v1/platforms/split/events", json=events).json()
    assert [x["seq"] for x in doc["results"]] == list(range(1, 2501))
    assert _batches_appended(admin.get("/metrics").text) - before == 3


def test_post_answers_after_its_read_models_commit_so_reads_see_its_events(admin: httpx.Client):
    r = admin.post("/v1/platforms/fresh/events", content=WORKED.replace(b'"demo"', b'"fresh"'), headers=NDJSON)
    assert r.status_code == 200
    assert admin.get("/v1/platforms/fresh/balances").json() == EXPECTED["balances"]
    assert admin.get("/v1/platforms/fresh/balances").headers["x-ledger-views-seq"] == "13"


def test_resending_a_post_gives_duplicates_and_changes_nothing(admin: httpx.Client):
    before = admin.get("/v1/platforms/demo/digest").json()
    doc = admin.post("/v1/platforms/demo/events", content=WORKED, headers=NDJSON).json()
    assert doc["accepted"] == 0 and doc["duplicate"] == 14
    assert admin.get("/v1/platforms/demo/digest").json() == before


# -- reads are the CLI's JSON ------------------------------------------------------


@pytest.mark.parametrize(("path", "args"), [
    ("balances", ["balances", "--platform", "demo"]),
    ("balances?currency=EUR", ["balances", "--platform", "demo", "--currency", "EUR"]),
    ("balances?as_of=9", ["balances", "--platform", "demo", "--as-of", "9"]),
    ("values/v1/explain", ["explain", "--platform", "demo", "--value", "v1"]),
    ("values/v1/explain?as_of=9", ["explain", "--platform", "demo", "--value", "v1", "--as-of", "9"]),
    ("prosumers/carol/statement", ["statement", "--platform", "demo", "--prosumer", "carol"]),
    ("prosumers/carol/statement?period=2026-10",
     ["statement", "--platform", "demo", "--prosumer", "carol", "--period", "2026-10"]),
    ("prosumers/@unattributed/statement?period=2026-10",
     ["statement", "--platform", "demo", "--prosumer", "@unattributed", "--period", "2026-10"]),
    ("rejects", ["rejects", "--platform", "demo"]),
    ("proofs/inclusion?seq=5", ["prove", "inclusion", "--platform", "demo", "--seq", "5"]),
    ("proofs/consistency?first=4&second=11", ["prove", "consistency", "--platform", "demo", "--from", "4", "--to", "11"]),
])
def test_reads_are_the_same_json_as_the_cli(server: Server, admin: httpx.Client, path: str, args: list[str]):
    r = admin.get(f"/v1/platforms/demo/{path}")
    assert r.status_code == 200
    assert r.json() == cli_json(server.db_url, *args)


def test_cli_and_http_documents_fit_the_shared_models(server: Server, admin: httpx.Client):
    for model, path, args in [
        (list[api.BalanceRow], "balances", ["balances", "--platform", "demo"]),
        (api.Explanation, "values/v1/explain", ["explain", "--platform", "demo", "--value", "v1"]),
        (api.Statement, "prosumers/carol/statement", ["statement", "--platform", "demo", "--prosumer", "carol"]),
        (list[api.Reject], "rejects", ["rejects", "--platform", "demo"]),
    ]:
        TypeAdapter(model).validate_python(cli_json(server.db_url, *args))
        TypeAdapter(model).validate_python(admin.get(f"/v1/platforms/demo/{path}").json())


def test_digest_is_what_the_cli_prints(server: Server, admin: httpx.Client):
    assert admin.get("/v1/platforms/demo/digest").json() == {
        "platform": "demo", "digest": EXPECTED["digest"], "as_of": None}
    assert cli(server.db_url, "digest", "--platform", "demo").stdout.strip() == EXPECTED["digest"]
    assert admin.get("/v1/platforms/demo/digest?as_of=9").json()["digest"] == EXPECTED["digest_by_seq"][8]


def test_unknown_value_is_404(admin: httpx.Client):
    assert admin.get("/v1/platforms/demo/values/nope/explain").status_code == 404


@pytest.mark.parametrize("path", [
    "balances?as_of=14", "digest?as_of=14", "values/v1/explain?as_of=14", "log?from_seq=15",
])
def test_a_state_past_the_log_s_head_is_404(admin: httpx.Client, path: str):
    """The worked log has 13 events: as_of 13 and from_seq 14 (the end) are fine."""
    assert admin.get(f"/v1/platforms/demo/{path.replace('14', '13').replace('15', '14')}").status_code == 200
    r = admin.get(f"/v1/platforms/demo/{path}")
    assert r.status_code == 404 and "'demo' has 13 events" in r.json()["detail"]


@pytest.mark.parametrize("path", [
    "balances", "digest", "digest?as_of=0", "values/v1/explain", "prosumers/carol/statement", "log",
    "checkpoints", "proofs/inclusion?seq=1",
])
def test_a_platform_without_events_is_404_for_an_admin_too(admin: httpx.Client, path: str):
    r = admin.get(f"/v1/platforms/dem0/{path}")
    assert r.status_code == 404 and "dem0" in r.json()["detail"]


def test_an_unknown_prosumer_or_a_period_without_bookings_is_404(server: Server, admin: httpx.Client):
    r = admin.get("/v1/platforms/demo/prosumers/dave/statement")
    assert r.status_code == 404 and "no prosumer 'dave'" in r.json()["detail"]
    r = admin.get("/v1/platforms/demo/prosumers/carol/statement?period=2031-01")
    assert r.status_code == 404 and "booked nothing in 2031-01" in r.json()["detail"]
    assert cli(server.db_url, "statement", "--platform", "demo", "--prosumer", "dave").returncode == 4


def test_log_is_the_canonical_event_bytes_as_ndjson_or_a_json_list(server: Server, admin: httpx.Client):
    export = subprocess.run([sys.executable, "-m", "ledger.cli", "export", "--platform", "demo", "--db",
                             server.db_url], capture_output=True, env=BASE_ENV, timeout=60, check=True).stdout
    nd = admin.get("/v1/platforms/demo/log?from_seq=1&limit=13", headers={"accept": "application/x-ndjson"})
    assert nd.headers["content-type"] == "application/x-ndjson" and nd.content == export
    as_list = admin.get("/v1/platforms/demo/log?from_seq=1&limit=13")
    assert as_list.content == b"[" + b",".join(export.splitlines()) + b"]"
    assert nd.content.splitlines()[0].decode() == EXPECTED["canonical_first_event"]
    page = admin.get("/v1/platforms/demo/log?from_seq=12&limit=5")
    assert len(page.json()) == 2 and page.headers["x-ledger-next-seq"] == "14"


def test_bad_parameter_is_400_with_a_detail(admin: httpx.Client):
    for path in ("balances?as_of=-1", "prosumers/carol/statement?period=2026-13", "log?limit=0",
                 "balances?as_of=1&as_of_time=2026-01-01T00:00:00Z", "digest?as_of_time=yesterday"):
        r = admin.get(f"/v1/platforms/demo/{path}")
        assert r.status_code == 400 and r.json()["detail"], path


# -- payout runs -------------------------------------------------------------------


def plan_cli(db_url: str, platform: str, *args: str) -> bytes:
    """`peerledger payouts plan`'s stdout, bytes as printed (CSV lines end in CRLF)."""
    r = subprocess.run([sys.executable, "-m", "ledger.cli", "payouts", "plan", "--platform", platform, *args,
                        "--db", db_url], capture_output=True, env=BASE_ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_payout_plan_is_what_the_cli_prints_as_jsonl_or_csv(server: Server, admin: httpx.Client):
    r = admin.post("/v1/platforms/payday/events", content=WORKED.replace(b'"demo"', b'"payday"'), headers=NDJSON)
    assert r.status_code == 200 and r.json()["accepted"] == 13
    query = "/v1/platforms/payday/payouts/plan?currency=USD&min_balance=61&reference=December%20run"
    options = ("--currency", "USD", "--min-balance", "61", "--reference", "December run")
    jsonl = plan_cli(server.db_url, "payday", *options)
    csv_text = plan_cli(server.db_url, "payday", *options, "--csv")
    assert len(jsonl.splitlines()) == 2 and csv_text.startswith(b"prosumer,amount,currency,payout,reference\r\n")

    plain = admin.get(query)
    assert plain.status_code == 200 and plain.content == jsonl
    assert plain.headers["content-type"] == "application/x-ndjson" and plain.headers["x-ledger-run-seq"] == "13"
    by_accept = admin.get(query, headers={"accept": "text/csv"})
    assert by_accept.content == csv_text and by_accept.headers["content-type"].startswith("text/csv")
    assert admin.get(query + "&format=csv", headers={"accept": "application/x-ndjson"}).content == csv_text
    assert admin.get(query + "&format=jsonl", headers={"accept": "text/csv"}).content == jsonl

    once = admin.post("/v1/platforms/payday/events", content=plain.content, headers=NDJSON).json()
    twice = admin.post("/v1/platforms/payday/events", content=plain.content, headers=NDJSON).json()
    assert (once["accepted"], twice["duplicate"], twice["accepted"]) == (2, 2, 0)
    assert admin.get(query).content == b""  # paid: nothing left at or over the minimum


def test_payout_plan_bad_options_are_400_with_a_detail(admin: httpx.Client):
    base = "/v1/platforms/demo/payouts/plan?"
    for query in ("currency=USD", "min_balance=1", "currency=usd&min_balance=1", "currency=USD&min_balance=0",
                  "currency=USD&min_balance=1&at=2026-02-30T00:00:00Z", "currency=USD&min_balance=1&format=xml",
                  "currency=USD&min_balance=1&reference=" + "x" * 201, "currency=USD&min_balance=1&minimum=5"):
        r = admin.get(base + query)
        assert r.status_code == 400 and r.json()["detail"], query


# -- the service -----------------------------------------------------------------


def test_healthz_and_readyz(server: Server):
    with server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}


def test_metrics_are_prometheus_text_with_request_and_ingest_counters(admin: httpx.Client):
    admin.get("/v1/platforms/demo/balances")
    text = admin.get("/metrics").text
    assert 'peerledger_http_requests_total{method="GET",route="/v1/platforms/{platform}/balances",status="200"}' in text
    assert 'peerledger_events_accepted_total{source="http"}' in text
    assert 'peerledger_events_rejected_total{code="conflict",source="http"}' in text
    assert "peerledger_http_request_duration_seconds_bucket" in text
    assert '"demo"' not in text  # no tenant in an unauthenticated endpoint


def test_openapi_documents_bearer_security_errors_and_response_models(server: Server):
    with server.client() as c:
        doc = c.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "plt_<id>_<secret>",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    post = doc["paths"]["/v1/platforms/{platform}/events"]["post"]
    assert set(post["responses"]) == {"200", "400", "401", "403", "404", "413", "415", "503"}
    assert set(post["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/IngestResponse")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            if path.startswith("/v1/platforms/{platform}/"):
                assert {"400", "401", "403", "404"} <= set(op["responses"]), (method, path)
                assert op["security"] == [{"bearer": []}]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_dashboard_page_and_its_static_files_are_served(server: Server):
    with server.client() as c:
        page = c.get("/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for asset in ("/static/dashboard.js", "/static/dashboard.css"):
            assert c.get(asset).status_code == 200


# -- tokens on the command line ----------------------------------------------------


def test_tokens_create_prints_the_token_once_and_list_never_shows_it(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    made = cli_json(db_url, "tokens", "create", "--platform", "shop", "--role", "operator", "--label", "ops")
    assert made["token"].startswith(f"plt_{made['token_id']}_") and made["role"] == "operator"
    listed = cli(db_url, "tokens", "list", "--json")
    assert made["token"].split("_", 2)[2] not in listed.stdout
    assert json.loads(listed.stdout) == [{k: v for k, v in made.items() if k != "token"}]


def test_tokens_create_needs_all_platforms_exactly_for_admin(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    assert cli(db_url, "tokens", "create", "--platform", "shop", "--role", "admin").returncode == 2
    assert cli(db_url, "tokens", "create", "--all-platforms", "--role", "auditor").returncode == 2
    assert cli(db_url, "tokens", "create", "--platform", "Not A Platform", "--role", "auditor").returncode == 2
    assert cli(db_url, "tokens", "create", "--all-platforms", "--role", "admin").returncode == 0


def test_tokens_revoke_marks_the_token_and_an_unknown_id_is_exit_4(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    made = cli_json(db_url, "tokens", "create", "--platform", "shop", "--role", "ingest")
    assert cli(db_url, "tokens", "revoke", made["token_id"]).returncode == 0
    assert cli_json(db_url, "tokens", "list")[0]["revoked_at"] is not None
    assert cli(db_url, "tokens", "revoke", made["token_id"]).returncode == 4
    assert cli(db_url, "tokens", "revoke", "0000000000000000").returncode == 4


def test_serve_stops_its_writer_and_projector_on_sigterm(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'stop.db'}"
    with running_server(db_url, tmp_path) as srv:
        children = subprocess.run(["pgrep", "-P", str(srv.process.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 2
    time.sleep(0.5)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_serve_killed_with_sigkill_leaves_no_process_behind(tmp_path: Path):
    """Its writer and projector end with it, however it ends (issue 13: they
    used to keep running for minutes, 1.1 GiB each, as orphans)."""
    db_url = f"sqlite:///{tmp_path / 'kill.db'}"
    with running_server(db_url, tmp_path) as srv:
        children = subprocess.run(["pgrep", "-P", str(srv.process.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 2
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait()
        deadline = time.monotonic() + 10
        alive = children
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
                     and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
        assert not alive, alive


def _nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])  # field 19: nice


def test_the_writer_projector_and_deliverer_run_niced_so_reads_get_the_cpu_first(server: Server):
    """ledger/ops/runtime.py: the helper processes yield to the front,
    which answers reads, by BACKGROUND_NICE."""
    from ledger.ops.runtime import BACKGROUND_NICE

    front = server.process.pid
    children = subprocess.run(["pgrep", "-P", str(front)], capture_output=True, text=True).stdout.split()
    folding = [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(folding) == 3, children  # writer, projector, deliverer (beside multiprocessing's tracker)
    assert all(_nice(pid) == min(_nice(front) + BACKGROUND_NICE, 19) for pid in folding)
