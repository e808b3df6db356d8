"""EVENTS.md §7, usage pools: one test per rule and reason code, with worked
numbers, then the invariants as properties (hypothesis).

Most tests run on the world of §7's worked example: fee 1000 bps; alice, bob
and carol registered; `c1` by {alice: 1}, `c2` by {bob: 1}, `o1` = {c1: 1}
with authors {carol: 1} passing 5000 bps upstream, so V(o1) = {alice: 1/2,
carol: 1/2} and V(c2) = {bob: 1}.
"""

from __future__ import annotations

import itertools
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_rules import Ledger, contrib, ev, reg, sale

from ledger.storage.replay import balances_as_of
from ledger.storage.store import Store
from ledger.storage.views import read_balances, read_explain, read_statement

MAX_AMOUNT = 2**63 - 1
NOV = "2026-11-10T00:00:00Z"


@pytest.fixture
def ledger(sqlite_url: str):
    with Store(sqlite_url) as store:
        yield Ledger(store)


@pytest.fixture
def both(db_url: str):
    """The ledger on SQLite and on PostgreSQL (money past 64 bits, months)."""
    with Store(db_url) as store:
        yield Ledger(store)


def world(fee_bps: int = 1000) -> list[dict[str, Any]]:
    return [ev("policy.set", {"platform_fee_bps": fee_bps}), reg("alice"), reg("bob"), reg("carol"),
            contrib("c1", {"alice": 1}), contrib("c2", {"bob": 1}),
            ev("output.composed", {"work": "o1", "components": {"c1": 1}, "authors": {"carol": 1},
                                   "upstream_bps": 5000})]


def opened(pool: str, method: str = "pro_rata", currency: str = "USD", **kw: Any) -> dict[str, Any]:
    return ev("pool.opened", {"pool": pool, "currency": currency, "method": method}, **kw)


def funded(pool: str, subscriber: str, amount: int, **kw: Any) -> dict[str, Any]:
    return ev("pool.funded", {"pool": pool, "subscriber": subscriber, "amount": amount}, **kw)


def used(pool: str, subscriber: str, uses: dict[str, int], **kw: Any) -> dict[str, Any]:
    return ev("usage.recorded", {"pool": pool, "subscriber": subscriber, "uses": uses}, **kw)


def closed(pool: str, **kw: Any) -> dict[str, Any]:
    return ev("pool.closed", {"pool": pool}, **kw)


def reversed_(value: str, amount: int, **kw: Any) -> dict[str, Any]:
    return ev("value.reversed", {"value": value, "amount": amount}, **kw)


def section_7_pool(pool: str, method: str) -> list[dict[str, Any]]:
    """§7's pool: s1 funds 60 and uses o1 once, s2 funds 30 and uses c2 nine
    times, s3 funds 11 and uses nothing (X = 101, U = 10)."""
    return [opened(pool, method), funded(pool, "s1", 60), used(pool, "s1", {"o1": 1}),
            funded(pool, "s2", 30), used(pool, "s2", {"c2": 9}), funded(pool, "s3", 11)]


# -- already_exists: pools and values share one namespace ---------------------------------


def test_a_pool_may_not_take_a_value_s_id(ledger: Ledger):
    assert ledger.codes(*world(), sale("v1", "c1", 100))[-1] == "accepted"
    assert ledger.codes(opened("v1")) == ["already_exists"]


def test_a_value_may_not_take_a_pool_s_id_open_or_closed(ledger: Ledger):
    ledger.offer(*world(), opened("P"))
    assert ledger.codes(sale("P", "c1", 100)) == ["already_exists"]
    ledger.offer(closed("P"))
    assert ledger.codes(sale("P", "c1", 100)) == ["already_exists"]


def test_opening_a_pool_twice_is_already_exists(ledger: Ledger):
    assert ledger.codes(*world(), opened("P"), opened("P", "user_centric"))[-2:] == ["accepted", "already_exists"]


# -- unknown_reference ---------------------------------------------------------------------


def test_funding_using_or_closing_an_unknown_pool_is_unknown_reference(ledger: Ledger):
    ledger.offer(*world())
    assert ledger.codes(funded("nopool", "s1", 5), used("nopool", "s1", {"c1": 1}), closed("nopool"),
                        reversed_("nopool", 1)) == ["unknown_reference"] * 4


