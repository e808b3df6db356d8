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
EXPECTED_POOLS = json.loads((EXAMPLES / "pools.expected.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`demo`: a known generated stream; `worked`: the spec's worked example;
    `pools`: the spec's pools fixture and a pool left open."""
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
            still_open = [{"v": 1, "id": "o1", "platform": "pools", "type": "pool.opened", "at": "2026-12-05T00:00:00Z",
                           "data": {"pool": "O", "currency": "USD", "method": "user_centric"}},
                          {"v": 1, "id": "o2", "platform": "pools", "type": "pool.funded", "at": "2026-12-05T00:00:00Z",
                           "data": {"pool": "O", "subscriber": "s1", "amount": 5}}]
            body = (EXAMPLES / "pools.jsonl").read_bytes() + b"".join(orjson.dumps(e) + b"\n" for e in still_open)
            assert c.post("/v1/platforms/pools/events", content=body,
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


def _balanced(flows: dict) -> None:
    """Every column sums to the value realized, and every node passes on what it gets."""
    for column in (0, 1, 2):
        assert sum(n["amount"] for n in flows["nodes"] if n["column"] == column) == flows["realized"]
    into: dict[str, int] = defaultdict(int)
    out_of: dict[str, int] = defaultdict(int)
    for link in flows["links"]:
        out_of[link["source"]] += link["amount"]
        into[link["target"]] += link["amount"]
    for node in flows["nodes"]:
        assert node["amount"] == (out_of[node["id"]] if node["column"] == 0 else into[node["id"]])
        if node["column"] == 1:
            assert out_of[node["id"]] == into[node["id"]]


def test_a_closed_pool_is_realized_in_the_period_flows_of_its_close(admin: httpx.Client):
    """P closed 2026-11-30T23:59:59Z: November realizes its 101 through the pool's works;
    U closed 2026-12-01: December realizes 101 and reverses U's refund of 50."""
    nov = admin.get("/v1/platforms/pools/flows?period=2026-11&currency=USD").json()
    assert (nov["realized"], nov["values"], nov["reversed"]) == (101, 1, 0)
    amounts = _amounts(nov)
    assert amounts["s:@pool:P"] == 101 and amounts["p:@pool:P"] == 91 and amounts["p:@fee"] == 10
    assert {r: amounts[f"r:{r}"] for r in ("@platform", "alice", "bob", "carol")} == EXPECTED_POOLS["explain"]["P"][
        "allocation"]
    assert [n["label"] for n in nov["nodes"] if n["id"] == "s:@pool:P"] == ["pool P"]
    _balanced(nov)
    dec = admin.get("/v1/platforms/pools/flows?period=2026-12&currency=USD").json()
    assert (dec["realized"], dec["reversed"]) == (101, 50)


def test_pools_are_listed_newest_first(admin: httpx.Client):
    pools = admin.get("/v1/platforms/pools/pools").json()["pools"]
    assert [(p["pool"], p["method"], p["funded"], p["closed"]) for p in pools] == [
        ("O", "user_centric", 5, False), ("E", "user_centric", 7, True), ("U", "user_centric", 101, True),
        ("P", "pro_rata", 101, True)]


def test_a_closed_pool_s_view_compares_the_two_methods(admin: httpx.Client):
    """P booked pro_rata {@platform 10, alice 5, bob 82, carol 4}; user_centric would give
    alice 28, bob 36, carol 27: Gini 4/7 against 6/91, two prosumers gain, one loses."""
    pool = admin.get("/v1/platforms/pools/pools/P").json()
    assert (pool["closed"], pool["funded"], pool["funders"], pool["reversed"]) == (True, 101, 3, 0)
    c = pool["comparison"]
    assert c["prosumers"] == 3
    assert (c["pro_rata"]["gini"]["exact"], c["user_centric"]["gini"]["exact"]) == ("4/7", "6/91")
    assert c["under_other_method"] == {"gain": 2, "lose": 1, "same": 0}
    assert c["recipients"] == [
        {"recipient": "bob", "booked": 82, "alternative": 36}, {"recipient": "alice", "booked": 5, "alternative": 28},
        {"recipient": "carol", "booked": 4, "alternative": 27},
        {"recipient": "@platform", "booked": 10, "alternative": 10}]
    assert c["works"] == [{"work": "c2", "booked": 91, "alternative": 40}, {"work": "o1", "booked": 10, "alternative": 61}]


def test_a_closed_pool_s_flows_go_through_its_works_to_what_was_booked(admin: httpx.Client):
    """@platform's 10 are split over the works by stage 1 (91 : 10 → 9 and 1); o1's
    authors carol 4 and, through c1, alice 5: o1 passes on 10 and c2 91 (bob 82 + 9)."""
    pool = admin.get("/v1/platforms/pools/pools/P").json()
    pool["realized"] = 101
    _balanced(pool)
    links = {(link["source"], link["target"]): link["amount"] for link in pool["links"]}
    assert links == {("s:@pool:P", "p:c2"): 91, ("s:@pool:P", "p:o1"): 10, ("p:c2", "r:bob"): 82,
                     ("p:c2", "r:@platform"): 9, ("p:o1", "r:@platform"): 1, ("p:o1", "r:alice"): 5,
                     ("p:o1", "r:carol"): 4}
    nobody = admin.get("/v1/platforms/pools/pools/E").json()  # nothing used: all but the fee unattributed
    assert {(link["source"], link["target"]): link["amount"] for link in nobody["links"]} == {
        ("s:@pool:E", "p:*"): 7, ("p:*", "r:@platform"): 1, ("p:*", "r:@unattributed"): 6}


def test_an_open_pool_shows_its_funding_and_an_unknown_one_is_404(admin: httpx.Client):
    pool = admin.get("/v1/platforms/pools/pools/O").json()
    assert (pool["closed"], pool["funded"], pool["funders"], pool["nodes"], pool["comparison"]) == (
        False, 5, 1, [], None)
    assert admin.get("/v1/platforms/pools/pools/nope").status_code == 404


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
        # The newest closed pool of the platform: its flows and the two methods side by side.
        listed = admin.get("/v1/platforms/demo/pools").json()["pools"]
        shown = next(p for p in listed if p["closed"])["pool"]
        pool = admin.get(f"/v1/platforms/demo/pools/{shown}").json()
        assert page.is_visible("#pools") and page.input_value("#pool") == shown
        page.wait_for_function("document.querySelectorAll('#pool-flow g.node').length > 0", timeout=10_000)
        drawn = page.eval_on_selector_all("#pool-flow g.node", "gs => gs.map(g => g.dataset.id)")
        assert sorted(drawn) == sorted(n["id"] for n in pool["nodes"])
        rows = page.eval_on_selector_all("#pool-recipients tbody tr", "trs => trs.map(tr => tr.cells[0].textContent)")
        assert rows == [r["recipient"] for r in pool["comparison"]["recipients"]]
        assert page.locator("#pool-methods tbody tr").count() == 3  # each method, and who gains or loses

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
