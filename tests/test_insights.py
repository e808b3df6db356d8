"""Insights (projections/insights.py, `peerledger insights`): every metric on
small hand-written streams with the figures worked out by hand, then the
whole report rebuilt from a real SQLite log, the charts, and the demo."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest

from attribution import PLATFORM, UNATTRIBUTED
from ledger.cli.insights import InsightsReplay, replayed_insights, summary_table
from ledger.demo.generate import generate
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered, batches
from ledger.storage.store import LogEntry, Store
from projections.insights import (
    InsightsFold,
    PoolSplit,
    gini,
    lorenz_points,
    money_doc,
    student_t_quantile,
    top_share,
)

JAN, FEB, MAR = "2026-01-10T12:00:00Z", "2026-02-10T12:00:00Z", "2026-03-10T12:00:00Z"
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}


def entry(seq: int, event: dict[str, Any]) -> LogEntry:
    return LogEntry(seq, event["type"], orjson.dumps(event))


def in_memory(platform: str) -> InsightsReplay:
    """Insights over a state in an in-memory SQLite database (freed with it)."""
    return InsightsReplay(Store("sqlite:///:memory:", durable=False), platform)


class Stream:
    """A hand-written platform log: events in order, ids e1, e2, …"""

    def __init__(self, platform: str = "t") -> None:
        self.platform = platform
        self.events: list[dict[str, Any]] = []

    def add(self, type_: str, at: str, **data: Any) -> Stream:
        self.events.append({"v": 1, "id": f"e{len(self.events) + 1}", "platform": self.platform,
                            "type": type_, "at": at, "data": data})
        return self

    def fold(self) -> InsightsFold:
        return in_memory(self.platform).feed(entry(seq, event) for seq, event in enumerate(self.events, start=1))


def worked(fee_bps: int = 1000) -> Stream:
    """EVENTS.md's worked example: c1 {alice: 1}, c2 {bob: 2, carol: 1},
    o1 = {c1: 1, c2: 1} by carol passing 4000 bps upstream."""
    s = Stream().add("policy.set", JAN, platform_fee_bps=fee_bps)
    for p in ("alice", "bob", "carol", "dave"):
        s.add("prosumer.registered", JAN, prosumer=p)
    s.add("contribution.recorded", JAN, work="c1", authors={"alice": 1})
    s.add("contribution.recorded", JAN, work="c2", authors={"bob": 2, "carol": 1})
    s.add("output.composed", JAN, work="o1", components={"c1": 1, "c2": 1}, authors={"carol": 1}, upstream_bps=4000)
    return s


def money(minor: int, remainder: str = "0/1") -> dict[str, Any]:
    return {"minor": minor, "remainder": remainder}


def depths(flow: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {d["depth"]: money(d["minor"], d["remainder"]) for d in flow["on_outputs_by_depth"]}


def usd(report: dict[str, Any]) -> dict[str, Any]:
    return report["overall"]["currencies"]["USD"]


# -- the recombination dividend ------------------------------------------------------


def test_worked_example_split_is_three_fifths_at_depth_0_and_two_fifths_at_depth_1():
    """o1 keeps 1 - 4000/10000 = 3/5 for carol (depth 0); 2/5 goes on to c1 and c2 (depth 1)."""
    split = worked().fold().depth_split("o1")
    assert split.shares() == (Fraction(3, 5), Fraction(2, 5))
    assert split.unattributed_share() == 0 and split.sold_kind == "output"


def test_sale_of_1001_on_o1_at_fee_1000_gives_platform_100_1_authors_540_54_dividend_360_36():
    """@platform 1001/10 = 100.1; the rest 900.9: carol as o1's author 900.9 · 3/5 = 540.54,
    upstream 900.9 · 2/5 = 360.36 = the dividend, 360.36 / 1001 = 9/25 of the net."""
    report = worked().add("value.realized", JAN, value="v1", work="o1", amount=1001, currency="USD").fold().report()
    flow = usd(report)["flow"]
    assert flow["platform"] == money(100, "1/10")
    assert depths(flow) == {0: money(540, "27/50"), 1: money(360, "9/25")}
    assert flow["recombination_dividend"] == money(360, "9/25")
    assert flow["dividend_share_of_net"] == {"exact": "9/25", "decimal": "0.360000"}
    assert flow["direct_on_contributions"] == money(0) and flow["unattributed"] == money(0)


def test_outputs_of_outputs_pass_value_two_levels_down_500_300_200():
    """o2 = {o1: 1} by dave passing 5000 bps; a sale of 1000 at fee 0: dave 500 at depth 0,
    carol 500 · 3/5 = 300 at depth 1 (o1's cut), c1 and c2 500 · 2/5 = 200 at depth 2."""
    s = worked(fee_bps=0)
    s.add("output.composed", JAN, work="o2", components={"o1": 1}, authors={"dave": 1}, upstream_bps=5000)
    report = s.add("value.realized", JAN, value="v1", work="o2", amount=1000, currency="USD").fold().report()
    assert depths(usd(report)["flow"]) == {0: money(500), 1: money(300), 2: money(200)}
    assert usd(report)["flow"]["recombination_dividend"] == money(500)


def test_a_work_reached_at_two_depths_gets_each_paths_mass_at_its_own_depth_0_75_25():
    """o3 = {c1: 1, o1': 1}, no authors, 10000 bps; o1' = {c1: 1} by carol at 5000 bps.
    100 on o3: c1 directly 50 (depth 1), carol 25 via o1' (depth 1), c1 again 25 via o1'
    (depth 2): alice's 75 is split 50 / 25 between depths 1 and 2."""
    s = Stream().add("prosumer.registered", JAN, prosumer="alice").add("prosumer.registered", JAN, prosumer="carol")
    s.add("contribution.recorded", JAN, work="c1", authors={"alice": 1})
    s.add("output.composed", JAN, work="o1", components={"c1": 1}, authors={"carol": 1}, upstream_bps=5000)
    s.add("output.composed", JAN, work="o3", components={"c1": 1, "o1": 1}, upstream_bps=10_000)
    insights = s.add("value.realized", JAN, value="v1", work="o3", amount=100, currency="USD").fold()
    assert insights.depth_split("o3").shares() == (0, Fraction(3, 4), Fraction(1, 4))
    assert depths(usd(insights.report())["flow"]) == {0: money(0), 1: money(75), 2: money(25)}


def test_value_entering_a_retracted_work_is_unattributed_not_dividend_600_200_200():
    """c1 retracted, 1000 on o1 at fee 0: carol 600 (depth 0), c2 200 (depth 1), and c1's
    1000 · 2/5 · 1/2 = 200 to @unattributed, booked as such."""
    s = worked(fee_bps=0).add("work.retracted", JAN, work="c1")
    report = s.add("value.realized", JAN, value="v1", work="o1", amount=1000, currency="USD").fold().report()
    block = usd(report)
    assert depths(block["flow"]) == {0: money(600), 1: money(200)}
    assert block["flow"]["unattributed"] == money(200)
    assert block["fairness"]["unattributed_booked_minor"] == 200
    assert block["fairness"]["unattributed_share"]["exact"] == "1/5"


def test_a_sale_of_a_contribution_is_direct_value_300_at_fee_1000_is_30_and_270():
    report = worked().add("value.realized", JAN, value="v1", work="c1", amount=300, currency="USD").fold().report()
    flow = usd(report)["flow"]
    assert flow["platform"] == money(30) and flow["direct_on_contributions"] == money(270)
    assert flow["on_outputs_by_depth"] == [] and flow["recombination_dividend"] == money(0)


def test_a_reversal_books_minus_its_share_of_the_split_fixed_at_realize_time_in_its_own_month():
    """1001 on o1 in January; c1 retracted in February, then 500 refunded in February.
    February: -50 platform, -500 · 9/10 · 3/5 = -270 at depth 0, -180 at depth 1, nothing
    unattributed (the split is January's).  Overall net 501: dividend 360.36 - 180 = 180.36."""
    s = worked().add("value.realized", JAN, value="v1", work="o1", amount=1001, currency="USD")
    s.add("work.retracted", FEB, work="c1").add("value.reversed", FEB, value="v1", amount=500)
    report = s.fold().report()
    jan, feb = (m["currencies"]["USD"] for m in report["months"])
    assert (jan["realized_minor"], jan["reversed_minor"]) == (1001, 0)
    assert (feb["realized_minor"], feb["reversed_minor"], feb["net_minor"]) == (0, 500, -500)
    assert feb["flow"]["platform"] == money(-50)
    assert depths(feb["flow"]) == {0: money(-270), 1: money(-180)}
    assert feb["flow"]["unattributed"] == money(0)
    assert usd(report)["flow"]["recombination_dividend"] == money(180, "9/25")
    assert usd(report)["flow"]["dividend_share_of_net"]["exact"] == "9/25"  # 180.36 / 501


def test_money_is_rounded_down_with_the_exact_remainder_also_when_negative():
    assert money_doc(Fraction(7, 2)) == money(3, "1/2")
    assert money_doc(Fraction(-7, 2)) == money(-4, "1/2")
    assert money_doc(Fraction(0)) == money(0)


def _reference_split(graph: Any, work: str) -> tuple[dict[int, Fraction], Fraction]:
    """EVENTS.md §3 flow, literally recursive over paths, tallied by path depth."""
    by_depth: dict[int, Fraction] = defaultdict(Fraction)
    unattributed = [Fraction(0)]

    def flow(node: str, share: Fraction, depth: int) -> None:
        if share == 0:
            return
        if graph.is_retracted(node):
            unattributed[0] += share
            return
        if graph.kind(node) == "contribution":
            by_depth[depth] += share
            return
        u = Fraction(graph.upstream_bps(node), 10_000)
        if graph.authors(node):
            by_depth[depth] += share * (1 - u)
        components = graph.components(node)
        for c, k in components.items():
            flow(c, share * u * k / sum(components.values()), depth + 1)

    flow(work, Fraction(1), 0)
    return {d: s for d, s in by_depth.items() if s}, unattributed[0]


def test_depth_splits_equal_the_spec_recursion_on_random_graphs_through_retractions_and_reassignments():
    rng = random.Random(5)
    s = Stream()
    for p in ("a", "b", "c"):
        s.add("prosumer.registered", JAN, prosumer=p)
    works: list[str] = []
    retracted: set[str] = set()
    replay = in_memory("t")
    insights = replay.feed(entry(seq, event) for seq, event in enumerate(s.events, start=1))
    graph = insights.state.graph
    seq = len(s.events)
    for i in range(200):
        r = rng.random()
        if r < 0.3 or len(works) < 3:
            event = ("contribution.recorded", {"work": f"c{i}", "authors": {rng.choice("abc"): rng.randint(1, 3)}})
            works.append(f"c{i}")
        elif r < 0.75:
            upstream = rng.choice((0, 2500, 5000, 7777, 10_000))
            authors = {} if upstream == 10_000 and rng.random() < 0.5 else {rng.choice("abc"): 1}
            components = {w: rng.randint(1, 4) for w in rng.sample(works, rng.randint(1, min(4, len(works))))}
            event = ("output.composed", {"work": f"o{i}", "components": components, "authors": authors,
                                         "upstream_bps": upstream})
            works.append(f"o{i}")
        elif r < 0.85:
            w = rng.choice(works)
            event = ("work.reinstated" if w in retracted else "work.retracted", {"work": w})
            retracted ^= {w}
        else:
            w = rng.choice([w for w in works if w.startswith("c")])
            event = ("work.reassigned", {"work": w, "authors": {rng.choice("abc"): 2}})
        seq += 1
        replay.feed([entry(seq, {"v": 1, "id": f"r{i}", "platform": "t", "type": event[0], "at": JAN,
                                 "data": event[1]})])
        for w in rng.sample(works, min(3, len(works))):  # queried repeatedly: cached leaves are exercised
            split = insights.depth_split(w)
            expected_depths, expected_unattributed = _reference_split(graph, w)
            assert {d: x for d, x in enumerate(split.shares()) if x} == expected_depths, w
            assert split.unattributed_share() == expected_unattributed == graph.vector(w).share(UNATTRIBUTED)


def test_on_a_generated_stream_every_unit_is_accounted_and_splits_match_the_share_vectors():
    """Per (month, currency): realized - reversed == platform + unattributed + direct + all
    depths, exactly; per value: the split's fee and unattributed parts are the shares'."""
    replay = in_memory("gen")
    insights = replay.feed(entry(seq, event) for seq, event in enumerate(generate(3, 4000, "gen"), start=1))
    checked = 0
    for month in insights.months():
        for currency in ("EUR", "JPY", "USD"):
            f = insights.flows(month, currency)
            assert f.realized_minor - f.reversed_minor == f.platform + f.unattributed + f.direct + sum(f.by_depth)
            checked += f.values_realized
    values = [v for (v,) in replay.target.query("SELECT value FROM peerledger_values WHERE platform = 'gen'")]
    assert checked == len(values) > 1000
    pools = 0
    for value in values:
        record = insights.state.value(value)
        assert record is not None
        if not record.amount_minor:
            continue  # a pool nobody funded: no shares
        shares = insights.state.shares(record.work, record.vector_version, record.fee_bps)
        split, rest = insights.value_split(value), Fraction(10_000 - record.fee_bps, 10_000)
        if isinstance(split, PoolSplit):  # a closed pool: the fee at its close is inside its split
            pools += 1
            assert shares.share(UNATTRIBUTED) == split.unattributed_share()
            assert shares.share(PLATFORM) == split.platform_share()
            continue
        assert shares.share(UNATTRIBUTED) == rest * split.unattributed_share()
        assert shares.share(PLATFORM) == Fraction(record.fee_bps, 10_000)
    assert pools >= 5  # the generator's monthly subscription pools


def test_months_are_utc_months_of_at():
    """2026-02-01T00:30:00+01:00 is 31 January 23:30 UTC: a January sale."""
    s = worked().add("value.realized", "2026-02-01T00:30:00+01:00", value="v1", work="c1", amount=10, currency="USD")
    assert [m["month"] for m in s.fold().report()["months"]] == ["2026-01"]


# -- reuse ---------------------------------------------------------------------------


def reuse_stream() -> Stream:
    """c1, c2, c3; o1 = {c1, c2}; o3 = {c1, o1} (a remix of o1).  Uses: c1 2, c2 1, c3 0, o1 1."""
    s = Stream()
    for p in ("alice", "bob", "carol"):
        s.add("prosumer.registered", JAN, prosumer=p)
    s.add("contribution.recorded", JAN, work="c1", authors={"alice": 1})
    s.add("contribution.recorded", JAN, work="c2", authors={"bob": 1})
    s.add("output.composed", JAN, work="o1", components={"c1": 1, "c2": 1}, authors={"carol": 1}, upstream_bps=5000)
    s.add("contribution.recorded", FEB, work="c3", authors={"carol": 1})
    s.add("output.composed", FEB, work="o3", components={"c1": 1, "o1": 1}, upstream_bps=10_000)
    return s


def test_reuse_counts_outputs_per_work_one_third_never_reused_mean_one_depths_1_and_2():
    reuse = reuse_stream().fold().report()["overall"]["reuse"]
    assert (reuse["contributions"], reuse["outputs"], reuse["component_links"]) == (3, 2, 4)
    assert reuse["contributions_never_reused"] == 1
    assert reuse["never_reused_share"]["exact"] == "1/3"
    assert reuse["mean_uses_per_contribution"]["exact"] == "1/1"  # (2 + 1 + 0) / 3
    assert reuse["uses_histogram"] == [{"uses_from": 0, "uses_to": 0, "contributions": 1},
                                       {"uses_from": 1, "uses_to": 1, "contributions": 1},
                                       {"uses_from": 2, "uses_to": 3, "contributions": 1}]
    assert reuse["top_reused"] == [{"work": "c1", "kind": "contribution", "uses": 2},
                                   {"work": "c2", "kind": "contribution", "uses": 1},
                                   {"work": "o1", "kind": "output", "uses": 1}]
    assert reuse["outputs_reused"] == 1
    assert reuse["output_depth_histogram"] == [{"depth": 1, "outputs": 1}, {"depth": 2, "outputs": 1}]
    assert reuse["max_output_depth"] == 2


def test_reuse_in_a_window_counts_only_works_and_outputs_created_in_it():
    """February alone: c3 (never reused) and o3, whose components are January's."""
    reuse = reuse_stream().fold().report("2026-02", "2026-02")["overall"]["reuse"]
    assert (reuse["contributions"], reuse["outputs"], reuse["contributions_never_reused"]) == (1, 1, 1)
    assert reuse["top_reused"] == [] and reuse["output_depth_histogram"] == [{"depth": 2, "outputs": 1}]


def test_top_reused_is_bounded_by_top_n():
    assert len(reuse_stream().fold().report(top_n=2)["overall"]["reuse"]["top_reused"]) == 2


# -- network effect ------------------------------------------------------------------


def network_stream(per_active_minor: list[int]) -> Stream:
    """Month k has 2**k active prosumers (each records a contribution) and one sale of
    2**k · per_active_minor[k]: value per active prosumer is per_active_minor[k]."""
    s = Stream().add("policy.set", JAN, platform_fee_bps=0)
    for k, per_active in enumerate(per_active_minor):
        at = f"2026-{k + 1:02d}-10T12:00:00Z"
        for i in range(2**k):
            s.add("prosumer.registered", at, prosumer=f"p{k}x{i}")
            s.add("contribution.recorded", at, work=f"c{k}x{i}", authors={f"p{k}x{i}": 1})
        s.add("value.realized", at, value=f"v{k}", work=f"c{k}x0", amount=2**k * per_active, currency="USD")
    return s


def test_active_prosumers_are_authors_of_the_month_including_reassignments_not_registrations_or_earners():
    s = worked().add("prosumer.registered", FEB, prosumer="erin")
    s.add("value.realized", FEB, value="v1", work="c1", amount=100, currency="USD")  # alice earns: not activity
    s.add("work.reassigned", FEB, work="c2", authors={"dave": 1})
    s.add("output.composed", MAR, work="o2", components={"c1": 1}, authors={"erin": 1}, upstream_bps=5000)
    months = {m["month"]: m["activity"]["active_prosumers"] for m in s.fold().report()["months"]}
    assert months == {"2026-01": 3, "2026-02": 1, "2026-03": 1}  # alice+bob+carol; dave; erin


def test_value_per_active_prosumer_growing_with_the_network_has_elasticity_1():
    """N = 1, 2, 4 and value per active 100, 200, 400 = 100 · N: ln y = ln 100 + 1 · ln N."""
    fit = network_stream([100, 200, 400]).fold().report()["overall"]["network_effect"]["USD"]
    assert fit["points"] == 3 and fit["months_used"] == ["2026-01", "2026-02", "2026-03"]
    assert fit["elasticity"] == pytest.approx(1.0, abs=1e-12)
    assert fit["ci95"] == pytest.approx([1.0, 1.0], abs=1e-9) and fit["r_squared"] == pytest.approx(1.0)


def test_elasticity_0_8_with_95_ci_of_plus_minus_1_8255_by_hand():
    """In log2 units x = 0, 1, 2, 3 and y = log2(per active / 100) = 0, 2, 1, 3:
    Sxx = 5, Sxy = 4, b = 0.8, a = 0.3; residuals -0.3, 0.9, -0.9, 0.3, SSE 1.8,
    SE = sqrt(1.8 / 2 / 5) = 0.424264; t(0.975, 2) = 4.302653: 0.8 ± 1.825460.
    (The slope and its interval do not depend on the base of the logarithm.)
    R² = 1 - 1.8 / 5 = 0.64."""
    fit = network_stream([100, 400, 200, 800]).fold().report()["overall"]["network_effect"]["USD"]
    assert fit["elasticity"] == pytest.approx(0.8)
    assert fit["ci95"] == pytest.approx([0.8 - 1.825460, 0.8 + 1.825460], abs=1e-5)
    assert fit["r_squared"] == pytest.approx(0.64)


def test_elasticity_needs_two_months_and_its_interval_three():
    """Two months: N 1 -> 2 and per active 100 -> 400 is a slope of ln 4 / ln 2 = 2, no interval."""
    two = network_stream([100, 400]).fold().report()["overall"]["network_effect"]["USD"]
    assert two["elasticity"] == pytest.approx(2.0) and two["ci95"] is None
    one = network_stream([100]).fold().report()["overall"]["network_effect"]["USD"]
    assert one["elasticity"] is None and one["points"] == 1


def test_student_t_quantiles_match_the_tables():
    assert student_t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-5)
    assert student_t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert student_t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-5)
    assert student_t_quantile(0.975, 1000) == pytest.approx(1.962339, abs=1e-5)