def test_usage_of_an_unknown_work_is_unknown_reference(ledger: Ledger):
    """The rejected event counts nothing, not even its known work: after it,
    s1 funds 10 and uses c2 once, and the pool's stage 1 is {c2: 10} alone."""
    ledger.offer(*world(), opened("P"))
    assert ledger.codes(used("P", "s1", {"c1": 5, "ghost": 1})) == ["unknown_reference"]
    assert ledger.codes(funded("P", "s1", 10), used("P", "s1", {"c2": 1}), closed("P")) == ["accepted"] * 3
    assert read_explain(ledger.store, "p", "P")["pool"]["works"] == {"c2": 10}


def test_references_are_checked_before_the_pool_s_state(ledger: Ledger):
    """A closed pool: usage naming an unknown work is unknown_reference, not invalid_state (§4's order)."""
    ledger.offer(*world(), opened("P"), closed("P"))
    assert ledger.codes(used("P", "s1", {"ghost": 1}), used("P", "s1", {"c1": 1})) == [
        "unknown_reference", "invalid_state"]


# -- invalid_state -------------------------------------------------------------------------


def test_funding_a_closed_pool_is_invalid_state(ledger: Ledger):
    ledger.offer(*world(), opened("P"), funded("P", "s1", 10), used("P", "s1", {"c2": 1}), closed("P"))
    assert ledger.codes(funded("P", "s1", 5)) == ["invalid_state"]
    assert read_explain(ledger.store, "p", "P")["amount"] == 10


def test_usage_of_a_closed_pool_is_invalid_state(ledger: Ledger):
    ledger.offer(*world(), opened("P"), funded("P", "s1", 10), used("P", "s1", {"c2": 1}), closed("P"))
    assert ledger.codes(used("P", "s1", {"o1": 3})) == ["invalid_state"]
    assert read_explain(ledger.store, "p", "P")["pool"]["works"] == {"c2": 10}


def test_closing_a_closed_pool_is_invalid_state(ledger: Ledger):
    ledger.offer(*world(), opened("P"), funded("P", "s1", 10), used("P", "s1", {"c2": 1}), closed("P"))
    before = ledger.balances()
    assert ledger.codes(closed("P")) == ["invalid_state"]
    assert ledger.balances() == before == {("@platform", "USD"): (1, 0, 0, 1), ("bob", "USD"): (9, 0, 0, 9)}


def test_a_resend_to_a_closed_pool_is_a_duplicate_not_invalid_state(ledger: Ledger):
    fund = funded("P", "s1", 10)
    ledger.offer(*world(), opened("P"), fund, used("P", "s1", {"c2": 1}), closed("P"))
    assert ledger.codes(fund) == ["duplicate"]


@pytest.mark.parametrize("amount", [1, 50, 51, MAX_AMOUNT])
def test_reversing_an_open_pool_is_invalid_state_whatever_the_amount(ledger: Ledger, amount: int):
    """50 funded: reversing 1, all 50, 51 or 2^63 - 1 is invalid_state, never over_reversal."""
    ledger.offer(*world(), opened("P"), funded("P", "s1", 50))
    assert ledger.codes(reversed_("P", amount)) == ["invalid_state"]


def test_funding_past_2_63_minus_1_is_invalid_state(both: Ledger):
    """2^62 + (2^62 - 1) = 2^63 - 1 is the most a pool may hold; one unit more
    is refused.  Closed, it books 1/10 to @platform and 9/10 to bob, exactly
    922 337 203 685 477 580.7 and 8 301 034 833 169 298 226.3: the unit left
    goes to @platform's larger fraction."""
    assert both.codes(*world(), opened("P"), funded("P", "s1", 2**62), funded("P", "s2", 2**62 - 1),
                      funded("P", "s3", 1))[-3:] == ["accepted", "accepted", "invalid_state"]
    assert both.codes(used("P", "s1", {"c2": 1}), closed("P")) == ["accepted", "accepted"]
    assert both.balances() == {("@platform", "USD"): (922337203685477581, 0, 0, 922337203685477581),
                               ("bob", "USD"): (8301034833169298226, 0, 0, 8301034833169298226)}
    assert read_explain(both.store, "p", "P")["amount"] == MAX_AMOUNT


# -- the X = 0 pool ------------------------------------------------------------------------


