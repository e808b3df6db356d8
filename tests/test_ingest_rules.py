"""EVENTS.md §2 and §4: one test per rule, with worked numbers."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from ledger.audit.verify import verify
from ledger.ingest.ingestor import Ingestor, Outcome
from ledger.ingest.sources import Offered
from ledger.storage.store import Store
from ledger.storage.views import read_balances, read_statement

_ids = itertools.count(1)


def ev(type_: str, data: dict[str, Any], *, platform: str = "p", id: str | None = None,
       at: str = "2026-10-01T00:00:00Z") -> dict[str, Any]:
    return {"v": 1, "id": id or f"x{next(_ids)}", "platform": platform, "type": type_, "at": at, "data": data}


def reg(p: str, **kw: Any) -> dict[str, Any]:
    return ev("prosumer.registered", {"prosumer": p}, **kw)


def contrib(w: str, authors: dict[str, int], **kw: Any) -> dict[str, Any]:
    return ev("contribution.recorded", {"work": w, "authors": authors}, **kw)


def sale(v: str, w: str, amount: int, currency: str = "USD", **kw: Any) -> dict[str, Any]:
    return ev("value.realized", {"value": v, "work": w, "amount": amount, "currency": currency}, **kw)


class Ledger:
    """A real ledger on a real database, fed one batch per call."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ingestor = Ingestor(store)

    def offer(self, *events: dict[str, Any]) -> list[Outcome]:
        # The read models commit with the events: the tests read them at once.
        return self.ingestor.ingest([Offered(orjson.dumps(e), "test") for e in events])

    def codes(self, *events: dict[str, Any]) -> list[str]:
        return [o.code or o.outcome for o in self.offer(*events)]

    def balances(self, platform: str = "p") -> dict[tuple[str, str], tuple[int, int, int, int]]:
        return {(r["account"], r["currency"]): (r["earned"], r["reversed"], r["paid"], r["balance"])
                for r in read_balances(self.store, platform)}


@pytest.fixture
def ledger(sqlite_url: str):
    with Store(sqlite_url) as store:
        yield Ledger(store)


@pytest.fixture
def alice_sells(ledger: Ledger) -> Ledger:
    ledger.offer(reg("alice"), contrib("c1", {"alice": 1}), sale("v1", "c1", 1000))
    return ledger


# -- §4 outcomes -------------------------------------------------------------


def test_accepted_events_take_the_next_seq_per_platform(ledger: Ledger):
    outcomes = ledger.offer(reg("a", platform="p"), reg("a", platform="q"), reg("b", platform="p"))
    assert [(o.platform, o.seq) for o in outcomes] == [("p", 1), ("q", 1), ("p", 2)]


def test_resend_of_an_accepted_event_is_a_duplicate_and_changes_nothing(alice_sells: Ledger):
    before = alice_sells.balances()
    e = reg("bob", id="same")
    assert alice_sells.codes(e, e) == ["accepted", "duplicate"]
    assert alice_sells.codes(e) == ["duplicate"]
    assert alice_sells.store.head("p") == 4
    assert alice_sells.balances() == before


def test_duplicate_means_equal_as_json_values_not_equal_bytes(ledger: Ledger):
    e = reg("bob", id="same")
    reordered = b'{"data":{"prosumer":"bob"},"at":"2026-10-01T00:00:00Z","type":"prosumer.registered","platform":"p","id":"same","v":1}'
    spaced = orjson.dumps(e, option=orjson.OPT_INDENT_2)
    outcomes = ledger.ingestor.ingest([Offered(orjson.dumps(e), "t"), Offered(reordered, "t"), Offered(spaced, "t")])
    assert [o.outcome for o in outcomes] == ["accepted", "duplicate", "duplicate"]


def test_a_new_writer_knows_every_accepted_id_from_the_store(alice_sells: Ledger):
    # Writers hold no id index: a fresh one (a restarted process) looks the
    # batch's ids up in peerledger_event_ids.
    fresh = Ingestor(alice_sells.store)
    outcomes = fresh.ingest([Offered(orjson.dumps(e), "t") for e in (reg("bob", id="b"), reg("bob", id="b"))])
    assert [o.outcome for o in outcomes] == ["accepted", "duplicate"]
    resent = Ingestor(alice_sells.store).ingest([Offered(orjson.dumps(reg("bob", id="b")), "t"),
                                                  Offered(orjson.dumps(reg("carol", id="b")), "t")])
    assert [o.code or o.outcome for o in resent] == ["duplicate", "conflict"]


def test_same_id_with_different_content_is_a_conflict(ledger: Ledger):
    assert ledger.codes(reg("bob", id="e1"), reg("carol", id="e1")) == ["accepted", "conflict"]


