"""The state in tables (issue 13): a writer reads what a batch names, in one
query per table; starts from the stored head, never from the log; keeps its
caches within their budget; and walks the stored graph, whatever its size."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from ledger.audit.verify import verify
from ledger.demo.generate import generate
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered, batches
from ledger.storage import state as state_tables
from ledger.storage.store import Store
from ledger.storage.views import read_explain
from projections.balances import balance_rows, balances_digest
from projections.state import Figures, StateCaches


def lines(n: int, platform: str = "gen", seed: int = 5) -> list[bytes]:
    return [orjson.dumps(e) for e in generate(seed, n, platform)]


def ingest(ingestor: Ingestor, items: list[bytes]) -> list[Any]:
    return [o for batch in batches(Offered(x, "t") for x in items) for o in ingestor.ingest(batch)]


def test_a_batch_reads_the_rows_its_events_name_once_per_table(db_url: str, monkeypatch: pytest.MonkeyPatch):
    """Cold (a new process): one read per table for the rows the events name,
    plus the walks down the graph below works sold at a new graph state, one
    read per level, far fewer than one per event.  Warm: a handful in all."""
    stream = lines(5000)
    reads: Counter[str] = Counter()
    select = state_tables.SqlState.select

    def counting(self: Any, table: str, *args: Any) -> Any:
        reads[table] += 1
        return select(self, table, *args)

    with Store(db_url) as store:
        ingest(Ingestor(store), stream[:3000])
        monkeypatch.setattr(state_tables.SqlState, "select", counting)
        writer = Ingestor(store)  # a fresh process: cold caches
        writer.ingest([Offered(x, "t") for x in stream[3000:4000]])
        cold, reads = dict(reads), Counter()
        writer.ingest([Offered(x, "t") for x in stream[4000:5000]])
    named = ("peerledger_prosumers", "peerledger_values", "peerledger_payouts", "peerledger_pools",
             "peerledger_balances", "peerledger_statements")
    assert all(cold.get(table, 0) <= 2 for table in named), cold  # read ahead, then the figures written
    assert sum(cold.values()) < 100, cold  # 1000 events
    assert sum(reads.values()) < 40, reads  # the same writer, the next 1000


def test_a_writer_starts_from_the_stored_head_and_reads_no_log(db_url: str, monkeypatch: pytest.MonkeyPatch):
    stream = lines(3000)
    with Store(db_url) as store:
        ingest(Ingestor(store), stream[:2999])
        monkeypatch.setattr(Store, "read_log", lambda *a, **k: pytest.fail("a writer read the log"))
        (outcome,) = Ingestor(store).ingest([Offered(stream[2999], "t")])
        monkeypatch.undo()
        assert outcome.outcome in ("accepted", "rejected") and store.head("gen") >= 2900
        assert verify(store, "gen").ok


def test_the_state_caches_stay_within_their_budget(sqlite_url: str):
    caches = StateCaches(budget_bytes=2 * 1024 * 1024)
    with Store(sqlite_url) as store:
        writer = Ingestor(store, caches)
        ingest(writer, lines(6000))
        stats = writer.cache_stats()
        assert stats and sum(max_size for *_, max_size in stats.values()) <= 2 * 1024 * 1024
        for kind, (_rows, _entries, size, max_size) in stats.items():
            assert size <= max_size, kind
        report = verify(store, "gen")  # a tiny cache misses often: the state must still be exact
        assert report.ok, report.difference


def ev(type_: str, data: dict[str, Any], n: list[int] = [0]) -> bytes:  # noqa: B006 — a counter of ids
    n[0] += 1
    return orjson.dumps({"v": 1, "id": f"e{n[0]}", "platform": "fan", "type": type_,
                         "at": "2026-11-01T00:00:00Z", "data": data})


@pytest.mark.slow
def test_retracting_a_work_with_5000_dependents_bumps_each_once_and_later_sales_see_it(db_url: str):
    dependents = 5000
    events = [ev("prosumer.registered", {"prosumer": "ann"}), ev("prosumer.registered", {"prosumer": "bo"}),
              ev("contribution.recorded", {"work": "c", "authors": {"ann": 1}})]
    events += [ev("output.composed", {"work": f"o{i}", "components": {"c": 1}, "authors": {"bo": 1},
                                      "upstream_bps": 5000}) for i in range(dependents)]
    events += [ev("value.realized", {"value": "before", "work": "o7", "amount": 1000, "currency": "USD"}),
               ev("work.retracted", {"work": "c"}),
               ev("value.realized", {"value": "after", "work": "o7", "amount": 1000, "currency": "USD"})]
    with Store(db_url) as store:
        outcomes = ingest(Ingestor(store, StateCaches(budget_bytes=1024 * 1024)), events)
        assert {o.outcome for o in outcomes} == {"accepted"}
        versions = Counter(int(v) for (v,) in store.query(
            "SELECT version FROM peerledger_works WHERE platform = 'fan'"))
        assert versions == {1: dependents + 1}  # c and each of its 5000 dependents, once
        # The sale before keeps its split; the one after sends c's half to @unattributed.
        assert read_explain(store, "fan", "before")["allocation"] == {"ann": 500, "bo": 500}
        assert read_explain(store, "fan", "after")["allocation"] == {"@unattributed": 500, "bo": 500}
        report = verify(store, "fan")
        assert report.ok, report.difference


def test_a_recorded_balances_digest_is_the_spec_digest_of_every_account_streamed_in_code_point_order(db_url: str):
    """EVENTS.md §5's digest of the balances array, sorted by account then
    currency in code point order, hashed from the table a page at a time:
    25 000 accounts (more than a page), names that sort differently by
    UTF-16, by locale and by code point, and a sum beyond 64 bits."""
    names = ["Zoe", "zoe", "émile", "\U0001f600smile", "\uffffend", "a b", "a-b", "ab"]
    figures = {(f"{names[i % len(names)]}{i:05d}" if i >= len(names) else names[i], "EUR" if i % 3 else "JPY"):
               Figures(earned=1000 + i, reversed=-(i % 7), paid=i % 11) for i in range(25_000)}
    figures[("whale", "USD")] = Figures(earned=2**70 + 3, reversed=0, paid=1)
    rows = [("p", a, c, f.earned, f.reversed, f.paid, f.balance) for (a, c), f in figures.items()]
    assert len(rows) > state_tables.DIGEST_PAGE_ROWS
    with Store(db_url) as store:
        store.write_state(state_tables.StateRows({"peerledger_balances": rows}, [("p", 100_000)]))
        (recorded,) = store.query("SELECT digest FROM peerledger_digests WHERE platform = ? AND seq = ?",
                                  ("p", 100_000))
    assert recorded[0] == balances_digest(balance_rows(figures))