# -- fairness and capture ------------------------------------------------------------


def fairness_stream() -> Stream:
    """Fee 1000; alice, bob, carol each sell their contribution for 667, 333 and 111:
    alloc gives @platform 67 / 33 / 11 (= 111) and alice 600, bob 300, carol 100; dave 0."""
    s = worked()
    s.add("contribution.recorded", JAN, work="cb", authors={"bob": 1})
    s.add("contribution.recorded", JAN, work="cc", authors={"carol": 1})
    s.add("value.realized", JAN, value="v1", work="c1", amount=667, currency="USD")
    s.add("value.realized", JAN, value="v2", work="cb", amount=333, currency="USD")
    return s.add("value.realized", JAN, value="v3", work="cc", amount=111, currency="USD")


def test_take_rate_is_the_platforms_booked_units_over_net_realized_111_of_1111():
    fairness = usd(fairness_stream().fold().report())["fairness"]
    assert fairness["platform_booked_minor"] == 111
    assert fairness["take_rate"] == {"exact": "111/1111", "decimal": "0.099909"}


def test_gini_of_0_100_300_600_over_every_registered_prosumer_is_one_half():
    """sum (2i - n - 1) x_(i) = -3·0 - 1·100 + 1·300 + 3·600 = 2000; / (4 · 1000) = 1/2."""
    fairness = usd(fairness_stream().fold().report())["fairness"]
    assert (fairness["prosumers"], fairness["earners"]) == (4, 3)
    assert fairness["gini"] == {"exact": "1/2", "decimal": "0.500000"}