def test_a_resend_is_a_duplicate_even_where_the_state_would_now_refuse_it(alice_sells: Ledger):
    payout = ev("payout.issued", {"payout": "p1", "prosumer": "alice", "amount": 1000, "currency": "USD"}, id="pay")
    assert alice_sells.codes(payout) == ["accepted"]  # balance now 0
    assert alice_sells.codes(payout) == ["duplicate"]  # not insufficient_balance, not already_exists


def test_creating_an_existing_id_is_already_exists(alice_sells: Ledger):
    assert alice_sells.codes(
        reg("alice"), contrib("c1", {"alice": 1}), sale("v1", "c1", 5),
        ev("output.composed", {"work": "c1", "components": {"c1": 1}}),
    ) == ["already_exists"] * 4


def test_payout_id_must_be_new(alice_sells: Ledger):
    pay = {"payout": "p1", "prosumer": "alice", "amount": 1, "currency": "USD"}
    assert alice_sells.codes(ev("payout.issued", pay), ev("payout.issued", pay)) == ["accepted", "already_exists"]


def test_already_exists_is_checked_before_unknown_reference(alice_sells: Ledger):
    assert alice_sells.codes(contrib("c1", {"nobody": 1})) == ["already_exists"]


@pytest.mark.parametrize("event", [
    contrib("c2", {"nobody": 1}),
    ev("output.composed", {"work": "o1", "components": {"missing": 1}}),
    ev("output.composed", {"work": "o1", "components": {"c1": 1}, "authors": {"nobody": 1}, "upstream_bps": 5000}),
    sale("v2", "missing", 5),
    ev("value.reversed", {"value": "missing", "amount": 1}),
    ev("work.retracted", {"work": "missing"}),
    ev("work.reinstated", {"work": "missing"}),
    ev("work.reassigned", {"work": "missing", "authors": {"alice": 1}}),
    ev("work.reassigned", {"work": "c1", "authors": {"nobody": 1}}),
    ev("payout.issued", {"payout": "p9", "prosumer": "nobody", "amount": 1, "currency": "USD"}),
], ids=lambda e: e["type"])
def test_references_must_exist_before_the_event(alice_sells: Ledger, event: dict[str, Any]):
    assert alice_sells.codes(event) == ["unknown_reference"]


def test_a_reference_must_be_to_the_same_platform(alice_sells: Ledger):
    assert alice_sells.codes(sale("v2", "c1", 5, platform="other")) == ["unknown_reference"]


def test_payout_may_not_exceed_the_balance_at_that_point(alice_sells: Ledger):
    # alice earned all 1000 (fee 0); 1001 is too much, 1000 is fine, then 1 is too much.
    def pay(n: int) -> dict[str, Any]:
        return ev("payout.issued", {"payout": f"p{n}{next(_ids)}", "prosumer": "alice", "amount": n, "currency": "USD"})
    assert alice_sells.codes(pay(1001), pay(1000), pay(1)) == ["insufficient_balance", "accepted", "insufficient_balance"]
    assert alice_sells.balances()[("alice", "USD")] == (1000, 0, 1000, 0)


def test_payout_in_another_currency_has_no_balance(alice_sells: Ledger):
    assert alice_sells.codes(ev("payout.issued", {"payout": "x", "prosumer": "alice", "amount": 1, "currency": "EUR"})) == ["insufficient_balance"]


def test_reversals_may_not_exceed_the_value(alice_sells: Ledger):
    def rev(n: int) -> dict[str, Any]:
        return ev("value.reversed", {"value": "v1", "amount": n})
    assert alice_sells.codes(rev(600), rev(401), rev(400), rev(1)) == ["accepted", "over_reversal", "accepted", "over_reversal"]
    assert alice_sells.balances()[("alice", "USD")] == (1000, -1000, 0, 0)


def test_a_balance_may_go_negative_after_a_reversal_a_clawback(alice_sells: Ledger):
    alice_sells.offer(ev("payout.issued", {"payout": "x", "prosumer": "alice", "amount": 900, "currency": "USD"}))
    alice_sells.offer(ev("value.reversed", {"value": "v1", "amount": 1000}))
    assert alice_sells.balances()[("alice", "USD")] == (1000, -1000, 900, -900)


def test_retracting_twice_or_reinstating_an_unretracted_work_is_invalid_state(alice_sells: Ledger):
    assert alice_sells.codes(
        ev("work.reinstated", {"work": "c1"}),
        ev("work.retracted", {"work": "c1"}),
        ev("work.retracted", {"work": "c1"}),
        ev("work.reinstated", {"work": "c1"}),
    ) == ["invalid_state", "accepted", "invalid_state", "accepted"]


def test_empty_authors_on_reassign_only_for_an_output_passing_everything_upstream(alice_sells: Ledger):
    alice_sells.offer(
        ev("output.composed", {"work": "o-all", "components": {"c1": 1}}),
        ev("output.composed", {"work": "o-half", "components": {"c1": 1}, "authors": {"alice": 1}, "upstream_bps": 5000}),
    )
    assert alice_sells.codes(
        ev("work.reassigned", {"work": "c1", "authors": {}}),
        ev("work.reassigned", {"work": "o-half", "authors": {}}),
        ev("work.reassigned", {"work": "o-all", "authors": {}}),
    ) == ["invalid", "invalid", "accepted"]


