"""Random event sequences against a small model written here, from the spec.

The model is deliberately naive: attribution by recursive path enumeration
with Fractions, allocation by sorting exact fractional parts.  The ledger
under test is the real one, on a real SQLite file.  Every offered event must
get the outcome the model predicts (in the spec's check order), and the
balances must agree after every step.
"""

from __future__ import annotations

import itertools
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ledger.audit.verify import verify
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered
from ledger.storage.store import Store
from ledger.storage.views import read_balances

PROSUMERS = ["a", "b", "c", "d"]
WORKS = ["w1", "w2", "w3", "w4", "w5", "w6"]
VALUES = ["v1", "v2", "v3", "v4"]
PAYOUTS = ["p1", "p2", "p3"]
CURRENCIES = ["USD", "EUR"]

weights = st.integers(1, 5)
authors_st = st.dictionaries(st.sampled_from(PROSUMERS), weights, min_size=1, max_size=3)


class Model:
    def __init__(self) -> None:
        self.prosumers: set[str] = set()
        self.works: dict[str, dict[str, Any]] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self.payouts: set[str] = set()
        self.fee_bps = 0
        self.balances: dict[tuple[str, str], list[int]] = {}

    # -- attribution, naively -------------------------------------------
    def flow(self, work: str, s: Fraction, shares: dict[str, Fraction]) -> None:
        if s == 0:
            return
        w = self.works[work]
        if w["retracted"]:
            shares["@unattributed"] = shares.get("@unattributed", 0) + s
            return
        u = Fraction(w["upstream"], 10_000) if w["kind"] == "output" else Fraction(0)
        total_a = sum(w["authors"].values())
        for p, a in w["authors"].items():
            shares[p] = shares.get(p, 0) + s * (1 - u) * a / total_a
        if w["kind"] == "output":
            total_k = sum(w["components"].values())
            for c, k in w["components"].items():
                self.flow(c, s * u * Fraction(k, total_k), shares)

    def shares(self, work: str) -> dict[str, Fraction]:
        f = Fraction(self.fee_bps, 10_000)
        shares: dict[str, Fraction] = {"@platform": f} if f else {}
        self.flow(work, 1 - f, shares)
        return {r: s for r, s in shares.items() if s != 0}

    @staticmethod
    def alloc(x: int, shares: dict[str, Fraction]) -> dict[str, int]:
        exact = {r: x * s for r, s in shares.items()}
        out = {r: int(e) for r, e in exact.items()}  # floor: all non-negative
        left = x - sum(out.values())
        for r in sorted(exact, key=lambda r: (-(exact[r] - out[r]), r))[:left]:
            out[r] += 1
        return out

    def book(self, account: str, currency: str, column: int, amount: int) -> None:
        self.balances.setdefault((account, currency), [0, 0, 0])[column] += amount

    def balance(self, p: str, currency: str) -> int:
        e, r, pd = self.balances.get((p, currency), [0, 0, 0])
        return e + r - pd


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.store = Store(f"sqlite:///{Path(self.tmp.name) / 'l.db'}")
        self.ingestor = Ingestor(self.store)
        self.model = Model()
        self.accepted: list[dict[str, Any]] = []
        self.ids = itertools.count(1)

    def teardown(self) -> None:
        rows = read_balances(self.store, "p")
        assert {(r["account"], r["currency"]): [r["earned"], r["reversed"], r["paid"]] for r in rows} == self.model.balances
        if self.accepted:
            report = verify(self.store, "p")
            assert report.ok, report.difference
        self.store.close()
        self.tmp.cleanup()

    def offer(self, type_: str, data: dict[str, Any], expected: str, event_id: str | None = None) -> bool:
        event = {"v": 1, "id": event_id or f"e{next(self.ids)}", "platform": "p", "type": type_,
                 "at": "2026-10-01T00:00:00Z", "data": data}
        (outcome,) = self.ingestor.ingest([Offered(orjson.dumps(event), "model")])
        got = outcome.code or outcome.outcome
        assert got == expected, (event, got, expected, outcome.message)
        if got == "accepted":
            self.accepted.append(event)
        return got == "accepted"

    # -- rules ---------------------------------------------------------
    @rule(p=st.sampled_from(PROSUMERS))
    def register(self, p: str) -> None:
        m = self.model
        if self.offer("prosumer.registered", {"prosumer": p}, "already_exists" if p in m.prosumers else "accepted"):
            m.prosumers.add(p)

    @rule(w=st.sampled_from(WORKS), authors=authors_st)
    def contribute(self, w: str, authors: dict[str, int]) -> None:
        m = self.model
        expected = ("already_exists" if w in m.works
                    else "unknown_reference" if not set(authors) <= m.prosumers else "accepted")
        if self.offer("contribution.recorded", {"work": w, "authors": authors}, expected):
            m.works[w] = {"kind": "contribution", "authors": authors, "retracted": False}

    @rule(w=st.sampled_from(WORKS), components=st.dictionaries(st.sampled_from(WORKS), weights, min_size=1, max_size=3),
          authors=st.dictionaries(st.sampled_from(PROSUMERS), weights, max_size=2), upstream=st.sampled_from([0, 2500, 10_000]))
    def compose(self, w: str, components: dict[str, int], authors: dict[str, int], upstream: int) -> None:
        m = self.model
        if not authors:
            upstream = 10_000
        data: dict[str, Any] = {"work": w, "components": components, "authors": authors, "upstream_bps": upstream}
        expected = ("already_exists" if w in m.works
                    else "unknown_reference" if not (set(components) <= set(m.works) and set(authors) <= m.prosumers)
                    else "accepted")
        if self.offer("output.composed", data, expected):
            m.works[w] = {"kind": "output", "authors": authors, "components": components,
                          "upstream": upstream, "retracted": False}

    @rule(v=st.sampled_from(VALUES), w=st.sampled_from(WORKS), amount=st.integers(1, 2000), cur=st.sampled_from(CURRENCIES))
    def realize(self, v: str, w: str, amount: int, cur: str) -> None:
        m = self.model
        expected = "already_exists" if v in m.values else "unknown_reference" if w not in m.works else "accepted"
        shares = m.shares(w) if expected == "accepted" else {}
        if self.offer("value.realized", {"value": v, "work": w, "amount": amount, "currency": cur}, expected):
            m.values[v] = {"shares": shares, "amount": amount, "reversed": 0, "currency": cur}
            for r, units in m.alloc(amount, shares).items():
                m.book(r, cur, 0, units)

    @rule(v=st.sampled_from(VALUES), amount=st.integers(1, 1200))
    def reverse(self, v: str, amount: int) -> None:
        m = self.model
        value = m.values.get(v)
        expected = ("unknown_reference" if value is None
                    else "over_reversal" if value["reversed"] + amount > value["amount"] else "accepted")
        if self.offer("value.reversed", {"value": v, "amount": amount}, expected):
            before = m.alloc(value["reversed"], value["shares"])
            after = m.alloc(value["reversed"] + amount, value["shares"])
            for r in value["shares"]:
                m.book(r, value["currency"], 1, before[r] - after[r])
            value["reversed"] += amount

    @rule(pid=st.sampled_from(PAYOUTS), p=st.sampled_from(PROSUMERS), amount=st.integers(1, 800), cur=st.sampled_from(CURRENCIES))
    def payout(self, pid: str, p: str, amount: int, cur: str) -> None:
        m = self.model
        expected = ("already_exists" if pid in m.payouts
                    else "unknown_reference" if p not in m.prosumers
                    else "insufficient_balance" if amount > m.balance(p, cur) else "accepted")
        if self.offer("payout.issued", {"payout": pid, "prosumer": p, "amount": amount, "currency": cur}, expected):
            m.payouts.add(pid)
            m.book(p, cur, 2, amount)

    @rule(fee=st.sampled_from([0, 1000, 3333, 10_000]))
    def policy(self, fee: int) -> None:
        if self.offer("policy.set", {"platform_fee_bps": fee}, "accepted"):
            self.model.fee_bps = fee

    @rule(w=st.sampled_from(WORKS), retract=st.booleans())
    def retract_or_reinstate(self, w: str, retract: bool) -> None:
        m = self.model
        work = m.works.get(w)
        expected = ("unknown_reference" if work is None
                    else "invalid_state" if work["retracted"] == retract else "accepted")
        if self.offer("work.retracted" if retract else "work.reinstated", {"work": w}, expected):
            work["retracted"] = retract

    @rule(w=st.sampled_from(WORKS), authors=st.dictionaries(st.sampled_from(PROSUMERS), weights, max_size=2))
    def reassign(self, w: str, authors: dict[str, int]) -> None:
        m = self.model
        work = m.works.get(w)
        if work is None or not set(authors) <= m.prosumers:
            expected = "unknown_reference"
        elif not authors and not (work["kind"] == "output" and work["upstream"] == 10_000):
            expected = "invalid"
        else:
            expected = "accepted"
        if self.offer("work.reassigned", {"work": w, "authors": authors}, expected):
            work["authors"] = authors

    @precondition(lambda self: self.accepted)
    @rule(data=st.data(), change=st.booleans())
    def resend(self, data: st.DataObject, change: bool) -> None:
        event = data.draw(st.sampled_from(self.accepted))
        if change:
            changed = {**event, "at": "2027-01-01T00:00:00Z"}
            (outcome,) = self.ingestor.ingest([Offered(orjson.dumps(changed), "model")])
            assert outcome.code == "conflict"
        else:
            (outcome,) = self.ingestor.ingest([Offered(orjson.dumps(event), "model")])
            assert outcome.outcome == "duplicate"

    @invariant()
    def live_balances_match_the_model(self) -> None:
        # The read models commit with each event: the ledger's balances after
        # every step, as any reader sees them.
        live = {(r["account"], r["currency"]): [r["earned"], r["reversed"], r["paid"]]
                for r in read_balances(self.store, "p")}
        assert live == self.model.balances


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerAgainstModel = LedgerMachine.TestCase