def test_top_shares_take_the_top_ceil_n_p_earners_600_of_1000():
    fairness = usd(fairness_stream().fold().report())["fairness"]
    assert fairness["top_1pct_share"]["exact"] == fairness["top_10pct_share"]["exact"] == "3/5"
    earnings = list(range(1, 21))  # 20 prosumers, total 210: top 10 % = 2 people, top 1 % = 1
    assert top_share(earnings, Fraction(1, 10)) == Fraction(39, 210)
    assert top_share(earnings, Fraction(1, 100)) == Fraction(20, 210)


def test_gini_bounds_equal_is_0_one_takes_all_is_n_minus_1_over_n_nothing_is_undefined():
    assert gini([5, 5, 5]) == 0
    assert gini([0, 0, 0, 9]) == Fraction(3, 4)
    assert gini([0, 0]) is None and gini([]) is None


def test_lorenz_curve_of_0_100_300_600_passes_0_0_1_0_4_at_quarters():
    points = dict((round(x, 2), y) for x, y in lorenz_points([0, 100, 300, 600]))
    assert (points[0.0], points[0.25], points[0.5], points[0.75], points[1.0]) == (0, 0, 0.1, 0.4, 1)


# -- usage pools: the two methods side by side ----------------------------------------------


def pool_stream(method: str = "pro_rata") -> Stream:
    """EVENTS.md §7's worked example: fee 1000; c1 by alice, c2 by bob, o1 = {c1: 1}
    by carol passing 5000 bps; s1 pays 60 and plays o1 once, s2 pays 30 and plays
    c2 nine times, s3 pays 11; closed in February."""
    s = Stream().add("policy.set", JAN, platform_fee_bps=1000)
    for p in ("alice", "bob", "carol"):
        s.add("prosumer.registered", JAN, prosumer=p)
    s.add("contribution.recorded", JAN, work="c1", authors={"alice": 1})
    s.add("contribution.recorded", JAN, work="c2", authors={"bob": 1})
    s.add("output.composed", JAN, work="o1", components={"c1": 1}, authors={"carol": 1}, upstream_bps=5000)
    s.add("pool.opened", JAN, pool="P", currency="USD", method=method)
    for subscriber, amount, uses in (("s1", 60, {"o1": 1}), ("s2", 30, {"c2": 9}), ("s3", 11, None)):
        s.add("pool.funded", JAN, pool="P", subscriber=subscriber, amount=amount)
        if uses:
            s.add("usage.recorded", JAN, pool="P", subscriber=subscriber, uses=uses)
    return s.add("pool.closed", FEB, pool="P")


