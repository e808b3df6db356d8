"""Tests of the realistic event-stream generator (ledger/demo/generate.py).

Self-contained on purpose (stdlib + orjson): a small reference ledger below
applies the rules of EVENTS.md exactly (Fractions, largest remainder) so the
test does not depend on the ledger modules written alongside.
"""

from __future__ import annotations

import io
import re
from collections import Counter, defaultdict
from fractions import Fraction

import orjson

from ledger.demo.generate import generate, generate_many, write_jsonl

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
POOL_TYPES = {"pool.opened", "pool.funded", "usage.recorded", "pool.closed"}
TYPES = {
    "prosumer.registered", "contribution.recorded", "output.composed", "value.realized",
    "value.reversed", "policy.set", "work.retracted", "work.reinstated", "work.reassigned",
    "payout.issued", "payout.returned", *POOL_TYPES,
}
CREATES = {  # type -> (data field, namespace); pools and values share one (EVENTS.md §7)
    "prosumer.registered": ("prosumer", "prosumer"),
    "contribution.recorded": ("work", "work"),
    "output.composed": ("work", "work"),
    "value.realized": ("value", "value"),
    "pool.opened": ("pool", "value"),
    "payout.issued": ("payout", "payout"),
}

_CACHE: dict = {}


def stream(seed: int, n: int, ppm: int = 0) -> list[dict]:
    key = (seed, n, ppm)
    if key not in _CACHE:
        _CACHE[key] = list(generate(seed, n, "demo", bad_fraction_ppm=ppm))
    return _CACHE[key]


def references(ev: dict) -> list[tuple[str, str]]:
    """(namespace, id) of everything an event refers to."""
    t, d = ev["type"], ev["data"]
    refs = [("prosumer", p) for p in d.get("authors", {})]
    if t == "output.composed":
        refs += [("work", c) for c in d["components"]]
    if t in ("value.realized", "work.retracted", "work.reinstated", "work.reassigned"):
        refs.append(("work", d["work"]))
    if t == "value.reversed":
        refs.append(("value", d["value"]))
    if t == "payout.issued":
        refs.append(("prosumer", d["prosumer"]))
    if t == "payout.returned":
        refs.append(("payout", d["payout"]))
    if t in POOL_TYPES - {"pool.opened"}:
        refs.append(("value", d["pool"]))
        refs += [("work", w) for w in d.get("uses", {})]
    return refs


