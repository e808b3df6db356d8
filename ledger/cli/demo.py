"""`peerledger demo`: the main job on the embedded default, end to end.

Generates a realistic peer-production stream (ledger.demo.generate), writes it as
JSON Lines, ingests it with a progress bar, then shows who earned what (the
balances read model, written with the events), the platform's take, how much
value reached contributors through recombination, the monthly subscription
pools under both methods (booked, and what the other would have paid) and
the headline numbers (all from `peerledger insights`, replayed into a
scratch database), and the result of `verify`.
Running it twice shows idempotency: the second run's events are all
duplicates and every figure is unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from ledger.audit.verify import verify
from ledger.cli.common import open_store, write_atomically
from ledger.cli.insights import (
    gini_text,
    money_text,
    percent_text,
    replayed_insights,
    summary_table,
)
from ledger.contract.money import format_money
from ledger.demo.bank import demo_payee, rejection_report
from ledger.demo.generate import generate, write_jsonl
from ledger.payments.files import Debtor, pain001
from ledger.payments.reconcile import reconcile
from ledger.storage.dialect import SQLITE, DbUrl
from ledger.storage.payees import payees_of, set_payees
from ledger.storage.queries import issued_payouts, payout_plan
from ledger.storage.views import read_balances
from projections.balances import canonical_json

DEMO_PLATFORM = "demo"
# The demo's payout run: every EUR balance of at least 50.00 EUR, paid from this account.
DEMO_RUN = "demo-run-1"
DEMO_RUN_MIN_BALANCE_MINOR = 5_000
DEMO_DEBTOR = Debtor("Demo Platform GmbH", "DE02120300000000202051", "BYLADEM1001")
DEMO_OUT = "demo-payouts"  # the run's pain.001 and the bank's pain.002: beside an SQLite file, else here
# Prosumers listed per currency in the top earners' table.
TOP_EARNERS = 5


def run_demo(args: argparse.Namespace) -> int:
    from ledger.ingest.files import ingest_paths

    console = Console(highlight=False)
    console.rule(f"[bold]peerledger demo[/]: {args.events:,} events into {args.db}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "demo-stream.jsonl")
        started = time.perf_counter()
        with open(path, "wb") as f:
            n = write_jsonl(f, generate(args.seed, args.events, DEMO_PLATFORM, bad_fraction_ppm=2000))
        console.print(f"generated {n:,} events (seed {args.seed}, a few deliberately bad) "
                      f"in {time.perf_counter() - started:.1f} s")
        with open_store(args) as store:
            started = time.perf_counter()
            summary = ingest_paths(store, [path], show_progress=sys.stderr.isatty())
            elapsed_s = time.perf_counter() - started
            console.print(
                f"ingested in {elapsed_s:.1f} s ({n / elapsed_s:,.0f} events/s): "
                f"[green]{summary['accepted']:,} accepted[/], {summary['duplicate']:,} duplicate, "
                f"[red]{summary['rejected']:,} rejected[/] {summary['rejected_by_code']}"
            )
            _money_out(console, store, tmp)
            balances = read_balances(store, DEMO_PLATFORM)  # the read model, written with the events
            with replayed_insights(store, DEMO_PLATFORM) as insights:
                insights_report = insights.report()
            report = verify(store, DEMO_PLATFORM)

    _top_earners(console, balances)
    _platform_take(console, insights_report)
    _recombination(console, insights_report)
    _pools(console, insights_report)
    console.print(summary_table(insights_report))
    if report.ok:
        console.print(f"[bold green]verify: OK[/] {report.events:,} events replayed, "
                      f"{report.digests_checked} recorded digests matched; digest {report.digest}")
        return 0
    console.print(f"[bold red]verify: DIFFERENCE[/] {report.difference}")
    return 1


def _top_earners(console: Console, balances: list[dict[str, Any]]) -> None:
    t = Table(title="top earners (prosumers, by earned, per currency)")
    for col in ("currency", "prosumer", "earned", "reversed", "paid", "balance"):
        t.add_column(col, justify="left" if col in ("currency", "prosumer") else "right",
                     no_wrap=col not in ("currency", "prosumer"))
    by_currency = defaultdict(list)
    for row in balances:
        if not row["account"].startswith("@"):
            by_currency[row["currency"]].append(row)
    for currency in sorted(by_currency):
        for row in sorted(by_currency[currency], key=lambda r: (-r["earned"], r["account"]))[:TOP_EARNERS]:
            t.add_row(currency, row["account"], *(format_money(row[k], currency) for k in ("earned", "reversed", "paid", "balance")))
    console.print(t)


def _money_out(console: Console, store: Any, tmp: str) -> None:
    """A payout run paid by SEPA, two transfers bounced, booked back.

    Pays every EUR balance of at least `DEMO_RUN_MIN_BALANCE_MINOR` (run
    `DEMO_RUN`, planned once: a second demo finds it issued and writes the
    same file), writes its pain.001 to `DEMO_OUT`, has the demo bank reject
    the two largest transfers in a pain.002, reconciles it and ingests the
    `payout.returned` events (a second time: duplicates), and shows the two
    prosumers' balances owed again."""
    from ledger.ingest.files import ingest_paths

    def ingest(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(b"".join(canonical_json(e) + b"\n" for e in events))
        return ingest_paths(store, [path], show_progress=False)

    console.rule("[bold]money out[/]: a payout run by SEPA, two transfers bounced and booked back")
    issued = issued_payouts(store, DEMO_PLATFORM, DEMO_RUN)
    if not issued:
        plan = payout_plan(store, DEMO_PLATFORM, "EUR", DEMO_RUN_MIN_BALANCE_MINOR, DEMO_RUN)
        ingest(list(plan.events), "run.jsonl")
        issued = issued_payouts(store, DEMO_PLATFORM, DEMO_RUN)
    if len(issued) < 2:
        console.print("no EUR balance large enough for a payout run")
        return
    set_payees(store, [demo_payee(DEMO_PLATFORM, e["data"]["prosumer"], i) for i, e in enumerate(issued)])
    payees = payees_of(store, DEMO_PLATFORM, {e["data"]["prosumer"] for e in issued})
    url = DbUrl.parse(store.url)
    out_dir = os.path.join(os.path.dirname(url.sqlite_path) if url.dialect is SQLITE else ".", DEMO_OUT)
    os.makedirs(out_dir, exist_ok=True)
    pain = os.path.join(out_dir, f"{DEMO_RUN}.pain.001.xml")
    write_atomically(pain, pain001(DEMO_PLATFORM, DEMO_RUN, issued, payees, DEMO_DEBTOR))
    total = sum(e["data"]["amount"] for e in issued)
    console.print(f"run {DEMO_RUN}: {len(issued):,} transfers, {format_money(total, 'EUR')}, "
                  f"written to {pain} (pain.001.001.09, valid against the official XSD)")
    bounced = sorted(issued, key=lambda e: (-e["data"]["amount"], e["data"]["payout"]))[:2]
    report = rejection_report(DEMO_PLATFORM, DEMO_RUN, [(bounced[0]["data"]["payout"], "AC04"),
                                                        (bounced[1]["data"]["payout"], "AC01")],
                              "DEMO-BANK-STS-0001", issued[0]["at"].removesuffix("Z"))
    status = os.path.join(out_dir, f"{DEMO_RUN}.pain.002.xml")
    write_atomically(status, report)
    result = reconcile(store, DEMO_PLATFORM, report)
    booked = ingest(result.events, "returned.jsonl")
    console.print(f"the bank's {status}: {len(result.events)} rejected, reconciled into payout.returned events; "
                  f"ingested: {booked['accepted']} accepted, {booked['duplicate']} duplicate")
    rows = {r["account"]: r for r in read_balances(store, DEMO_PLATFORM, "EUR")}
    t = Table(title="bounced transfers, owed again")
    for col in ("payout", "reason", "amount", "paid", "balance"):
        t.add_column(col, justify="right" if col in ("amount", "paid", "balance") else "left", no_wrap=True)
    for e, item in zip(bounced, result.items):
        d, row = e["data"], rows[e["data"]["prosumer"]]
        t.add_row(d["payout"], item["reason_code"], format_money(d["amount"], "EUR"),
                  format_money(row["paid"], "EUR"), format_money(row["balance"], "EUR"))
    console.print(t)


def _platform_take(console: Console, report: dict[str, Any]) -> None:
    t = Table(title="the platform's take and unattributed value (net bookings)")
    for col in ("currency", "realized (net)", "@platform", "take rate", "@unattributed"):
        t.add_column(col, justify="left" if col == "currency" else "right")
    for currency, block in report["overall"]["currencies"].items():
        fairness = block["fairness"]
        t.add_row(currency, format_money(block["net_minor"], currency),
                  format_money(fairness["platform_booked_minor"], currency), percent_text(fairness["take_rate"]),
                  format_money(fairness["unattributed_booked_minor"], currency))
    console.print(t)


def _pools(console: Console, report: dict[str, Any]) -> None:
    """The monthly subscription pools, each split by the method booked and
    by the other (its explanation's alternative, never booked): how unequal
    each method leaves the pool's prosumers, and how many would get more or
    less under the other method (`peerledger insights`: per month, top 1 %)."""
    closed = report["pools"]["closed"]
    if not closed:
        return
    t = Table(title="subscription pools, split pro_rata→user_centric: how unequal for the pool's prosumers")
    for col in ("pool", "booked", "funding", "Gini", "top 10 %", "more/less if other"):
        t.add_column(col, justify="left" if col in ("pool", "booked") else "right",
                     no_wrap=col != "more/less if other")
    for p in closed:
        pr, uc, other = p["pro_rata"], p["user_centric"], p["other_method"]
        t.add_row(p["pool"], p["method"], format_money(p["amount_minor"], p["currency"]),
                  f"{gini_text(pr['gini'])}→{gini_text(uc['gini'])}",
                  f"{_percent(pr['top_10pct_share'])}→{_percent(uc['top_10pct_share'])}",
                  f"{other['gain']:,}/{other['lose']:,}")
    console.print(t)


def _percent(ratio: dict[str, str] | None) -> str:
    return "-" if ratio is None else f"{float(ratio['decimal']) * 100:.0f}%"


def _recombination(console: Console, report: dict[str, Any]) -> None:
    """Where the value after the fee went: to contributions sold directly,
    to the sold outputs' own authors, or on to the works they recombine."""
    t = Table(title="recombination: value that reached contributors through outputs (minor units, rounded down)")
    for col in ("currency", "sales of contributions", "outputs' own authors", "recombination dividend"):
        t.add_column(col, justify="left" if col == "currency" else "right")
    for currency, block in report["overall"]["currencies"].items():
        flow = block["flow"]
        own = next((d for d in flow["on_outputs_by_depth"] if d["depth"] == 0), {"minor": 0, "remainder": "0/1"})
        t.add_row(currency, money_text(flow["direct_on_contributions"]), money_text(own),
                  money_text(flow["recombination_dividend"]))
    console.print(t)