def test_a_closed_pool_is_value_realized_in_its_close_s_month_split_by_its_works():
    """pro_rata: m = {o1: 10, c2: 91} of 101.  @platform 10.1; c2 is a contribution:
    91 · 9/10 = 81.9 direct; o1's 10 · 9/10 = 9 goes half to carol (depth 0) and
    half to alice through c1 (depth 1): 4.5 each.  Booked in February, the close's month."""
    report = pool_stream().fold().report()
    jan, feb = report["months"]
    assert jan["currencies"] == {}
    block = feb["currencies"]["USD"]
    assert (block["realized_minor"], block["values_realized"]) == (101, 1)
    flow = block["flow"]
    assert flow["platform"] == money(10, "1/10") and flow["direct_on_contributions"] == money(81, "9/10")
    assert depths(flow) == {0: money(4, "1/2"), 1: money(4, "1/2")}
    assert flow["recombination_dividend"] == money(4, "1/2") and flow["unattributed"] == money(0)


def test_a_refund_of_a_closed_pool_takes_back_its_split_in_the_refund_s_month():
    """50 of the 101 refunded in March: @platform -5, direct -50 · 9/10 · 91/101 =
    -40.54…, each depth -50 · 9/10 · 5/101 = -2.22…; every unit still accounted."""
    insights = pool_stream().add("value.reversed", MAR, value="P", amount=50).fold()
    mar = insights.flows("2026-03", "USD")
    assert (mar.realized_minor, mar.reversed_minor) == (0, 50)
    assert mar.platform == -5 and mar.direct == Fraction(-4095, 101)
    assert mar.by_depth == [Fraction(-225, 101), Fraction(-225, 101)]
    assert mar.realized_minor - mar.reversed_minor == mar.platform + mar.unattributed + mar.direct + sum(mar.by_depth)