# --------------------------------------------------------------------------- reference ledger
class MiniLedger:
    """Outcome of each event per EVENTS.md section 4 (one platform, exact arithmetic).

    Pools (section 7) are checked (they exist, are open, their works exist)
    but not split: their bookings are left out of the balances, which only
    makes the payout check stricter (the generator's payouts never count on
    pool earnings)."""

    def __init__(self) -> None:
        self.seen: dict[str, bytes] = {}
        self.prosumers: set[str] = set()
        self.works: dict[str, tuple] = {}  # id -> (kind, authors, components, upstream_bps)
        self.values: dict[str, list] = {}  # id -> [amount, reversed, shares, currency]
        self.payouts: dict[str, tuple[str, str, int]] = {}  # id -> (prosumer, currency, amount)
        self.returned: set[str] = set()
        self.pools: dict[str, bool] = {}  # pool -> closed
        self.retracted: set[str] = set()
        self.fee = 0
        self.balance: defaultdict = defaultdict(int)

    def shares(self, work: str) -> dict:
        s_: defaultdict = defaultdict(Fraction)
        f = Fraction(self.fee, 10_000)
        s_["@platform"] += f
        stack = [(work, 1 - f)]
        while stack:
            n, s = stack.pop()
            if s == 0:
                continue
            if n in self.retracted:
                s_["@unattributed"] += s
                continue
            kind, authors, comps, up = self.works[n]
            u = Fraction(up, 10_000) if kind == "o" else Fraction(0)
            total = sum(authors.values())
            for p, a in authors.items():
                s_[p] += s * (1 - u) * a / total
            if kind == "o":
                tk = sum(comps.values())
                stack.extend((c, s * u * k / tk) for c, k in comps.items())
        return {r: x for r, x in s_.items() if x}

    @staticmethod
    def alloc(x: int, shares: dict) -> dict:
        fl = {r: (x * s).numerator // (x * s).denominator for r, s in shares.items()}
        left = x - sum(fl.values())
        for r in sorted(shares, key=lambda r: (-(x * shares[r] - fl[r]), r))[:left]:
            fl[r] += 1
        return fl

    def offer(self, ev: dict) -> str:
        t, d = ev["type"], ev["data"]
        for k in ("amount", "platform_fee_bps"):
            if k in d and type(d[k]) is not int:
                return "invalid"
        raw = orjson.dumps(ev, option=orjson.OPT_SORT_KEYS)
        if ev["id"] in self.seen:
            return "duplicate" if self.seen[ev["id"]] == raw else "conflict"
        outcome = self._apply(t, d)
        if outcome == "accepted":
            self.seen[ev["id"]] = raw
        return outcome

    def _apply(self, t: str, d: dict) -> str:  # noqa: C901 - a straight transcription of the rules
        known = {"prosumer": self.prosumers, "work": self.works, "value": self.values.keys() | self.pools.keys(),
                 "payout": self.payouts}
        if t in CREATES:
            field, ns = CREATES[t]
            if d[field] in known[ns]:
                return "already_exists"
        if any(i not in known[ns] for ns, i in references({"type": t, "data": d})):
            return "unknown_reference"
        if t in POOL_TYPES:
            if t == "pool.opened":
                self.pools[d["pool"]] = False
            elif self.pools[d["pool"]]:
                return "invalid_state"
            elif t == "pool.closed":
                self.pools[d["pool"]] = True
            return "accepted"
        if t == "policy.set":
            self.fee = d["platform_fee_bps"]
        elif t == "prosumer.registered":
            self.prosumers.add(d["prosumer"])
        elif t == "contribution.recorded":
            self.works[d["work"]] = ("c", dict(d["authors"]), None, None)
        elif t == "output.composed":
            authors, up = d.get("authors", {}), d.get("upstream_bps", 10_000)
            if not authors and up != 10_000:
                return "invalid"
            self.works[d["work"]] = ("o", dict(authors), dict(d["components"]), up)
        elif t == "value.realized":
            shares = self.shares(d["work"])
            self.values[d["value"]] = [d["amount"], 0, shares, d["currency"]]
            for r, x in self.alloc(d["amount"], shares).items():
                self.balance[r, d["currency"]] += x
        elif t == "value.reversed":
            v = self.values[d["value"]]
            if v[1] + d["amount"] > v[0]:
                return "over_reversal"
            before, after = self.alloc(v[1], v[2]), self.alloc(v[1] + d["amount"], v[2])
            for r in v[2]:
                self.balance[r, v[3]] += before[r] - after[r]
            v[1] += d["amount"]
        elif t == "payout.issued":
            key = (d["prosumer"], d["currency"])
            if d["amount"] > self.balance[key]:
                return "insufficient_balance"
            self.payouts[d["payout"]] = (d["prosumer"], d["currency"], d["amount"])
            self.balance[key] -= d["amount"]
        elif t == "payout.returned":
            if d["payout"] in self.returned:
                return "invalid_state"
            prosumer, currency, amount = self.payouts[d["payout"]]
            self.returned.add(d["payout"])
            self.balance[prosumer, currency] += amount
        elif t == "work.retracted":
            if d["work"] in self.retracted:
                return "invalid_state"
            self.retracted.add(d["work"])
        elif t == "work.reinstated":
            if d["work"] not in self.retracted:
                return "invalid_state"
            self.retracted.discard(d["work"])
        elif t == "work.reassigned":
            kind, _, comps, up = self.works[d["work"]]
            if not d["authors"] and not (kind == "o" and up == 10_000):
                return "invalid"
            self.works[d["work"]] = (kind, dict(d["authors"]), comps, up)
        return "accepted"


# --------------------------------------------------------------------------- tests
def test_deterministic() -> None:
    a = orjson.dumps(list(generate(42, 3000)))
    assert a == orjson.dumps(list(generate(42, 3000)))
    assert a != orjson.dumps(list(generate(43, 3000)))
    assert len(list(generate(1, 0))) == 0
    assert len(list(generate(1, 1))) == 1


def test_envelope_ids_and_time() -> None:
    evs = stream(1, 20_000)
    assert len(evs) == 20_000
    assert evs[0]["type"] == "policy.set"
    event_ids: set[str] = set()
    created: dict[str, set[str]] = defaultdict(set)
    prev_at = ""
    for ev in evs:
        assert list(ev) == ["v", "id", "platform", "type", "at", "data"]
        assert ev["v"] == 1 and ev["platform"] == "demo" and ev["type"] in TYPES
        assert ID_RE.match(ev["id"]) and ev["id"] not in event_ids
        event_ids.add(ev["id"])
        assert AT_RE.match(ev["at"]) and ev["at"] > prev_at  # strictly increasing
        prev_at = ev["at"]
        for ns, ref in references(ev):  # referenced before, by an earlier event
            assert ref in created[ns], (ev, ns, ref)
        if ev["type"] in CREATES:
            field, ns = CREATES[ev["type"]]
            new = ev["data"][field]
            assert ID_RE.match(new) and new not in created[ns], ev
            created[ns].add(new)
    months = {ev["at"][:7] for ev in evs}
    assert len(months) >= 6
    assert 400 <= len(created["prosumer"]) <= 1600
    assert any(not ev["data"].get("name", "").isascii()
               for ev in evs if ev["type"] == "prosumer.registered")


def test_mix_and_depth() -> None:
    evs = stream(1, 20_000)
    mix = Counter(ev["type"] for ev in evs)
    assert set(mix) == TYPES, mix
    assert 0.40 < mix["value.realized"] / len(evs) < 0.60
    assert 0.20 < mix["contribution.recorded"] / len(evs) < 0.30
    assert {ev["data"]["currency"] for ev in evs if ev["type"] == "value.realized"} == {"USD", "EUR", "JPY"}
    depth: dict[str, int] = {}
    for ev in evs:
        if ev["type"] == "contribution.recorded":
            depth[ev["data"]["work"]] = 0
        elif ev["type"] == "output.composed":
            d = ev["data"]
            assert 1 <= len(d["components"]) <= 8
            assert d.get("authors") or d.get("upstream_bps", 10_000) == 10_000
            depth[d["work"]] = 1 + max(depth[c] for c in d["components"])
    assert max(depth.values()) >= 4
    # popularity is skewed: the most reused contribution is used far more than the median one
    uses = Counter(c for ev in evs if ev["type"] == "output.composed"
                   for c in ev["data"]["components"] if c.startswith("c"))
    counts = sorted(uses.values())
    assert counts[-1] >= 20 * counts[len(counts) // 2]


def test_a_subscription_pool_a_month_heavy_tailed_usage_and_the_method_switch_at_half_way() -> None:
    """One pool per month, opened at its first event and closed at the next
    month's; pro_rata in the first half of the stream, user_centric after;
    every subscriber pays before they play; most subscribers play a little
    (the median one or two days of use), a few a lot (the top one at least 20
    times the median), and some pay without playing."""
    evs = stream(1, 20_000)
    opened = [(i, e["data"]) for i, e in enumerate(evs) if e["type"] == "pool.opened"]
    closed = [e["data"]["pool"] for e in evs if e["type"] == "pool.closed"]
    assert len(opened) >= 8 and closed == [d["pool"] for _, d in opened[:len(closed)]]
    assert len(closed) >= len(opened) - 1
    for i, d in opened:
        assert d["pool"] == f"subs-{evs[i]['at'][:7]}"
        assert d["method"] == ("pro_rata" if i < len(evs) // 2 else "user_centric")
    paid: set[tuple[str, str]] = set()
    days = Counter()
    for e in evs:
        d = e["data"]
        if e["type"] == "pool.funded":
            paid.add((d["pool"], d["subscriber"]))
        elif e["type"] == "usage.recorded":
            assert (d["pool"], d["subscriber"]) in paid
            days[d["subscriber"]] += 1
    counts = sorted(days.values())
    assert counts[len(counts) // 2] <= 2 and counts[-1] >= 20 * counts[len(counts) // 2]
    assert {s for _, s in paid} - set(days)  # paid, never played


def test_no_bad_events_without_bad_fraction() -> None:
    """Every event is accepted by an exact reference ledger (payouts never exceed balances)."""
    for seed, n in ((1, 8000), (2, 3000)):
        ledger = MiniLedger()
        outcomes = Counter(ledger.offer(ev) for ev in stream(seed, n))
        assert outcomes == {"accepted": n}, outcomes
        assert ledger.payouts  # there were payouts, and all fit
        assert any(v[1] for v in ledger.values.values())  # and refunds


def test_bad_fraction() -> None:
    evs = stream(5, 8000, ppm=20_000)
    assert len(evs) == 8000
    ledger = MiniLedger()
    outcomes = Counter(ledger.offer(ev) for ev in evs)
    bad = 8000 - outcomes["accepted"]
    assert 80 <= bad <= 260, outcomes  # ~160 expected
    for code in ("duplicate", "conflict", "unknown_reference", "invalid", "invalid_state",
                 "over_reversal", "already_exists", "insufficient_balance"):
        assert outcomes[code] > 0, (code, outcomes)
    # the good events are exactly the ones generated without bad events would be
    # accepted: bad ones never take ids that good ones use later
    good_ids = [ev["id"] for ev in evs if ev["id"].startswith("e")]
    assert len(set(good_ids)) + outcomes["duplicate"] + outcomes["conflict"] == len(good_ids)
    assert outcomes["accepted"] == len(set(good_ids))


def test_generate_many_and_write_jsonl() -> None:
    evs = list(generate_many(3, 6001, ["alpha", "beta", "gamma"]))
    assert len(evs) == 6001
    per = defaultdict(list)
    for ev in evs:
        per[ev["platform"]].append(ev)
    assert sorted(per) == ["alpha", "beta", "gamma"]
    for sub in per.values():
        assert [e["at"] for e in sub] == sorted(e["at"] for e in sub)
        assert len(sub) in (2000, 2001)
        assert sub[0]["type"] == "policy.set"
    assert orjson.dumps(evs) == orjson.dumps(list(generate_many(3, 6001, ["alpha", "beta", "gamma"])))
    assert len({e["platform"] for e in evs[:100]}) == 3  # interleaved

    buf = io.BytesIO()
    assert write_jsonl(buf, iter(evs[:500])) == 500
    lines = buf.getvalue().split(b"\n")
    assert lines[-1] == b"" and [orjson.loads(x) for x in lines[:-1]] == evs[:500]
    text = io.StringIO()
    assert write_jsonl(text, evs[:10]) == 10
    assert text.getvalue() == b"\n".join(lines[:10]).decode() + "\n"