def test_a_pool_closed_with_no_funding_books_nothing_and_any_reversal_is_over_reversal(ledger: Ledger):
    """Used (c1 three times) but never funded: pro_rata's stage 1 names c1 with 0
    units, S is empty, nothing is booked; as a value of amount 0 even a
    reversal of 1 is over_reversal."""
    assert ledger.codes(*world(), opened("Z"), used("Z", "s1", {"c1": 3}), closed("Z"))[-1] == "accepted"
    assert ledger.balances() == {}
    assert read_explain(ledger.store, "p", "Z") == {
        "value": "Z", "amount": 0, "currency": "USD", "shares": {}, "allocation": {}, "reversed": 0,
        "pool": {"method": "pro_rata", "works": {"c1": 0},
                 "alternative": {"method": "user_centric", "works": {}, "allocation": {}}}}
    assert ledger.codes(reversed_("Z", 1)) == ["over_reversal"]


# -- the split and its bookings --------------------------------------------------------------


@pytest.mark.parametrize(("method", "booked", "other"), [
    ("pro_rata", {"@platform": 10, "alice": 5, "bob": 82, "carol": 4},
     {"@platform": 10, "alice": 28, "bob": 36, "carol": 27}),
    ("user_centric", {"@platform": 10, "alice": 28, "bob": 36, "carol": 27},
     {"@platform": 10, "alice": 5, "bob": 82, "carol": 4}),
])
def test_a_pool_books_its_method_s_split_and_shows_the_other_never_booked(
        ledger: Ledger, method: str, booked: dict[str, int], other: dict[str, int]):
    """§7's worked example under each method: the balances are the booked
    allocation; the alternative is in the explanation only."""
    ledger.offer(*world(), *section_7_pool("P", method), closed("P"))
    assert {a: b[0] for (a, _), b in ledger.balances().items()} == booked
    ex = read_explain(ledger.store, "p", "P")
    assert ex["allocation"] == booked and ex["pool"]["alternative"]["allocation"] == other


def test_bookings_land_in_the_close_s_utc_month(both: Ledger):
    """Funded and used in November, closed at 2026-12-01T00:30+01:00, which is
    2026-11-30T23:30Z: the close books in November (bob 90, @platform 10 of
    100); a refund of 40 on 2026-12-01T00:30Z books in December (bob -36,
    @platform -4)."""
    both.offer(*world(), opened("P", at=NOV), funded("P", "s1", 100, at=NOV), used("P", "s1", {"c2": 1}, at=NOV))
    assert both.codes(closed("P", at="2026-12-01T00:30:00+01:00"),
                      reversed_("P", 40, at="2026-12-01T00:30:00Z")) == ["accepted", "accepted"]
    assert read_statement(both.store, "p", "bob", None) == [
        {"period": "2026-11", "currency": "USD", "earned": 90, "reversed": 0, "paid": 0, "net": 90},
        {"period": "2026-12", "currency": "USD", "earned": 0, "reversed": -36, "paid": 0, "net": -36}]
    assert [(r["period"], r["earned"], r["reversed"]) for r in read_statement(both.store, "p", "@platform", None)
            if r["period"] >= "2026-11"] == [("2026-11", 10, 0), ("2026-12", 0, -4)]


def test_the_fee_in_force_at_the_close_applies_not_the_one_at_opening(ledger: Ledger):
    """Opened at 1000 bps, closed at 2000: 100 on c2 books @platform 20, bob 80."""
    ledger.offer(*world(1000), opened("P"), funded("P", "s1", 100), used("P", "s1", {"c2": 1}),
                 ev("policy.set", {"platform_fee_bps": 2000}), closed("P"))
    assert read_explain(ledger.store, "p", "P")["allocation"] == {"@platform": 20, "bob": 80}


def test_the_graph_at_the_close_applies_and_later_changes_do_not(ledger: Ledger):
    """c1 retracted before the close: o1's upstream half goes to @unattributed.
    100 on o1 at 1000 bps: @platform 10, carol 45, @unattributed 45.  Reinstating
    c1 and reassigning o1 afterwards changes neither the bookings nor the split."""
    ledger.offer(*world(), opened("P"), funded("P", "s1", 100), used("P", "s1", {"o1": 2}),
                 ev("work.retracted", {"work": "c1"}), closed("P"))
    expected = {"@platform": 10, "@unattributed": 45, "carol": 45}
    assert read_explain(ledger.store, "p", "P")["allocation"] == expected
    ledger.offer(ev("work.reinstated", {"work": "c1"}), ev("work.reassigned", {"work": "o1", "authors": {"bob": 1}}))
    assert read_explain(ledger.store, "p", "P")["allocation"] == expected
    assert {a: b[0] for (a, _), b in ledger.balances().items()} == expected


