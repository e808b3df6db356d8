"""Tokens and tenancy over HTTP: the full role × endpoint × platform matrix.

Platforms: `demo` (the tokens' own), `other` (exists, another tenant) and
`ghost` (exists nowhere).  Every cell is one parametrized test that asserts
the status, and for a hidden platform that the 404 is byte for byte the
answer to an unknown route.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from conftest import EXAMPLES
from http_helpers import BASE_ENV, Server, make_token, running_server

from ledger.http.tokens import OPERATOR_EVENT_TYPES, revoke_token
from ledger.storage.store import Store

OWN, FOREIGN, GHOST = "demo", "other", "ghost"
PLATFORMS = (OWN, FOREIGN, GHOST)
TOKENS = ("ingest", "operator", "auditor", "admin", "revoked", "unknown", "none")
UNKNOWN_TOKEN = "plt_0123456789abcdef_" + "A" * 43


class Endpoint:
    def __init__(self, name: str, method: str, path: str, *, kind: str, needs_data: bool = False) -> None:
        self.name, self.method, self.path, self.kind, self.needs_data = name, method, path, kind, needs_data


ENDPOINTS = [
    Endpoint("post-events", "POST", "/v1/platforms/{p}/events", kind="write"),
    Endpoint("balances", "GET", "/v1/platforms/{p}/balances", kind="read", needs_data=True),
    Endpoint("balances-as-of", "GET", "/v1/platforms/{p}/balances?as_of=9", kind="read", needs_data=True),
    Endpoint("digest", "GET", "/v1/platforms/{p}/digest", kind="read", needs_data=True),
    Endpoint("explain", "GET", "/v1/platforms/{p}/values/v1/explain", kind="read", needs_data=True),
    Endpoint("statement", "GET", "/v1/platforms/{p}/prosumers/carol/statement?period=2026-10", kind="read", needs_data=True),
    Endpoint("rejects", "GET", "/v1/platforms/{p}/rejects", kind="read"),
    Endpoint("log", "GET", "/v1/platforms/{p}/log?from_seq=1&limit=5", kind="read", needs_data=True),
    Endpoint("flows", "GET", "/v1/platforms/{p}/flows", kind="read"),
    Endpoint("earners", "GET", "/v1/platforms/{p}/earners?period=2026-10&currency=USD", kind="read"),
    Endpoint("ingest-rate", "GET", "/v1/platforms/{p}/ingest-rate?minutes=5", kind="read"),
    Endpoint("checkpoint", "GET", "/v1/platforms/{p}/checkpoint", kind="read", needs_data=True),
    Endpoint("checkpoints", "GET", "/v1/platforms/{p}/checkpoints", kind="read", needs_data=True),
    Endpoint("inclusion", "GET", "/v1/platforms/{p}/proofs/inclusion?seq=1", kind="read", needs_data=True),
    Endpoint("consistency", "GET", "/v1/platforms/{p}/proofs/consistency?first=1", kind="read", needs_data=True),
    Endpoint("payouts-plan", "GET", "/v1/platforms/{p}/payouts/plan?currency=USD&min_balance=1", kind="pay"),
    Endpoint("whoami", "GET", "/v1/whoami", kind="global"),
    Endpoint("platforms", "GET", "/v1/platforms", kind="global"),
    Endpoint("healthz", "GET", "/healthz", kind="public"),
    Endpoint("readyz", "GET", "/readyz", kind="public"),
    Endpoint("metrics", "GET", "/metrics", kind="public"),
    Endpoint("openapi", "GET", "/openapi.json", kind="public"),
    Endpoint("dashboard", "GET", "/dashboard", kind="public"),
]


def expected_status(token: str, platform: str, ep: Endpoint) -> int:
    """The rule, in the order the service applies it."""
    if ep.kind == "public":
        return 200
    if token in ("revoked", "unknown", "none"):
        return 401
    if ep.kind == "global":
        return 200
    if token != "admin" and platform != OWN:
        return 404  # another tenant's (or nobody's) platform: not a hint that it exists
    if ep.kind == "write":
        return 200 if token in ("ingest", "operator", "admin") else 403
    if ep.kind == "pay":
        return 200 if token in ("operator", "admin") else 403
    if token == "ingest":
        return 403
    if platform == GHOST and ep.needs_data:
        return 404  # a platform without events: not an empty answer
    return 200


def _worked_lines(platform: str) -> bytes:
    """The spec's fixture (platform `demo`) moved to `platform`."""
    return (EXAMPLES / "worked.jsonl").read_bytes().replace(b'"platform": "demo"', f'"platform": "{platform}"'.encode())


