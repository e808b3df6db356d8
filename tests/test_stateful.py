"""Random event sequences against a small model written here, from the spec.

The model is deliberately naive: attribution by recursive path enumeration
with Fractions, allocation by sorting exact fractional parts, and usage pools
(EVENTS.md §7) split at their close by both methods, stage 1 and stage 2
with Fractions straight from the section's formulas.  The ledger under test
is the real one, on a real SQLite file.  Every offered event must get the
outcome the model predicts (in the spec's check order), the balances must
agree after every step, and a closed pool's explanation must be the model's
(both methods' stage 1 and allocations).
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
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ledger.audit.verify import verify
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered
from ledger.storage.store import Store
from ledger.storage.views import read_balances, read_explain

PROSUMERS = ["a", "b", "c", "d"]
WORKS = ["w1", "w2", "w3", "w4", "w5", "w6"]
VALUES = ["v1", "v2", "v3", "v4"]
PAYOUTS = ["p1", "p2", "p3"]
CURRENCIES = ["USD", "EUR"]
# Pool ids share the namespace of value ids: "v1" may be taken by either.
POOLS = ["P", "Q", "v1"]
SUBSCRIBERS = ["s1", "s2", "s3"]
METHODS = ["pro_rata", "user_centric"]
MAX_AMOUNT = 2**63 - 1

weights = st.integers(1, 5)
authors_st = st.dictionaries(st.sampled_from(PROSUMERS), weights, min_size=1, max_size=3)


class Model:
    def __init__(self) -> None:
        self.prosumers: set[str] = set()
        self.works: dict[str, dict[str, Any]] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self.payouts: dict[str, dict[str, Any]] = {}  # id -> prosumer, amount, currency, returned
        self.pools: dict[str, dict[str, Any]] = {}
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

    # -- pools, naively from EVENTS.md §7 --------------------------------
    def stage_1(self, pool: dict[str, Any], method: str) -> dict[str, int]:
        funding, usage = pool["funding"], pool["usage"]
        x = sum(funding.values())
        by_work: dict[str, int] = {}
        for uses in usage.values():
            for w, n in uses.items():
                by_work[w] = by_work.get(w, 0) + n
        total = sum(by_work.values())
        if total == 0:
            return {}
        everyone = {w: Fraction(n, total) for w, n in by_work.items()}
        if method == "pro_rata":
            return self.alloc(x, everyone)
        m: dict[str, int] = {}
        for s, paid in funding.items():
            if not paid:
                continue
            own = usage.get(s, {})
            own_total = sum(own.values())
            split = everyone if own_total == 0 else {w: Fraction(n, own_total) for w, n in own.items()}
            for w, units in self.alloc(paid, split).items():
                m[w] = m.get(w, 0) + units
        return m

    def pool_shares(self, x: int, works: dict[str, int]) -> dict[str, Fraction]:
        if x == 0:
            return {}
        f = Fraction(self.fee_bps, 10_000)
        shares: dict[str, Fraction] = {"@platform": f}
        if not works:
            shares["@unattributed"] = 1 - f
        for w, units in works.items():
            self.flow(w, (1 - f) * Fraction(units, x), shares)
        return {r: s for r, s in shares.items() if s != 0}

    def book(self, account: str, currency: str, column: int, amount: int) -> None:
        self.balances.setdefault((account, currency), [0, 0, 0])[column] += amount

    def balance(self, p: str, currency: str) -> int:
        e, r, pd = self.balances.get((p, currency), [0, 0, 0])
        return e + r - pd


class ModelMachine(RuleBasedStateMachine):
    """The real ledger beside the model; the rules both machines share."""

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

    def seed(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Accepted events that start every run, given to the model as well."""
        m = self.model
        for type_, data in events:
            self.offer(type_, data, "accepted")
            if type_ == "prosumer.registered":
                m.prosumers.add(data["prosumer"])
            elif type_ == "contribution.recorded":
                m.works[data["work"]] = {"kind": "contribution", "authors": data["authors"], "retracted": False}
            elif type_ == "output.composed":
                m.works[data["work"]] = {"kind": "output", "authors": data["authors"], "retracted": False,
                                         "components": data["components"], "upstream": data["upstream_bps"]}
            else:
                assert type_ == "policy.set"
                m.fee_bps = data["platform_fee_bps"]

    @rule(v=st.sampled_from(VALUES + POOLS), amount=st.integers(1, 1200))
    def reverse(self, v: str, amount: int) -> None:
        m = self.model
        value = m.values.get(v)
        expected = ("invalid_state" if value is None and v in m.pools  # a pool still open, whatever the amount
                    else "unknown_reference" if value is None
                    else "over_reversal" if value["reversed"] + amount > value["amount"] else "accepted")
        if self.offer("value.reversed", {"value": v, "amount": amount}, expected):
            before = m.alloc(value["reversed"], value["shares"])
            after = m.alloc(value["reversed"] + amount, value["shares"])
            for r in value["shares"]:
                m.book(r, value["currency"], 1, before[r] - after[r])
            value["reversed"] += amount

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

    @invariant()
    def live_balances_match_the_model(self) -> None:
        # The read models commit with each event: the ledger's balances after
        # every step, as any reader sees them.
        live = {(r["account"], r["currency"]): [r["earned"], r["reversed"], r["paid"]]
                for r in read_balances(self.store, "p")}
        assert live == self.model.balances