def test_each_closed_pool_compares_the_two_methods_gini_4_7_against_6_91():
    """Booked pro_rata {alice 5, bob 82, carol 4}, user_centric would give {alice 28,
    bob 36, carol 27}.  Gini of (4, 5, 82): (-2·4 + 0·5 + 2·82) / (3·91) = 4/7; of
    (27, 28, 36): 18/273 = 6/91.  The top 1 % and 10 % are one prosumer of three:
    82/91 and 36/91.  Under user_centric alice and carol gain, bob loses."""
    report = pool_stream().fold().report()
    (pool,) = report["pools"]["closed"]
    assert (pool["pool"], pool["month"], pool["currency"], pool["method"], pool["amount_minor"]) == (
        "P", "2026-02", "USD", "pro_rata", 101)
    assert pool["prosumers"] == 3
    assert pool["pro_rata"]["gini"]["exact"] == "4/7" and pool["user_centric"]["gini"]["exact"] == "6/91"
    assert pool["pro_rata"]["top_1pct_share"]["exact"] == pool["pro_rata"]["top_10pct_share"]["exact"] == "82/91"
    assert pool["user_centric"]["top_10pct_share"]["exact"] == "36/91"
    assert (pool["pro_rata"]["to_prosumers_minor"], pool["user_centric"]["paid"]) == (91, 3)
    assert pool["other_method"] == {"method": "user_centric", "gain": 2, "lose": 1, "same": 0}