def _checkpoint(db_url: str, platform: str, key_file: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ledger.cli", "checkpoint", "--platform", platform, "--db", db_url,
                        "--key-file", str(key_file)], capture_output=True, text=True, env=BASE_ENV, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http_auth")
    db_url = f"sqlite:///{tmp / 'ledger.db'}"
    tokens = {role: make_token(db_url, role, None if role == "admin" else OWN)
              for role in ("ingest", "operator", "auditor", "admin")}
    tokens["revoked"] = make_token(db_url, "auditor", OWN)
    with Store(db_url) as store:
        assert revoke_token(store, tokens["revoked"][4:20])
    tokens["unknown"] = UNKNOWN_TOKEN
    with running_server(db_url, tmp) as srv:
        srv.tokens = tokens
        with srv.client(tokens["admin"]) as admin:
            for platform in (OWN, FOREIGN):
                r = admin.post(f"/v1/platforms/{platform}/events", content=_worked_lines(platform),
                               headers={"content-type": "application/x-ndjson"})
                assert r.status_code == 200 and r.json()["accepted"] == 13, r.text
        key_file = tmp / "signing-key.pem"
        subprocess.run([sys.executable, "-m", "ledger.cli", "keys", "init", "--key-file", str(key_file)],
                       check=True, capture_output=True, env=BASE_ENV, timeout=60)
        for platform in (OWN, FOREIGN):
            _checkpoint(db_url, platform, key_file)
        yield srv


_cell = 0


@pytest.fixture(scope="module")
def anonymous(server: Server) -> Iterator[httpx.Client]:
    """One connection for the whole matrix (a client per request costs ~0.1 s)."""
    with server.client() as client:
        yield client


def _request(client: httpx.Client, server: Server, token: str, platform: str, ep: Endpoint) -> httpx.Response:
    global _cell
    headers = {} if token == "none" else {"Authorization": f"Bearer {server.tokens[token]}"}
    path = ep.path.replace("{p}", platform)
    if ep.method == "GET":
        return client.get(path, headers=headers)
    _cell += 1
    events = [] if platform == GHOST else [{
        "v": 1, "id": f"matrix-{_cell}", "platform": platform, "type": "policy.set",
        "at": "2026-12-01T00:00:00Z", "data": {"platform_fee_bps": 1000}}]
    return client.post(path, json=events, headers=headers)


# Endpoints without a platform in their path get one column, not three.
CELLS = [(token, ep, platform) for token in TOKENS for ep in ENDPOINTS for platform in PLATFORMS
         if ep.kind not in ("public", "global") or platform == OWN]


@pytest.mark.parametrize(("token", "ep", "platform"), CELLS,
                         ids=[f"{t}-{e.name}-{p}" for t, e, p in CELLS])
def test_role_endpoint_platform_matrix(server: Server, anonymous: httpx.Client, token: str, ep: Endpoint,
                                       platform: str):
    r = _request(anonymous, server, token, platform, ep)
    want = expected_status(token, platform, ep)
    assert r.status_code == want, (token, ep.name, platform, r.status_code, r.text[:300])
    if want == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    if want == 404 and token != "admin":
        unknown_route = anonymous.get("/v1/no-such-route")
        assert (r.status_code, r.content) == (unknown_route.status_code, unknown_route.content)