class CoreRules(ModelMachine):
    """Prosumers, works, sales, payouts and their returns, resends (EVENTS.md §2-4, §8)."""

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
        expected = ("already_exists" if v in m.values or v in m.pools
                    else "unknown_reference" if w not in m.works else "accepted")
        shares = m.shares(w) if expected == "accepted" else {}
        if self.offer("value.realized", {"value": v, "work": w, "amount": amount, "currency": cur}, expected):
            m.values[v] = {"shares": shares, "amount": amount, "reversed": 0, "currency": cur}
            for r, units in m.alloc(amount, shares).items():
                m.book(r, cur, 0, units)

    @rule(pid=st.sampled_from(PAYOUTS), p=st.sampled_from(PROSUMERS), amount=st.integers(1, 800), cur=st.sampled_from(CURRENCIES))
    def payout(self, pid: str, p: str, amount: int, cur: str) -> None:
        m = self.model
        expected = ("already_exists" if pid in m.payouts
                    else "unknown_reference" if p not in m.prosumers
                    else "insufficient_balance" if amount > m.balance(p, cur) else "accepted")
        if self.offer("payout.issued", {"payout": pid, "prosumer": p, "amount": amount, "currency": cur}, expected):
            m.payouts[pid] = {"prosumer": p, "amount": amount, "currency": cur, "returned": False}
            m.book(p, cur, 2, amount)

    @rule(pid=st.sampled_from(PAYOUTS))
    def returned(self, pid: str) -> None:
        """EVENTS.md §8: a bounced payout is owed again, once."""
        m = self.model
        payout = m.payouts.get(pid)
        expected = ("unknown_reference" if payout is None else "invalid_state" if payout["returned"]
                    else "accepted")
        if self.offer("payout.returned", {"payout": pid, "reason": "AC04"}, expected):
            payout["returned"] = True
            m.book(payout["prosumer"], payout["currency"], 2, -payout["amount"])

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


