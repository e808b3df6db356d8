"""The dashboard's flows (projections/flows.py, ledger/storage/flows.py,
ledger/ingest/projector.py, ledger/http/dashboard.py): how a sale is routed,
the follower that adds the log to the flow rows (exactly once, whatever
crashes or runs beside it), exact money, and the picture read from the rows."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import orjson
import pytest

from attribution import WorkGraph
from ledger.demo.generate import generate
from ledger.http.dashboard import FlowViews, _gap
from ledger.ingest import projector
from ledger.ingest.ingestor import ACCEPTED, Ingestor
from ledger.ingest.projector import FlowFollower
from ledger.ingest.sources import Offered, batches
from ledger.storage import flows as flow_tables
from ledger.storage.store import Store
from projections.explain import work_routes
from projections.flows import SOLD, route_split, sale_routes
from projections.periods import utc_month

AT = "2026-10-05T12:00:00Z"


def ingest(store: Store, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The accepted ones of `events`, ingested."""
    accepted = []
    ingestor = Ingestor(store)
    for batch in batches(Offered(orjson.dumps(e), "test") for e in events):
        for event, outcome in zip((orjson.loads(o.payload) for o in batch), ingestor.ingest(batch)):
            if outcome.outcome == ACCEPTED:
                accepted.append(event)
    return accepted


