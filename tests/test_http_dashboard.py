"""The dashboard: its data (flows, earners, rate) and the page in headless Chromium.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run), driven by
Playwright for Python; no browser is ever downloaded.  The screenshot is
saved as tests/artifacts/dashboard.png (gitignored).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import pytest
from conftest import EXAMPLES
from http_helpers import Server, make_token, running_server

from ledger.demo.generate import generate

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STREAM_EVENTS = 4000
EXPECTED = json.loads((EXAMPLES / "worked.expected.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`demo`: a known generated stream; `worked`: the spec's worked example."""
    tmp = tmp_path_factory.mktemp("http_dashboard")
    db_url = f"sqlite:///{tmp / 'ledger.db'}"
    admin = make_token(db_url, "admin", None)
    auditor = make_token(db_url, "auditor", "demo")
    with running_server(db_url, tmp) as srv:
        srv.tokens.update(admin=admin, auditor=auditor)
        with srv.client(admin) as c:
            body = b"".join(orjson.dumps(e) + b"\n" for e in generate(3, STREAM_EVENTS, "demo", bad_fraction_ppm=2000))
            assert c.post("/v1/platforms/demo/events", content=body,
                          headers={"content-type": "application/x-ndjson"}).status_code == 200
            worked = (EXAMPLES / "worked.jsonl").read_bytes().replace(b'"demo"', b'"worked"')
            assert c.post("/v1/platforms/worked/events", content=worked,
                          headers={"content-type": "application/x-ndjson"}).status_code == 200
        yield srv


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.tokens["admin"]) as c:
        yield c


def _amounts(flows: dict) -> dict[str, int]:
    return {n["id"]: n["amount"] for n in flows["nodes"]}


def test_flows_of_the_worked_example_end_at_each_recipient_s_allocation(admin: httpx.Client):
    flows = admin.get("/v1/platforms/worked/flows?period=2026-10&currency=USD").json()
    amounts = _amounts(flows)
    allocation = EXPECTED["explain"]["v1"]["allocation"]
    assert amounts["s:o1"] == flows["realized"] == 1001
    assert {r: amounts[f"r:{r}"] for r in allocation} == allocation
    # carol is paid as o1's author and, through the remixed c2, as one of its authors
    assert {(l["source"], l["target"]) for l in flows["links"] if l["target"] == "r:carol"} == {
        ("p:o1", "r:carol"), ("p:c2", "r:carol")}
    assert amounts["p:@fee"] == allocation["@platform"]


def test_flows_after_a_takedown_send_the_retracted_work_s_part_to_unattributed(admin: httpx.Client):
    flows = admin.get("/v1/platforms/worked/flows?period=2026-11&currency=USD").json()
    links = {(l["source"], l["target"]): l["amount"] for l in flows["links"]}
    assert links[("p:c2", "r:@unattributed")] == _amounts(flows)["r:@unattributed"] > 0


def test_every_flow_column_sums_to_the_value_realized_in_the_period(admin: httpx.Client):
    available = admin.get("/v1/platforms/demo/flows").json()["available"]
    assert len(available) > 3
    for a in available:
        flows = admin.get(f"/v1/platforms/demo/flows?period={a['period']}&currency={a['currency']}").json()
        for column in (0, 1, 2):
            assert sum(n["amount"] for n in flows["nodes"] if n["column"] == column) == a["realized"]
        into: dict[str, int] = defaultdict(int)
        out_of: dict[str, int] = defaultdict(int)
        for link in flows["links"]:
            out_of[link["source"]] += link["amount"]
            into[link["target"]] += link["amount"]
        for node in flows["nodes"]:
            assert node["amount"] == (out_of[node["id"]] if node["column"] == 0 else into[node["id"]])


def test_flow_recipients_get_exactly_their_statement_earnings(admin: httpx.Client):
    flows = admin.get("/v1/platforms/demo/flows").json()
    for node in flows["nodes"]:
        if node["kind"] == "prosumer":
            statement = admin.get(f"/v1/platforms/demo/prosumers/{node['label']}/statement"
                                  f"?period={flows['period']}").json()
            earned = sum(p["earned"] for p in statement["periods"] if p["currency"] == flows["currency"])
            assert node["amount"] == earned, node


def test_top_earners_are_ranked_by_earnings_of_the_period(admin: httpx.Client):
    flows = admin.get("/v1/platforms/demo/flows").json()
    doc = admin.get(f"/v1/platforms/demo/earners?period={flows['period']}&currency={flows['currency']}&limit=5").json()
    earned = [e["earned"] for e in doc["earners"]]
    assert len(earned) == 5 and earned == sorted(earned, reverse=True)
    assert all(e["net"] == e["earned"] + e["reversed"] - e["paid"] for e in doc["earners"])


def test_ingest_rate_counts_the_accepted_and_rejected_events_of_recent_minutes(admin: httpx.Client):
    minutes = admin.get("/v1/platforms/demo/ingest-rate?minutes=10").json()["minutes"]
    assert len(minutes) == 10
    assert sum(m["accepted"] for m in minutes) == len(admin.get("/v1/platforms/demo/log?limit=10000").json())
    assert sum(m["rejected"] for m in minutes) == len(admin.get("/v1/platforms/demo/rejects").json()) > 0


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_dashboard_renders_the_flow_picture_and_top_earners(server: Server, admin: httpx.Client, browser):
    flows = admin.get("/v1/platforms/demo/flows").json()
    earners = admin.get(f"/v1/platforms/demo/earners?period={flows['period']}&currency={flows['currency']}"
                        "&limit=10").json()["earners"]
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        page.goto(server.url + "/dashboard")
        page.fill("#token", server.tokens["auditor"])
        page.click("#login-form button")
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)

        drawn = page.eval_on_selector_all("#flow g.node", "gs => gs.map(g => g.dataset.id)")
        assert sorted(drawn) == sorted(n["id"] for n in flows["nodes"])
        assert page.locator("#flow path.link").count() == len(flows["links"])
        labels = page.text_content("#flow") or ""
        assert "@platform" in labels and "platform fee" in labels
        rows = page.eval_on_selector_all("#earners tbody tr", "trs => trs.map(tr => tr.cells[0].textContent)")
        assert rows == [e["prosumer"] for e in earners]
        assert page.locator("#rejects tbody tr").count() > 0
        assert page.locator("#rate rect.bar-accepted").count() == 60

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"dashboard screenshot: {shot}")
        assert shot.stat().st_size > 10_000

        page.reload()  # the token is remembered for the tab's session
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        assert page.is_hidden("#login")
    finally:
        page.close()


def test_dashboard_refuses_a_bad_token_and_asks_again(server: Server, browser):
    page = browser.new_page()
    try:
        page.goto(server.url + "/dashboard")
        page.fill("#token", "plt_0000000000000000_" + "x" * 43)
        page.click("#login-form button")
        page.wait_for_function("document.getElementById('login-error').textContent.length > 0", timeout=10_000)
        assert page.is_visible("#login") and page.is_hidden("#board")
        assert page.evaluate("sessionStorage.getItem('peerledger.token')") is None
    finally:
        page.close()