def test_operator_post_with_another_event_type_is_refused_whole(server: Server):
    events = [
        {"v": 1, "id": "op-ok", "platform": OWN, "type": "policy.set", "at": "2026-12-01T00:00:00Z",
         "data": {"platform_fee_bps": 900}},
        {"v": 1, "id": "op-sale", "platform": OWN, "type": "value.realized", "at": "2026-12-01T00:00:00Z",
         "data": {"value": "op-v", "work": "o1", "amount": 5, "currency": "USD"}},
    ]
    with server.client(server.tokens["operator"]) as op:
        head_before = len(op.get(f"/v1/platforms/{OWN}/log?limit=10000").json())
        r = op.post(f"/v1/platforms/{OWN}/events", json=events)
        assert r.status_code == 403 and "value.realized" in r.json()["detail"]
        assert len(op.get(f"/v1/platforms/{OWN}/log?limit=10000").json()) == head_before
        r = op.post(f"/v1/platforms/{OWN}/events", json=events[:1])
        assert r.status_code == 200 and r.json()["accepted"] == 1


@pytest.mark.parametrize("kind", ["payout.issued", "policy.set", "work.retracted", "work.reinstated",
                                  "work.reassigned"])
def test_operator_may_post_payouts_policy_and_work_disputes(server: Server, kind: str):
    data = {"payout.issued": {"payout": f"p-{kind}", "prosumer": "alice", "amount": 1, "currency": "USD"},
            "policy.set": {"platform_fee_bps": 1000},
            "work.retracted": {"work": "c1"}, "work.reinstated": {"work": "c2"},
            "work.reassigned": {"work": "c1", "authors": {"alice": 1}}}[kind]
    event = {"v": 1, "id": f"op-{kind}", "platform": OWN, "type": kind, "at": "2026-12-02T00:00:00Z", "data": data}
    with server.client(server.tokens["operator"]) as op:
        r = op.post(f"/v1/platforms/{OWN}/events", json=[event])
    assert r.status_code == 200, r.text
    assert r.json()["results"][0].get("code") != "invalid", r.text


def test_operator_may_open_and_close_pools_but_not_fund_them_or_record_usage():
    assert {"pool.opened", "pool.closed"} <= OPERATOR_EVENT_TYPES
    assert not {"pool.funded", "usage.recorded"} & OPERATOR_EVENT_TYPES


@pytest.mark.parametrize("kind", ["pool.funded", "usage.recorded"])
def test_operator_post_of_a_pool_s_funding_or_usage_is_refused_whole(server: Server, kind: str):
    data = {"pool.funded": {"pool": "P", "subscriber": "s1", "amount": 5},
            "usage.recorded": {"pool": "P", "subscriber": "s1", "uses": {"c1": 1}}}[kind]
    event = {"v": 1, "id": f"op-{kind}", "platform": OWN, "type": kind, "at": "2026-12-02T00:00:00Z", "data": data}
    with server.client(server.tokens["operator"]) as op:
        head_before = len(op.get(f"/v1/platforms/{OWN}/log?limit=10000").json())
        r = op.post(f"/v1/platforms/{OWN}/events", json=[event])
        assert r.status_code == 403 and kind in r.json()["detail"]
        assert len(op.get(f"/v1/platforms/{OWN}/log?limit=10000").json()) == head_before


def test_a_revoked_token_is_refused_at_its_next_request(server: Server):
    token = make_token(server.db_url, "auditor", OWN)
    with server.client(token) as c:
        assert c.get(f"/v1/platforms/{OWN}/balances").status_code == 200
        with Store(server.db_url) as store:
            assert revoke_token(store, token[4:20])
        assert c.get(f"/v1/platforms/{OWN}/balances").status_code == 401


def test_a_token_with_a_wrong_secret_is_unknown(server: Server):
    token = server.tokens["admin"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with server.client(forged) as c:
        assert c.get("/v1/whoami").status_code == 401


def test_only_the_token_hash_is_stored(server: Server):
    with Store(server.db_url) as store:
        rows = store.query("SELECT * FROM peerledger_tokens")
    stored = b"".join(repr(r).encode() for r in rows)
    for token in server.tokens.values():
        assert token.encode() not in stored and token[21:].encode() not in stored


def test_whoami_and_platforms_show_the_token_s_scope(server: Server):
    with server.client(server.tokens["auditor"]) as c:
        assert c.get("/v1/whoami").json()["platform"] == OWN
        assert c.get("/v1/platforms").json() == {"platforms": [OWN]}
    with server.client(server.tokens["admin"]) as c:
        assert c.get("/v1/whoami").json()["role"] == "admin"
        assert {OWN, FOREIGN} <= set(c.get("/v1/platforms").json()["platforms"])