def expected_totals(events: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(month, currency) -> (realized, reversed, sales), from the events alone;
    a closed pool is a sale of its funding in the month of its close (one that
    nobody funded books nothing and is no sale)."""
    currency_of: dict[str, str] = {}
    funded: Counter[str] = Counter()
    totals: dict[tuple[str, str], list[int]] = {}
    for e in events:
        data = e["data"]
        if e["type"] == "pool.opened":
            currency_of[data["pool"]] = data["currency"]
        elif e["type"] == "pool.funded":
            funded[data["pool"]] += data["amount"]
        elif e["type"] == "pool.closed" and funded[data["pool"]]:
            t = totals.setdefault((utc_month(e["at"]), currency_of[data["pool"]]), [0, 0, 0])
            t[0] += funded[data["pool"]]
            t[2] += 1
        elif e["type"] == "value.realized":
            currency_of[data["value"]] = data["currency"]
            t = totals.setdefault((utc_month(e["at"]), data["currency"]), [0, 0, 0])
            t[0] += data["amount"]
            t[2] += 1
        elif e["type"] == "value.reversed":
            totals.setdefault((utc_month(e["at"]), currency_of[data["value"]]), [0, 0, 0])[1] += data["amount"]
    return {key: tuple(t) for key, t in totals.items()}  # type: ignore[misc]


def stored_totals(store: Store, platform: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {(p, c): (r, v, n) for p, c, r, v, n in flow_tables.periods(store, platform)}


def event(i: int, type_: str, **data: Any) -> dict[str, Any]:
    return {"v": 1, "id": f"e{i}", "platform": "big", "type": type_, "at": AT, "data": data}


# -- routing a sale -------------------------------------------------------------------


def test_a_sale_splits_each_recipient_by_paying_work_carol_601_as_541_via_o1_and_60_via_c2():
    """EVENTS.md's worked example, 1001 at fee 1000: @platform 100, carol 601, alice 180, bob 120.
    carol's share is 3/5 through o1 and 1/15 through c2 (9/10 and 1/10 of hers): 540.9 and 60.1,
    and the leftover unit goes to the larger remainder, o1."""
    g = WorkGraph()
    g.add_contribution("c1", {"alice": 1})
    g.add_contribution("c2", {"bob": 2, "carol": 1})
    g.add_output("o1", {"c1": 1, "c2": 1}, {"carol": 1}, 4000)
    routes = sale_routes(1001, g.vector("o1").with_fee(1000), route_split(work_routes(g, "o1")))
    assert sorted(routes) == [("@fee", "@platform", 100), ("c1", "alice", 180), ("c2", "bob", 120),
                              ("c2", "carol", 60), ("o1", "carol", 541)]


def test_links_to_other_nodes_are_what_the_kept_nodes_leave_40_20_10_30():
    """100 units; kept sold a (60) and paying x (50), 40 from a to x: a gives 20 to the
    other paying works, the other sold works give x 10, and 30 go between others."""
    assert _gap(100, {"a": 60}, {"x": 50}, {("a", "x"): 40}, "s", "p") == Counter(
        {("s:a", "p:x"): 40, ("s:a", "p:*"): 20, ("s:*", "p:x"): 10, ("s:*", "p:*"): 30})


# -- the follower -------------------------------------------------------------------------


def test_a_flow_request_brings_the_platform_to_the_log_head(db_url: str):
    with Store(db_url) as store:
        ingest(store, list(generate(3, 300, "gen")))
        doc = FlowViews(store).flows("gen", None, None)
        assert doc["seq"] == store.head("gen") == store.tracked_seq(flow_tables.tracking_name("gen")) > 250
        assert doc["realized"] == sum(n["amount"] for n in doc["nodes"] if n["column"] == 0) > 0


def test_a_follower_killed_mid_log_resumes_at_its_tracked_seq_and_counts_no_event_twice(
        db_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(projector, "FLOWS_CHUNK_EVENTS", 100)
    with Store(db_url) as store:
        accepted = ingest(store, list(generate(5, 1000, "gen", bad_fraction_ppm=5000)))
        writes = []
        add = flow_tables.add_deltas

        def add_then_die(*args: Any) -> None:
            if len(writes) == 3:
                raise KeyboardInterrupt("killed before the fourth chunk commits")
            writes.append(args[-1])
            add(*args)

        monkeypatch.setattr(flow_tables, "add_deltas", add_then_die)
        with pytest.raises(KeyboardInterrupt):
            FlowFollower(store).advance("gen")
        assert store.tracked_seq(flow_tables.tracking_name("gen")) == writes[-1] == 300
        monkeypatch.setattr(flow_tables, "add_deltas", add)
    with Store(db_url) as store:
        counted, seq = FlowFollower(store).advance("gen")
        assert (counted, seq) == (store.head("gen") - 300, store.head("gen"))
        assert stored_totals(store, "gen") == expected_totals(accepted)


def test_followers_running_at_once_count_every_event_once(db_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(projector, "FLOWS_CHUNK_EVENTS", 50)
    with Store(db_url) as store:
        accepted = ingest(store, list(generate(7, 1000, "gen")))
    stores = [Store(db_url) for _ in range(3)]
    try:
        followers = [threading.Thread(target=FlowFollower(s).advance, args=("gen",)) for s in stores]
        for t in followers:
            t.start()
        for t in followers:
            t.join()
        assert stored_totals(stores[0], "gen") == expected_totals(accepted)
    finally:
        for s in stores:
            s.close()


# -- exact money, and the picture -----------------------------------------------------------


def test_flow_units_beyond_64_bits_are_exact_two_sales_of_2_63_minus_1_make_2_64_minus_2(db_url: str):
    most = 2**63 - 1
    events = [event(1, "policy.set", platform_fee_bps=0), event(2, "prosumer.registered", prosumer="ann"),
              event(3, "contribution.recorded", work="c1", authors={"ann": 1}),
              event(4, "value.realized", value="v1", work="c1", amount=most, currency="USD"),
              event(5, "value.realized", value="v2", work="c1", amount=most, currency="USD")]
    with Store(db_url) as store:
        assert len(ingest(store, events)) == 5
        doc = FlowViews(store).flows("big", None, None)
    amounts = {n["id"]: n["amount"] for n in doc["nodes"]}
    assert doc["realized"] == amounts["s:c1"] == amounts["p:c1"] == amounts["r:ann"] == 18_446_744_073_709_551_614
    assert doc["values"] == 2


def test_the_largest_nodes_are_ranked_by_amount_not_by_text_10_before_9():
    """Decimal text sorts "9" after "10": the ranking must not."""
    events = [event(1, "policy.set", platform_fee_bps=0), event(2, "prosumer.registered", prosumer="ann")]
    for i, (work, amount) in enumerate((("w9", 9), ("w10", 10), ("w10b", 10)), start=3):
        events += [event(10 * i, "contribution.recorded", work=work, authors={"ann": 1}),
                   event(10 * i + 1, "value.realized", value=f"v{work}", work=work, amount=amount, currency="USD")]
    with Store("sqlite:///:memory:") as store:
        ingest(store, events)
        FlowFollower(store).advance("big")
        top = flow_tables.top_nodes(store, "big", "2026-10", "USD", SOLD, 2)
    assert top == {"w10": 10, "w10b": 10}
