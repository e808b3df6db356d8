"""EVENTS.md section 3, worked example, and the public fixture's numbers.

Everything here is checked against numbers written in the spec or in
examples/worked.expected.json, computed with the attribution package alone.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from attribution import (
    PLATFORM,
    UNATTRIBUTED,
    ShareVector,
    WorkGraph,
    allocate,
    fraction_str,
    reversal_bookings,
)

# Same convention as the repo's fixtures: shared/ lies beside the clone.
EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "examples"


def worked_graph() -> WorkGraph:
    """c1 by {alice: 1}; c2 by {bob: 2, carol: 1}; o1 = {c1: 1, c2: 1},
    authors {carol: 1}, upstream 4000 bps."""
    g = WorkGraph()
    g.add_contribution("c1", {"alice": 1})
    g.add_contribution("c2", {"bob": 2, "carol": 1})
    g.add_output("o1", {"c1": 1, "c2": 1}, {"carol": 1}, 4000)
    return g


def test_worked_example_shares_with_fee_1000_bps():
    # carol: 9/10 * 6/10 as o1's author + 9/10 * 4/10 * 1/2 * 1/3 via c2 = 27/50 + 3/50
    s = worked_graph().vector("o1").with_fee(1000)
    assert s.as_fractions() == {
        PLATFORM: Fraction(1, 10),
        "alice": Fraction(9, 50),
        "bob": Fraction(3, 25),
        "carol": Fraction(3, 5),
    }
    # with_fee of a reduced vector is reduced: one denominator, 50.
    assert s == ShareVector(50, {PLATFORM: 5, "alice": 9, "bob": 6, "carol": 30})


def test_worked_example_shares_before_fee():
    # carol 6/10 + 4/10 * 1/2 * 1/3 = 2/3, alice 4/10 * 1/2 = 1/5, bob 4/10 * 1/2 * 2/3 = 2/15
    v = worked_graph().vector("o1")
    assert v == ShareVector(15, {"alice": 3, "bob": 2, "carol": 10})


def test_allocation_of_1001_gives_the_leftover_unit_to_carol():
    # exact 100.1, 600.6, 180.18, 120.12 -> floors sum to 1000, one unit to
    # the largest fraction (.6, carol)
    s = worked_graph().vector("o1").with_fee(1000)
    assert allocate(1001, s) == {PLATFORM: 100, "alice": 180, "bob": 120, "carol": 601}


def test_reversing_500_then_501_nets_every_recipient_to_zero():
    s = worked_graph().vector("o1").with_fee(1000)
    first = reversal_bookings(s, 0, 500)
    second = reversal_bookings(s, 500, 501)
    assert first == {"carol": -300, "alice": -90, "bob": -60, PLATFORM: -50}
    assert second == {"carol": -301, "alice": -90, "bob": -60, PLATFORM: -50}
    sale = allocate(1001, s)
    assert {r: sale[r] + first[r] + second[r] for r in sale} == dict.fromkeys(sale, 0)


def test_a_single_unit_split_three_ways_goes_to_a():
    s = ShareVector(3, {"c": 1, "b": 1, "a": 1})
    assert allocate(1, s) == {"a": 1, "b": 0, "c": 0}
    # Two units: a and b (ties by code point order).
    assert allocate(2, s) == {"a": 1, "b": 1, "c": 0}


def test_after_c2_is_retracted_its_inflow_goes_to_unattributed():
    # v3 of the fixture: c2's 9/10 * 4/10 * 1/2 = 9/50 goes to @unattributed.
    g = worked_graph()
    g.retract("c2")
    s = g.vector("o1").with_fee(1000)
    assert s.as_fractions() == {
        PLATFORM: Fraction(1, 10),
        UNATTRIBUTED: Fraction(9, 50),
        "alice": Fraction(9, 50),
        "carol": Fraction(27, 50),
    }
    assert allocate(300, s) == {PLATFORM: 30, UNATTRIBUTED: 54, "alice": 54, "carol": 162}


def _replay_fixture(lines: list[dict], outcomes: list[dict]):
    """Apply the fixture's accepted events with nothing but this package:
    returns per-value explanations and per-(account, currency) balances."""
    g = WorkGraph()
    fee_bps = 0
    values: dict[str, dict] = {}
    books: dict[tuple[str, str], dict[str, int]] = {}

    def book(account: str, currency: str, kind: str, units: int) -> None:
        row = books.setdefault((account, currency), {"earned": 0, "reversed": 0, "paid": 0})
        row[kind] += units

    for event, outcome in zip(lines, outcomes, strict=True):
        assert event["id"] == outcome["id"]
        if outcome["outcome"] != "accepted":
            continue
        kind, data = event["type"], event["data"]
        if kind == "policy.set":
            fee_bps = data["platform_fee_bps"]
        elif kind == "contribution.recorded":
            g.add_contribution(data["work"], data["authors"])
        elif kind == "output.composed":
            g.add_output(data["work"], data["components"], data.get("authors", {}), data.get("upstream_bps", 10_000))
        elif kind == "work.retracted":
            g.retract(data["work"])
        elif kind == "work.reinstated":
            g.reinstate(data["work"])
        elif kind == "work.reassigned":
            g.reassign(data["work"], data["authors"])
        elif kind == "value.realized":
            shares = g.vector(data["work"]).with_fee(fee_bps)
            allocation = allocate(data["amount"], shares)
            values[data["value"]] = {
                "value": data["value"],
                "work": data["work"],
                "amount": data["amount"],
                "currency": data["currency"],
                "shares": {r: fraction_str(shares.share(r)) for r in shares.recipients()},
                "allocation": allocation,
                "reversed": 0,
                "_shares": shares,
            }
            for account, units in allocation.items():
                book(account, data["currency"], "earned", units)
        elif kind == "value.reversed":
            v = values[data["value"]]
            for account, units in reversal_bookings(v["_shares"], v["reversed"], data["amount"]).items():
                book(account, v["currency"], "reversed", units)
            v["reversed"] += data["amount"]
        elif kind == "payout.issued":
            book(data["prosumer"], data["currency"], "paid", data["amount"])
    for v in values.values():
        del v["_shares"]
    balances = [
        {"account": a, "currency": c, **row, "balance": row["earned"] + row["reversed"] - row["paid"]}
        for (a, c), row in sorted(books.items())
    ]
    return values, balances


def test_public_fixture_explain_shares_allocations_and_balances():
    expected_path = EXAMPLES / "worked.expected.json"
    if not expected_path.exists():
        pytest.skip(f"spec fixture not found at {EXAMPLES}")
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    lines = [json.loads(line) for line in (EXAMPLES / "worked.jsonl").read_text(encoding="utf-8").splitlines()]
    values, balances = _replay_fixture(lines, expected["outcomes"])
    assert values == expected["explain"]
    assert balances == expected["balances"]