def test_pools_of_a_period_are_summed_per_prosumer_under_each_method():
    """The same usage closed twice in February, once per method: each prosumer's
    units under pro_rata are 5 + 5, 82 + 82, 4 + 4 whichever method each pool
    booked, and Gini does not change with the scale: 4/7 and 6/91 again."""
    s = pool_stream("pro_rata")
    s.add("pool.opened", FEB, pool="U", currency="USD", method="user_centric")
    for subscriber, amount, uses in (("s1", 60, {"o1": 1}), ("s2", 30, {"c2": 9}), ("s3", 11, None)):
        s.add("pool.funded", FEB, pool="U", subscriber=subscriber, amount=amount)
        if uses:
            s.add("usage.recorded", FEB, pool="U", subscriber=subscriber, uses=uses)
    pools = s.add("pool.closed", FEB, pool="U").fold().report()["pools"]
    assert [p["method"] for p in pools["closed"]] == ["pro_rata", "user_centric"]
    assert pools["closed"][1]["other_method"] == {"method": "pro_rata", "gain": 1, "lose": 2, "same": 0}
    (period,) = pools["by_period"]
    assert (period["month"], period["pools"], period["amount_minor"], period["prosumers"]) == ("2026-02", 2, 202, 3)
    assert period["pro_rata"]["to_prosumers_minor"] == period["user_centric"]["to_prosumers_minor"] == 182
    assert (period["pro_rata"]["gini"]["exact"], period["user_centric"]["gini"]["exact"]) == ("4/7", "6/91")
    assert period["user_centric_vs_pro_rata"] == {"gain": 2, "lose": 1, "same": 0}
    assert pools["overall"]["USD"]["lorenz"]["pro_rata"][-1] == [1.0, 1.0]