def test_a_pool_nobody_used_sends_all_but_the_fee_to_unattributed(ledger: Ledger):
    """7 EUR funded, nothing used, 1000 bps: S = {@platform: 1/10, @unattributed: 9/10};
    0.7 and 6.3 → @platform 1 (the larger fraction takes the unit left), @unattributed 6."""
    ledger.offer(*world(), opened("E", "user_centric", "EUR"), funded("E", "s1", 7), closed("E"))
    ex = read_explain(ledger.store, "p", "E")
    assert ex["shares"] == {"@platform": "1/10", "@unattributed": "9/10"}
    assert ex["allocation"] == {"@platform": 1, "@unattributed": 6}
    assert ex["pool"]["works"] == {} and ex["pool"]["alternative"]["works"] == {}


def test_refunding_a_closed_pool_books_alloc_t_minus_alloc_t_plus_r(ledger: Ledger):
    """P pro_rata books {@platform 10, alice 5, bob 82, carol 4}; S = {@platform: 1/10,
    alice: 9/202, carol: 9/202, bob: 819/1010}.  Refunding 50 books -alloc(50) =
    {@platform -5, alice -2, bob -41, carol -2} (exact 5, 2.23, 40.54, 2.23: the
    unit left goes to bob); 52 more would be too many, the other 51 brings every
    account to 0."""
    ledger.offer(*world(), *section_7_pool("P", "pro_rata"), closed("P"))
    assert ledger.codes(reversed_("P", 50)) == ["accepted"]
    assert {a: b[1] for (a, _), b in ledger.balances().items()} == {
        "@platform": -5, "alice": -2, "bob": -41, "carol": -2}
    assert ledger.codes(reversed_("P", 52), reversed_("P", 51)) == ["over_reversal", "accepted"]
    assert {b[3] for b in ledger.balances().values()} == {0}
    assert read_explain(ledger.store, "p", "P")["reversed"] == 101


# -- properties ------------------------------------------------------------------------------------

SUBSCRIBERS = ["s1", "s2", "s3", "s4"]
WORKS = ["c1", "c2", "o1", "o2"]
amounts = st.integers(0, 10_000)
uses_st = st.dictionaries(st.sampled_from(WORKS), st.integers(1, 50), min_size=1, max_size=3)
member = st.tuples(st.sampled_from(SUBSCRIBERS), amounts, st.lists(uses_st, max_size=2))
members_st = st.lists(member, min_size=1, max_size=6)
PROPERTY_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


def property_world(fee_bps: int) -> list[dict[str, Any]]:
    """§7's world and o2 = {o1: 1, c2: 2} without authors (10 000 bps upstream)."""
    return [*world(fee_bps), ev("output.composed", {"work": "o2", "components": {"o1": 1, "c2": 2},
                                                    "upstream_bps": 10_000})]


def pool_events(pool: str, method: str, members: list[tuple[str, int, list[dict[str, int]]]]) -> list[dict[str, Any]]:
    events = [opened(pool, method)]
    for subscriber, amount, uses in members:
        if amount:
            events.append(funded(pool, subscriber, amount))
        events.extend(used(pool, subscriber, u) for u in uses)
    return events


@pytest.fixture(scope="module")
def scratch() -> Any:
    with tempfile.TemporaryDirectory(prefix="pool-properties-") as directory:
        yield Path(directory)


_dbs = itertools.count(1)


def fresh(scratch: Path) -> Store:
    return Store(f"sqlite:///{scratch / f'{next(_dbs)}.db'}", durable=False)


@PROPERTY_SETTINGS
@given(members=members_st, method=st.sampled_from(["pro_rata", "user_centric"]),
       fee=st.sampled_from([0, 1000, 3333, 10_000]))