class PoolRules(ModelMachine):
    """Usage pools (EVENTS.md §7): open, fund, use, close; refunds, fee
    changes and takedowns come from the shared rules."""

    @rule(pool=st.sampled_from(POOLS), cur=st.sampled_from(CURRENCIES), method=st.sampled_from(METHODS))
    def open_pool(self, pool: str, cur: str, method: str) -> None:
        m = self.model
        expected = "already_exists" if pool in m.pools or pool in m.values else "accepted"
        if self.offer("pool.opened", {"pool": pool, "currency": cur, "method": method}, expected):
            m.pools[pool] = {"currency": cur, "method": method, "closed": False, "funding": {}, "usage": {}}

    def pool_id(self, data: st.DataObject) -> str:
        """Mostly a pool that is open, sometimes any pool id."""
        open_pools = sorted(p for p, pool in self.model.pools.items() if not pool["closed"])
        return data.draw((st.sampled_from(open_pools) | st.sampled_from(POOLS)) if open_pools
                         else st.sampled_from(POOLS))

    @precondition(lambda self: self.model.pools)
    @rule(data=st.data(), s=st.sampled_from(SUBSCRIBERS), amount=st.one_of(st.integers(1, 500), st.just(2**62)))
    def fund(self, data: st.DataObject, s: str, amount: int) -> None:
        m = self.model
        pool = self.pool_id(data)
        p = m.pools.get(pool)
        expected = ("unknown_reference" if p is None else "invalid_state" if p["closed"]
                    or sum(p["funding"].values()) + amount > MAX_AMOUNT else "accepted")
        if self.offer("pool.funded", {"pool": pool, "subscriber": s, "amount": amount}, expected):
            p["funding"][s] = p["funding"].get(s, 0) + amount

    @precondition(lambda self: self.model.pools)
    @rule(s=st.sampled_from(SUBSCRIBERS), data=st.data())
    def use(self, s: str, data: st.DataObject) -> None:
        m = self.model
        pool = self.pool_id(data)
        # Mostly works that exist (a pool's usage), sometimes any work id.
        work = st.sampled_from(sorted(m.works)) | st.sampled_from(WORKS)
        uses = data.draw(st.dictionaries(work, st.integers(1, 5), min_size=1, max_size=2))
        p = m.pools.get(pool)
        expected = ("unknown_reference" if p is None or not set(uses) <= set(m.works)
                    else "invalid_state" if p["closed"] else "accepted")
        if self.offer("usage.recorded", {"pool": pool, "subscriber": s, "uses": uses}, expected):
            own = p["usage"].setdefault(s, {})
            for w, n in uses.items():
                own[w] = own.get(w, 0) + n

    @precondition(lambda self: self.model.pools)
    @rule(data=st.data(), s=st.sampled_from(SUBSCRIBERS), amount=st.integers(0, 500))
    def subscribe_and_play(self, data: st.DataObject, s: str, amount: int) -> None:
        """What a platform sends most: a subscription and its usage."""
        if amount:
            self.fund(data, s, amount)
        self.use(s, data)

    @precondition(lambda self: self.model.pools)
    @rule(data=st.data())
    def close_pool(self, data: st.DataObject) -> None:
        """The model splits the pool by both methods; the ledger must book the
        pool's and explain the other, to the unit."""
        m = self.model
        pool = self.pool_id(data)
        p = m.pools.get(pool)
        expected = "unknown_reference" if p is None else "invalid_state" if p["closed"] else "accepted"
        if not self.offer("pool.closed", {"pool": pool}, expected):
            return
        p["closed"] = True
        x = sum(p["funding"].values())
        other = "user_centric" if p["method"] == "pro_rata" else "pro_rata"
        works = {method: m.stage_1(p, method) for method in (p["method"], other)}
        shares = {method: m.pool_shares(x, works[method]) for method in works}
        allocation = {method: m.alloc(x, shares[method]) for method in works}
        m.values[pool] = {"shares": shares[p["method"]], "amount": x, "reversed": 0, "currency": p["currency"]}
        for r, units in allocation[p["method"]].items():
            m.book(r, p["currency"], 0, units)
        ex = read_explain(self.store, "p", pool)
        assert ex["amount"] == x and ex["allocation"] == allocation[p["method"]]
        assert {r: Fraction(s) for r, s in ex["shares"].items()} == shares[p["method"]]
        assert ex["pool"] == {"method": p["method"], "works": works[p["method"]], "alternative": {
            "method": other, "works": works[other], "allocation": allocation[other]}}


    def refundable(self) -> list[str]:
        m = self.model
        return sorted(i for i, p in m.pools.items() if p["closed"] and m.values[i]["reversed"] < m.values[i]["amount"])

    @precondition(lambda self: self.refundable())
    @rule(data=st.data())
    def refund_pool(self, data: st.DataObject) -> None:
        """A refunded subscription: part or all of what is left of a closed pool."""
        pool = data.draw(st.sampled_from(self.refundable()))
        value = self.model.values[pool]
        self.reverse(pool, data.draw(st.integers(1, value["amount"] - value["reversed"])))


class LedgerMachine(CoreRules, PoolRules):
    """Everything at once, from a small world."""

    @initialize()
    def a_small_world(self) -> None:
        """a and b registered, w1 by {a: 1, b: 2}: with this many rules, a run
        would seldom get a work to sell or use otherwise."""
        self.seed([("prosumer.registered", {"prosumer": "a"}), ("prosumer.registered", {"prosumer": "b"}),
                   ("contribution.recorded", {"work": "w1", "authors": {"a": 1, "b": 2}})])


class PoolMachine(PoolRules):
    """Pools, densely: a graph to split them through (a contribution, a shared
    one, an output remixing both, an output of that output) and two pools
    open, then only the pool rules, refunds, fee changes and takedowns."""

    @initialize()
    def a_graph(self) -> None:
        self.seed([("policy.set", {"platform_fee_bps": 1000}),
                   *(("prosumer.registered", {"prosumer": p}) for p in ("a", "b", "c")),
                   ("contribution.recorded", {"work": "w1", "authors": {"a": 1}}),
                   ("contribution.recorded", {"work": "w2", "authors": {"b": 2, "c": 1}}),
                   ("output.composed", {"work": "w3", "components": {"w1": 1, "w2": 1}, "authors": {"c": 1},
                                        "upstream_bps": 2500}),
                   ("output.composed", {"work": "w4", "components": {"w3": 2, "w1": 1}, "authors": {},
                                        "upstream_bps": 10_000})])
        self.open_pool("P", "USD", "pro_rata")
        self.open_pool("Q", "USD", "user_centric")


SETTINGS = settings(
    max_examples=40, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
LedgerMachine.TestCase.settings = SETTINGS
PoolMachine.TestCase.settings = SETTINGS
TestLedgerAgainstModel = LedgerMachine.TestCase
TestPoolsAgainstModel = PoolMachine.TestCase