def test_a_window_reports_only_its_months_and_sums_only_them():
    s = fairness_stream().add("value.realized", FEB, value="v4", work="c1", amount=1000, currency="USD")
    report = s.fold().report(from_month="2026-02")
    assert report["window"]["months"] == ["2026-02"] and [m["month"] for m in report["months"]] == ["2026-02"]
    assert usd(report)["realized_minor"] == 1000
    assert usd(report)["fairness"]["platform_booked_minor"] == 100


# -- rebuilt from the log, the CLI, the charts, the demo -------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args], capture_output=True, text=True,
                          env=BASE_ENV, timeout=300)


@pytest.fixture(scope="module")
def generated_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3000 generated events (a few deliberately bad) ingested into a real SQLite file."""
    url = f"sqlite:///{tmp_path_factory.mktemp('insights') / 'ledger.db'}"
    with Store(url) as store:
        ingestor = Ingestor(store)
        for batch in batches(Offered(orjson.dumps(e), "test") for e in generate(11, 3000, "gen",
                                                                                bad_fraction_ppm=5000)):
            ingestor.ingest(batch)
    return url


def test_the_whole_report_is_equal_after_rebuilds_from_the_log_in_process_and_in_a_fresh_process(generated_db: str):
    with Store(generated_db) as store:
        with replayed_insights(store, "gen") as insights:
            first = insights.report()
        with replayed_insights(store, "gen") as insights:
            second = insights.report()
    assert first == second and first["seq"] > 2900 and len(first["months"]) >= 8
    r = run_cli("insights", "--platform", "gen", "--json", "--db", generated_db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == orjson.loads(orjson.dumps(first))


def test_plots_are_written_as_png_and_svg_and_decode(generated_db: str, tmp_path: Path):
    from matplotlib.image import imread

    r = run_cli("insights", "--platform", "gen", "--db", generated_db, "--plots", str(tmp_path / "charts"))
    assert r.returncode == 0, r.stderr
    assert "recombination dividend" in r.stdout and "fairness and capture" in r.stdout
    assert "usage pools" in r.stdout
    for name in ("flow_by_depth", "reuse_distribution", "network_effect", "lorenz", "pools"):
        png, svg = tmp_path / "charts" / f"{name}.png", tmp_path / "charts" / f"{name}.svg"
        pixels = imread(png)
        assert pixels.shape[0] > 0 and pixels.shape[1] > 0
        assert svg.stat().st_size > 0 and ET.parse(svg).getroot().tag.endswith("svg")


def test_cli_refuses_a_bad_month_or_an_inverted_window_with_2_and_an_empty_platform_with_4(generated_db: str):
    assert run_cli("insights", "--platform", "gen", "--db", generated_db, "--from", "2026-13").returncode == 2
    inverted = run_cli("insights", "--platform", "gen", "--db", generated_db, "--from", "2026-05", "--to", "2026-04")
    assert inverted.returncode == 2
    assert run_cli("insights", "--platform", "nobody", "--db", generated_db).returncode == 4


def test_summary_table_has_one_column_per_currency_and_the_headline_rows():
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(summary_table(fairness_stream().fold().report()))
    text = console.export_text()
    for row in ("dividend / net", "take rate", "Gini (earnings)", "top 10 % share", "elasticity", "never reused"):
        assert row in text
    assert "USD" in text and "0.500" in text


def test_demo_ends_with_the_insights_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import argparse

    from ledger.cli.demo import run_demo

    assert run_demo(argparse.Namespace(db=f"sqlite:///{tmp_path / 'demo.db'}", events=1500, seed=7)) == 0
    out = capsys.readouterr().out
    assert "insights over" in out and "dividend / net" in out
    assert "subscription pools, split pro_rata→user_centric" in out and "user_centric" in out
    assert out.index("insights over") < out.index("verify: OK")


def test_demo_pays_a_run_by_sepa_bounces_two_and_books_them_back(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]):
    import argparse

    from ledger.cli.demo import run_demo

    args = argparse.Namespace(db=f"sqlite:///{tmp_path / 'demo.db'}", events=3000, seed=7)
    assert run_demo(args) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns off a terminal
    assert "2 rejected, reconciled into payout.returned events; ingested: 2 accepted" in out
    pain = (tmp_path / "demo-payouts" / "demo-run-1.pain.001.xml").read_bytes()
    assert run_demo(args) == 0  # again: the same file, the returns are duplicates
    assert "ingested: 0 accepted, 2 duplicate" in " ".join(capsys.readouterr().out.split())
    assert (tmp_path / "demo-payouts" / "demo-run-1.pain.001.xml").read_bytes() == pain
