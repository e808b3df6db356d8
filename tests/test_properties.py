"""Invariants of the whole ledger, on real databases, over generated streams."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.numbers import parse_decimal
from ledger.audit.verify import verify
from ledger.demo.generate import generate
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered
from ledger.storage.replay import balances_as_of
from ledger.storage.store import Store
from ledger.storage.views import read_balances, read_explain
from projections.balances import balances_digest

SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def lines(seed: int, n: int, platform: str) -> list[bytes]:
    return [orjson.dumps(e) for e in generate(seed, n, platform, bad_fraction_ppm=50_000)]


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(10, 120))
def test_replay_equals_live_at_every_seq(sqlite_url: str, seed: int, n: int):
    platform = f"r{seed}-{n}"
    with Store(sqlite_url) as store:
        ingestor = Ingestor(store)
        for line in lines(seed, n, platform):
            (outcome,) = ingestor.ingest([Offered(line, "prop")])
            if outcome.outcome != "accepted":
                continue
            live = read_balances(store, platform)
            assert live == balances_as_of(store, platform, outcome.seq)
        if store.head(platform):
            assert verify(store, platform).ok


@pytest.mark.postgres
@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(10, 300))
def test_the_digest_does_not_depend_on_the_backend(sqlite_url: str, pg_url: str, seed: int, n: int):
    platform = f"b{seed}-{n}"
    results = []
    for url in (sqlite_url, pg_url):
        with Store(url) as store:
            outcomes = Ingestor(store).ingest([Offered(line, "prop") for line in lines(seed, n, platform)])
            results.append((
                [(o.outcome, o.code, o.seq) for o in outcomes],
                [e.state for e in store.read_log(platform)],
                balances_digest(read_balances(store, platform)),
            ))
    assert results[0] == results[1]


@SETTINGS
@given(
    weights=st.lists(st.integers(1, 1_000_000), min_size=1, max_size=12),
    fee_bps=st.integers(0, 10_000),
    amount=st.integers(1, 2**63 - 1),
    cuts=st.lists(st.integers(1, 2**62), max_size=6),
)
def test_a_fully_reversed_value_nets_every_recipient_to_zero(sqlite_url: str, weights: list[int], fee_bps: int,
                                                            amount: int, cuts: list[int]):
    platform = f"z{abs(hash((tuple(weights), fee_bps, amount, tuple(cuts)))) % 10**12}"
    events: list[dict[str, Any]] = [ev(platform, "policy.set", {"platform_fee_bps": fee_bps})]
    events += [ev(platform, "prosumer.registered", {"prosumer": f"p{i}"}) for i in range(len(weights))]
    events.append(ev(platform, "contribution.recorded", {"work": "c", "authors": {f"p{i}": w for i, w in enumerate(weights)}}))
    events.append(ev(platform, "value.realized", {"value": "v", "work": "c", "amount": amount, "currency": "USD"}))
    remaining = amount
    for cut in cuts:  # partial refunds in arbitrary pieces, then the rest
        piece = min(cut, remaining - 1)
        if piece >= 1:
            events.append(ev(platform, "value.reversed", {"value": "v", "amount": piece}))
            remaining -= piece
    events.append(ev(platform, "value.reversed", {"value": "v", "amount": remaining}))
    with Store(sqlite_url) as store:
        outcomes = Ingestor(store).ingest([Offered(orjson.dumps(e), "prop") for e in events])
        assert {o.outcome for o in outcomes} == {"accepted"}
        rows = read_balances(store, platform)
    assert sum(r["earned"] for r in rows) == amount  # conservation: every minor unit was allocated
    assert all(r["earned"] + r["reversed"] == 0 for r in rows)


_n = iter(range(10**9))


def ev(platform: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "id": f"e{next(_n)}", "platform": platform, "type": type_, "at": "2026-10-01T00:00:00Z", "data": data}


@pytest.mark.slow
def test_a_remix_chain_3000_outputs_deep_is_attributed_exactly(sqlite_url: str):
    depth = 3000
    p = "chain"
    events = [ev(p, "prosumer.registered", {"prosumer": f"a{i}"}) for i in range(depth + 1)]
    events.append(ev(p, "contribution.recorded", {"work": "o0", "authors": {"a0": 1}}))
    for i in range(1, depth + 1):  # o_i passes half of what reaches it down to o_(i-1)
        events.append(ev(p, "output.composed", {"work": f"o{i}", "components": {f"o{i - 1}": 1},
                                                  "authors": {f"a{i}": 1}, "upstream_bps": 5000}))
    events.append(ev(p, "value.realized", {"value": "top", "work": f"o{depth}", "amount": 10**15, "currency": "USD"}))
    events.append(ev(p, "value.reversed", {"value": "top", "amount": 10**15 // 3}))
    with Store(sqlite_url) as store:
        ingestor = Ingestor(store)
        for i in range(0, len(events), 1000):
            outcomes = ingestor.ingest([Offered(orjson.dumps(e), "chain") for e in events[i:i + 1000]])
            assert {o.outcome for o in outcomes} == {"accepted"}
        ex = read_explain(store, p, "top")
        assert ex is not None
        shares = {r: Fraction(*map(parse_decimal, s.split("/"))) for r, s in ex["shares"].items()}
        # The author k levels below the top gets 2^-(k+1); the contribution's author the last 2^-3000.
        assert len(shares) == depth + 1 and sum(shares.values()) == 1
        assert shares[f"a{depth}"] == Fraction(1, 2) and shares["a1"] == Fraction(1, 2**depth)
        assert shares["a0"] == Fraction(1, 2**depth)
        assert len(str(2**depth)) > 900 and ex["shares"]["a0"] == f"1/{2**depth}"
        assert sum(ex["allocation"].values()) == 10**15
        assert len(ex["paths"]) <= 10 and ex["paths"][0]["recipient"] == f"a{depth}"
        assert verify(store, p).ok
