"""`peerledger demo`: the main job on the embedded default, end to end.

Generates a realistic peer-production stream (ledger.demo.generate), writes it as
JSON Lines, ingests it with a progress bar, then shows who earned what, the
platform's take, how much value reached contributors through recombination,
the headline insights (`peerledger insights`) and the result of `verify`.
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
from fractions import Fraction

from rich.console import Console
from rich.table import Table

from attribution import PLATFORM, UNATTRIBUTED
from ledger.audit.verify import verify
from ledger.cli.insights import replay_insights, summary_table
from ledger.demo.generate import generate, write_jsonl
from ledger.storage.store import Store
from ledger.storage.views import create_views

DEMO_PLATFORM = "demo"


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
        with Store(args.db) as store:
            create_views(store)
            started = time.perf_counter()
            summary = ingest_paths(store, [path], show_progress=sys.stderr.isatty())
            elapsed_s = time.perf_counter() - started
            console.print(
                f"ingested in {elapsed_s:.1f} s ({n / elapsed_s:,.0f} events/s): "
                f"[green]{summary['accepted']:,} accepted[/], {summary['duplicate']:,} duplicate, "
                f"[red]{summary['rejected']:,} rejected[/] {summary['rejected_by_code']}"
            )
            # The insights fold wraps the ledger's own fold: one replay serves both.
            insights = replay_insights(store, DEMO_PLATFORM)
            fold = insights.fold
            report = verify(store, DEMO_PLATFORM)

    _top_earners(console, fold)
    _platform_take(console, fold)
    _recombination(console, fold)
    console.print(summary_table(insights.report()))
    if report.ok:
        console.print(f"[bold green]verify: OK[/] {report.events:,} events replayed, "
                      f"{report.digests_checked} recorded digests matched; digest {report.digest}")
        return 0
    console.print(f"[bold red]verify: DIFFERENCE[/] {report.difference}")
    return 1


def _top_earners(console: Console, fold) -> None:  # type: ignore[no-untyped-def]
    t = Table(title="top earners (prosumers, by earned, per currency)")
    for col in ("currency", "prosumer", "earned", "reversed", "paid", "balance"):
        t.add_column(col, justify="left" if col in ("currency", "prosumer") else "right")
    by_currency = defaultdict(list)
    for (account, currency), f in fold.balances.items():
        if not account.startswith("@"):
            by_currency[currency].append((f.earned, account, f))
    for currency in sorted(by_currency):
        for earned, account, f in sorted(by_currency[currency], key=lambda x: (-x[0], x[1]))[:5]:
            t.add_row(currency, account, f"{earned:,}", f"{f.reversed:,}", f"{f.paid:,}", f"{f.balance:,}")
    console.print(t)


def _platform_take(console: Console, fold) -> None:  # type: ignore[no-untyped-def]
    t = Table(title="the platform's take and unattributed value")
    for col in ("currency", "realized (net)", "@platform", "take rate", "@unattributed"):
        t.add_column(col, justify="left" if col == "currency" else "right")
    realized = defaultdict(int)
    for v in fold.values.values():
        realized[v.currency] += v.amount_minor - v.reversed_minor
    for currency in sorted(realized):
        plat = fold.balances.get((PLATFORM, currency))
        unat = fold.balances.get((UNATTRIBUTED, currency))
        take = (plat.earned + plat.reversed) if plat else 0
        t.add_row(currency, f"{realized[currency]:,}", f"{take:,}",
                  f"{100 * take / realized[currency]:.2f} %" if realized[currency] else "-",
                  f"{(unat.earned + unat.reversed) if unat else 0:,}")
    console.print(t)


def _recombination(console: Console, fold) -> None:  # type: ignore[no-untyped-def]
    """Value realized on outputs that flowed on to their components (upstream)."""
    on_outputs = defaultdict(int)
    on_contributions = defaultdict(int)
    upstream = defaultdict(Fraction)
    graph = fold.graph
    for v in fold.values.values():
        net_minor = v.amount_minor - v.reversed_minor
        if graph.kind(v.work) == "output":
            on_outputs[v.currency] += net_minor
            u = Fraction(graph.upstream_bps(v.work), 10_000)
            upstream[v.currency] += net_minor * Fraction(10_000 - v.fee_bps, 10_000) * u
        else:
            on_contributions[v.currency] += net_minor
    t = Table(title="recombination: value that reached contributors through outputs")
    for col in ("currency", "realized on outputs", "flowed upstream to components", "realized on contributions"):
        t.add_column(col, justify="left" if col == "currency" else "right")
    for currency in sorted(set(on_outputs) | set(on_contributions)):
        t.add_row(currency, f"{on_outputs[currency]:,}", f"{int(upstream[currency]):,}",
                  f"{on_contributions[currency]:,}")
    console.print(t)