def test_a_pool_s_allocation_and_its_alternative_sum_to_its_funding(scratch: Path, members, method, fee):
    with fresh(scratch) as store:
        ledger = Ledger(store)
        codes = ledger.codes(*property_world(fee), *pool_events("P", method, members), closed("P"))
        assert set(codes) == {"accepted"}
        x = sum(amount for _, amount, _ in members)
        ex = read_explain(store, "p", "P")
        assert ex["amount"] == x
        assert sum(ex["allocation"].values()) == sum(ex["pool"]["alternative"]["allocation"].values()) == x
        assert sum(row["earned"] for row in read_balances(store, "p")) == x
        if ex["shares"]:
            assert sum(Fraction(s) for s in ex["shares"].values()) == 1


@PROPERTY_SETTINGS
@given(members=members_st, method=st.sampled_from(["pro_rata", "user_centric"]),
       cuts=st.lists(st.integers(1, 10_000), max_size=4))
def test_a_fully_refunded_pool_nets_every_account_to_zero(scratch: Path, members, method, cuts):
    with fresh(scratch) as store:
        ledger = Ledger(store)
        ledger.offer(*property_world(1000), *pool_events("P", method, members), closed("P"))
        x = sum(amount for _, amount, _ in members)
        parts, left = [], x
        for cut in cuts:  # partial refunds, then the rest
            if 0 < cut < left:
                parts.append(cut)
                left -= cut
        if left:
            parts.append(left)
        assert set(ledger.codes(*(reversed_("P", part) for part in parts))) <= {"accepted"}
        assert all(row["balance"] == 0 and row["earned"] == -row["reversed"] for row in read_balances(store, "p"))


@PROPERTY_SETTINGS
@given(amount=st.integers(1, 10**12), uses=st.lists(uses_st, min_size=0, max_size=3),
       method=st.sampled_from(["pro_rata", "user_centric"]), fee=st.sampled_from([0, 1000, 3333]))
def test_with_one_subscriber_the_two_methods_agree(scratch: Path, amount, uses, method, fee):
    with fresh(scratch) as store:
        ledger = Ledger(store)
        ledger.offer(*property_world(fee), *pool_events("P", method, [("s1", amount, uses)]), closed("P"))
        ex = read_explain(store, "p", "P")
        assert ex["pool"]["works"] == ex["pool"]["alternative"]["works"]
        assert ex["allocation"] == ex["pool"]["alternative"]["allocation"]


step_st = st.one_of(
    st.tuples(st.just("fund"), st.sampled_from(["P", "U"]), st.sampled_from(SUBSCRIBERS), st.integers(1, 500)),
    st.tuples(st.just("use"), st.sampled_from(["P", "U"]), st.sampled_from(SUBSCRIBERS), uses_st),
    st.tuples(st.just("close"), st.sampled_from(["P", "U"])),
    st.tuples(st.just("refund"), st.sampled_from(["P", "U"]), st.integers(1, 300)),
    st.tuples(st.just("sale"), st.sampled_from(WORKS), st.integers(1, 500)),
    st.tuples(st.just("retract"), st.sampled_from(WORKS)),
)


def step_event(step: tuple[Any, ...], n: int) -> dict[str, Any]:
    at = f"2026-{11 + n % 2:02d}-{1 + n % 28:02d}T00:00:00Z"
    kind = step[0]
    if kind == "fund":
        return funded(step[1], step[2], step[3], at=at)
    if kind == "use":
        return used(step[1], step[2], step[3], at=at)
    if kind == "close":
        return closed(step[1], at=at)
    if kind == "refund":
        return reversed_(step[1], step[2], at=at)
    if kind == "sale":
        return sale(f"v{n}", step[1], step[2], at=at)
    return ev("work.retracted", {"work": step[1]}, at=at)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(step_st, min_size=1, max_size=14))
def test_replay_equals_live_at_every_seq(scratch: Path, steps):
    """Whatever was accepted (rejects included), a replay of the log up to
    each seq gives the balances the live ledger had right after it."""
    with fresh(scratch) as store:
        ledger = Ledger(store)
        ledger.offer(*property_world(1000), opened("P", "pro_rata"), opened("U", "user_centric"))
        live = {}
        for n, step in enumerate(steps):
            (outcome,) = ledger.offer(step_event(step, n))
            if outcome.seq is not None:
                live[outcome.seq] = read_balances(store, "p")
        for seq, balances in live.items():
            assert balances_as_of(store, "p", seq) == balances, seq