def test_a_rejected_event_consumes_nothing_and_may_be_sent_again_corrected(ledger: Ledger):
    assert ledger.codes(contrib("c1", {"bob": 1}, id="fix-me")) == ["unknown_reference"]
    assert ledger.codes(reg("bob"), contrib("c1", {"bob": 1}, id="fix-me")) == ["accepted", "accepted"]
    assert ledger.store.head("p") == 2


def test_invalid_event_is_rejected_and_kept_with_its_raw_line(ledger: Ledger):
    bad = b'{"v": 1, "id": "e1", "platform": "p", "type": "prosumer.registered", "at": "2026-02-30T00:00:00Z", "data": {"prosumer": "a"}}'
    outcome, = ledger.ingestor.ingest([Offered(bad, "file.jsonl:7")])
    assert (outcome.outcome, outcome.code, outcome.event_id, outcome.platform) == ("rejected", "invalid", "e1", "p")
    (row,) = ledger.store.rejects("p", 10)
    assert row[3:6] == ("invalid", outcome.message, bad) and row[7] == "file.jsonl:7"


def test_not_json_is_invalid_and_kept_without_a_platform(ledger: Ledger):
    outcome, = ledger.ingestor.ingest([Offered(b"{not json", "stdin:1")])
    assert outcome.code == "invalid"
    (row,) = ledger.store.rejects(None, 10)
    assert row[1] is None and bytes(row[5]) == b"{not json"


def test_a_line_over_1_mib_is_invalid_and_kept_truncated(ledger: Ledger):
    huge = b'{"v":1,"id":"big","platform":"p","type":"prosumer.registered","at":"2026-10-01T00:00:00Z","data":{"prosumer":"a","name":"' + b"x" * (1 << 20) + b'"}}'
    outcome, = ledger.ingestor.ingest([Offered(huge, "t")])
    assert outcome.code == "invalid"
    (row,) = ledger.store.rejects(None, 10)
    assert len(bytes(row[5])) == 64 * 1024 and row[6]


def test_platforms_are_fully_isolated(alice_sells: Ledger):
    alice_sells.offer(reg("alice", platform="q"), contrib("c1", {"alice": 1}, platform="q"), sale("v1", "c1", 7, platform="q"))
    assert alice_sells.balances("p") == {("alice", "USD"): (1000, 0, 0, 1000)}
    assert alice_sells.balances("q") == {("alice", "USD"): (7, 0, 0, 7)}


# -- §3 bookings that show in balances and statements --------------------------


def test_fee_applies_to_values_realized_after_the_policy(alice_sells: Ledger):
    alice_sells.offer(ev("policy.set", {"platform_fee_bps": 2500}), sale("v2", "c1", 100))
    assert alice_sells.balances() == {("@platform", "USD"): (25, 0, 0, 25), ("alice", "USD"): (1075, 0, 0, 1075)}


def test_a_zero_unit_allocation_still_gives_the_recipient_a_row(ledger: Ledger):
    ledger.offer(reg("a"), reg("b"), reg("c"), contrib("c1", {"a": 1, "b": 1, "c": 1}), sale("v", "c1", 1))
    assert ledger.balances() == {("a", "USD"): (1, 0, 0, 1), ("b", "USD"): (0, 0, 0, 0), ("c", "USD"): (0, 0, 0, 0)}


def test_retraction_sends_later_value_to_unattributed_but_never_changes_earlier_shares(alice_sells: Ledger):
    alice_sells.offer(ev("work.retracted", {"work": "c1"}), sale("v2", "c1", 10),
                      ev("value.reversed", {"value": "v1", "amount": 1000}))
    assert alice_sells.balances() == {("@unattributed", "USD"): (10, 0, 0, 10), ("alice", "USD"): (1000, -1000, 0, 0)}


def test_statements_put_a_refund_in_the_month_of_the_refund(ledger: Ledger):
    ledger.offer(reg("a"), contrib("c1", {"a": 1}), sale("v", "c1", 100, at="2026-10-31T23:30:00Z"),
                 ev("value.reversed", {"value": "v", "amount": 40}, at="2026-11-01T00:30:00+01:00"),
                 ev("value.reversed", {"value": "v", "amount": 10}, at="2026-11-02T08:00:00+01:00"))
    # 00:30+01:00 on 1 November is still October in UTC; the second refund is November's.
    assert read_statement(ledger.store, "p", "a", None) == [
        {"period": "2026-10", "currency": "USD", "earned": 100, "reversed": -40, "paid": 0, "net": 60},
        {"period": "2026-11", "currency": "USD", "earned": 0, "reversed": -10, "paid": 0, "net": -10},
    ]
    assert verify(ledger.store, "p").ok
