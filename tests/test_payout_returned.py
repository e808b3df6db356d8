"""EVENTS.md §8 (revision 1.2), returned payouts: one test per rule, with worked numbers.

alice sells a contribution of hers for 1000 USD (no fee): earned 1000. She
is paid 600 in October (balance 400); the transfer bounces and comes back in
November: `paid` drops by 600, so her balance is 1000 again, and the
statement shows the −600 in November, not October.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.audit.verify import verify
from ledger.storage.store import Store
from ledger.storage.views import read_statement
from test_ingest_rules import Ledger, contrib, ev, reg, sale


def payout(p: str, prosumer: str, amount: int, currency: str = "USD", **kw: Any) -> dict[str, Any]:
    return ev("payout.issued", {"payout": p, "prosumer": prosumer, "amount": amount, "currency": currency}, **kw)


def returned(p: str, **kw: Any) -> dict[str, Any]:
    return ev("payout.returned", {"payout": p, "reason": "AC04 account closed"}, **kw)


@pytest.fixture
def ledger(db_url: str):
    with Store(db_url) as store:
        yield Ledger(store)


@pytest.fixture
def alice_paid(ledger: Ledger) -> Ledger:
    ledger.offer(reg("alice"), contrib("c1", {"alice": 1}), sale("v1", "c1", 1000),
                 payout("pay1", "alice", 600, at="2026-10-20T00:00:00Z"))
    assert ledger.balances()[("alice", "USD")] == (1000, 0, 600, 400)
    return ledger


def test_a_returned_payout_is_owed_again(alice_paid: Ledger):
    assert alice_paid.codes(returned("pay1", at="2026-11-03T09:00:00Z")) == ["accepted"]
    assert alice_paid.balances()[("alice", "USD")] == (1000, 0, 0, 1000)


def test_the_return_is_booked_in_the_month_of_the_return(alice_paid: Ledger):
    alice_paid.offer(returned("pay1", at="2026-11-03T09:00:00Z"))
    periods = {r["period"]: (r["earned"], r["reversed"], r["paid"])
               for r in read_statement(alice_paid.store, "p", "alice", None)}
    assert periods == {"2026-10": (1000, 0, 600), "2026-11": (0, 0, -600)}


def test_returning_a_payout_never_issued_is_an_unknown_reference(alice_paid: Ledger):
    outcome, = alice_paid.offer(returned("pay-nobody-issued"))
    assert (outcome.code, outcome.message) == ("unknown_reference", "payout 'pay-nobody-issued' was never issued")


def test_a_rejected_payout_cannot_be_returned(alice_paid: Ledger):
    assert alice_paid.codes(payout("pay2", "alice", 10**6)) == ["insufficient_balance"]
    assert alice_paid.codes(returned("pay2")) == ["unknown_reference"]


def test_a_payout_is_returned_once(alice_paid: Ledger):
    assert alice_paid.codes(returned("pay1"), returned("pay1")) == ["accepted", "invalid_state"]
    assert alice_paid.balances()[("alice", "USD")] == (1000, 0, 0, 1000)


def test_a_resent_return_is_a_duplicate_even_though_a_second_return_is_refused(alice_paid: Ledger):
    once = returned("pay1", id="ret-1")
    assert alice_paid.codes(once) == ["accepted"]
    assert alice_paid.codes(once) == ["duplicate"]  # §4: duplicate before the state's own refusal


def test_the_returned_payouts_id_stays_taken(alice_paid: Ledger):
    alice_paid.offer(returned("pay1"))
    assert alice_paid.codes(payout("pay1", "alice", 600)) == ["already_exists"]
    assert alice_paid.codes(payout("pay1-again", "alice", 1000)) == ["accepted"]
    assert alice_paid.balances()[("alice", "USD")] == (1000, 0, 1000, 0)


def test_a_return_books_in_the_payouts_currency_and_for_its_prosumer_only(ledger: Ledger):
    ledger.offer(reg("alice"), reg("bob"), contrib("c1", {"alice": 1, "bob": 1}), sale("v1", "c1", 1000, "EUR"),
                 sale("v2", "c1", 300, "JPY"), payout("pe", "alice", 500, "EUR"), payout("pj", "bob", 150, "JPY"))
    ledger.offer(returned("pj"))
    assert ledger.balances() == {("alice", "EUR"): (500, 0, 500, 0), ("bob", "EUR"): (500, 0, 0, 500),
                                 ("alice", "JPY"): (150, 0, 0, 150), ("bob", "JPY"): (150, 0, 0, 150)}


def test_a_return_after_a_clawback_can_leave_the_balance_negative_no_more(ledger: Ledger):
    # alice is paid her whole 1000, then the sale is refunded in full: -1000.
    # The payout bounces: her balance is back to 0, what the refund left her.
    ledger.offer(reg("alice"), contrib("c1", {"alice": 1}), sale("v1", "c1", 1000), payout("pay1", "alice", 1000),
                 ev("value.reversed", {"value": "v1", "amount": 1000}))
    assert ledger.balances()[("alice", "USD")] == (1000, -1000, 1000, -1000)
    ledger.offer(returned("pay1"))
    assert ledger.balances()[("alice", "USD")] == (1000, -1000, 0, 0)


def test_returns_replay_to_the_live_state(alice_paid: Ledger):
    alice_paid.offer(returned("pay1"), payout("pay2", "alice", 999), returned("pay2"))
    report = verify(alice_paid.store, "p")
    assert report.ok, report.difference


def test_the_return_is_the_events_booking(alice_paid: Ledger):
    outcome, = alice_paid.offer(returned("pay1"))
    rows = alice_paid.store.query("SELECT seq, col, currency, entries FROM peerledger_bookings WHERE platform = 'p' "
                                  "ORDER BY seq")
    assert [tuple(map(str, r)) for r in rows] == [
        ("3", "earned", "USD", '[["alice",1000]]'),
        ("4", "paid", "USD", '[["alice",600]]'),
        (str(outcome.seq), "paid", "USD", '[["alice",-600]]'),
    ]
