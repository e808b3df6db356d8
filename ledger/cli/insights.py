"""`peerledger insights`: does recombination create value, and is it shared fairly?

    peerledger insights --platform P [--from YYYY-MM] [--to YYYY-MM] [--json] [--plots DIR]

The report is rebuilt from the platform's log every time: the stored events
are replayed through `projections.insights.InsightsFold` (the same fold as
`verify`, observed) into a scratch database that holds the ledger's state
while it runs, so it needs no read model, its memory does not hold the
ledger's state, and two runs on the same log print the same figures.  Metrics are defined in docs/insights.md.  Money is
exact: tables show minor units rounded down, with the first digits of the
remainder (``+.36``); ``--json`` has every remainder as an exact fraction.
``--plots DIR`` writes five charts, each as PNG and SVG.

Exit codes as everywhere: 0 ok, 2 bad usage, 4 the platform has no events.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from attribution import parse_decimal
from ledger.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    err,
    is_period,
    open_store,
    out,
    print_json,
)
from ledger.storage.replay import Replay, batches_of, scratch_store
from ledger.storage.store import LogEntry, Store
from projections.insights import DEPTHS_LISTED, InsightsFold
from projections.state import Figures

EXIT_USAGE = 2
# The charts `--plots` writes (each as .png and .svg).
PLOT_NAMES = ("flow_by_depth", "reuse_distribution", "network_effect", "lorenz", "pools")
# Depths shown as their own column in tables; deeper ones are summed.
TABLE_DEPTHS = 3


class InsightsReplay:
    """An `InsightsFold` over the platform's state in `target`, a database
    of its own (a scratch one: `replayed_insights`), fed with the log in
    batches (`ledger.storage.replay`): memory is the state's bounded caches,
    a batch, and the fold's own per-work figures."""

    def __init__(self, target: Store, platform: str) -> None:
        self.target = target
        self.replay = Replay(target, platform)
        self.insights = InsightsFold(self.replay.state, self._month_statements)
        # Reports read the statements a month at a time.
        with target.write_transaction() as c:
            c.execute("CREATE INDEX IF NOT EXISTS peerledger_statements_period "
                      "ON peerledger_statements (platform, period)")

    def feed(self, entries: Iterable[LogEntry]) -> InsightsFold:
        """Fold stored events (in seq order, following what was fed before)."""
        replay = self.replay
        for batch in batches_of(entries):
            replay.begin(batch)
            for seq, event, _ in batch:
                # The target's Merkle edge is not kept: no insight needs it.
                self.insights.apply(event, seq)
            replay.end()
        return self.insights

    def _month_statements(self, month: str) -> list[tuple[str, str, Figures]]:
        rows = self.target.query("SELECT account, currency, earned, reversed, paid FROM peerledger_statements "
                                 "WHERE platform = ? AND period = ?", (self.insights.platform, month))
        return [(a, c, Figures(int(e), int(r), int(p))) for a, c, e, r, p in rows]


@contextlib.contextmanager
def replayed_insights(store: Store, platform: str, upto_seq: int | None = None) -> Iterator[InsightsFold]:
    """The insights of the first ``upto_seq`` events of the log (all when
    None), replayed into a scratch database that lives as long as the block
    (a report reads its statements)."""
    with scratch_store() as scratch:
        yield InsightsReplay(scratch, platform).feed(store.read_log(platform, upto_seq=upto_seq))


def cmd_insights(args: argparse.Namespace) -> int:
    if args.from_month and args.to_month and args.from_month > args.to_month:
        err.print(f"peerledger: --from {args.from_month} is after --to {args.to_month}")
        return EXIT_USAGE
    with open_store(args) as store, replayed_insights(store, args.platform) as insights:
        if insights.seq == 0:
            err.print(f"no events in platform {args.platform!r}")
            return EXIT_NOT_FOUND
        report = insights.report(args.from_month, args.to_month)
    if args.plots:
        written = write_plots(report, Path(args.plots))
        err.print(f"wrote {len(written)} charts to {args.plots}")
    if args.json:
        print_json(report)
    else:
        print_report(out, report)
    return EXIT_OK


# -- text ---------------------------------------------------------------------------


def _fraction(text: str) -> Fraction:
    """An "n/d" of the report (numbers of any length, see attribution.numbers)."""
    n, _, d = text.partition("/")
    return Fraction(parse_decimal(n), parse_decimal(d))


def money_value(doc: dict[str, Any]) -> Fraction:
    """The exact amount of a report's money doc: minor + remainder."""
    return doc["minor"] + _fraction(doc["remainder"])


def amount_text(amount: Fraction) -> str:
    """Minor units rounded down, and the remainder's first two decimals (cut, not rounded)."""
    minor = math.floor(amount)
    remainder = amount - minor
    return f"{minor:,}" if not remainder else f"{minor:,} +.{math.floor(remainder * 100):02d}"


def money_text(doc: dict[str, Any]) -> str:
    return amount_text(money_value(doc))


def percent_value(ratio: Fraction | None) -> str:
    return "-" if ratio is None else f"{float(ratio) * 100:.2f} %"


def percent_text(ratio: dict[str, str] | None) -> str:
    """A report's ratio doc as a percentage (display only)."""
    return percent_value(None if ratio is None else _fraction(ratio["exact"]))


def gini_text(ratio: dict[str, str] | None) -> str:
    return "-" if ratio is None else f"{float(_fraction(ratio['exact'])):.3f}"


def _depth_number(depth: int | str) -> int:
    return depth if isinstance(depth, int) else DEPTHS_LISTED  # the "10+" bucket


def _on_outputs(flow: dict[str, Any], depth: int, and_deeper: bool = False) -> Fraction:
    """The exact flow of output sales at ``depth`` (and below it, if ``and_deeper``)."""
    return sum((money_value(d) for d in flow["on_outputs_by_depth"]
                if _depth_number(d["depth"]) == depth or (and_deeper and _depth_number(d["depth"]) > depth)),
               Fraction(0))


def _elasticity_text(fit: dict[str, Any]) -> str:
    if fit["elasticity"] is None:
        return f"- ({fit['points']} months)"
    ci = fit["ci95"]
    interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else " (no CI: 2 months)"
    return f"{fit['elasticity']:+.3f}{interval}"


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The whole report as tables."""
    window = report["window"]
    months = window["months"]
    span = f"{months[0]} .. {months[-1]}" if months else "no months"
    console.rule(f"[bold]insights[/] of {report['platform']} at seq {report['seq']:,}: {span}")
    overall = report["overall"]

    currencies = list(overall["currencies"])
    t = Table(title="recombination dividend: where net realized value went "
                    "(minor units rounded down, +.xx: the remainder; exact in --json)")
    t.add_column("")
    for currency in currencies:
        t.add_column(currency, justify="right")
    blocks = [overall["currencies"][c] for c in currencies]
    flows = [b["flow"] for b in blocks]
    t.add_row("net realized", *(f"{b['net_minor']:,}" for b in blocks))
    t.add_row("@platform", *(money_text(f["platform"]) for f in flows))
    t.add_row("@unattributed (retracted works)", *(money_text(f["unattributed"]) for f in flows))
    t.add_row("direct: sales of contributions", *(money_text(f["direct_on_contributions"]) for f in flows))
    t.add_row("outputs' own authors (depth 0)", *(amount_text(_on_outputs(f, 0)) for f in flows))
    for depth in range(1, TABLE_DEPTHS):
        t.add_row(f"  upstream, depth {depth}", *(amount_text(_on_outputs(f, depth)) for f in flows))
    t.add_row(f"  upstream, depth {TABLE_DEPTHS}+",
              *(amount_text(_on_outputs(f, TABLE_DEPTHS, and_deeper=True)) for f in flows))
    t.add_row("[bold]recombination dividend[/]", *(money_text(f["recombination_dividend"]) for f in flows))
    t.add_row("[bold]dividend / net realized[/]", *(percent_text(f["dividend_share_of_net"]) for f in flows))
    console.print(t)

    t = Table(title="by month (minor units rounded down)")
    for col in ("month", "cur", "net realized", "dividend / net", "active", "realized / active", "take rate", "Gini"):
        t.add_column(col, justify="left" if col in ("month", "cur") else "right")
    for month in report["months"]:
        for currency, block in month["currencies"].items():
            per_active = block["network"]["value_realized_per_active_prosumer"]
            t.add_row(month["month"], currency, f"{block['net_minor']:,}",
                      percent_text(block["flow"]["dividend_share_of_net"]),
                      str(block["network"]["active_prosumers"]),
                      f"{per_active['minor']:,}" if per_active else "-",
                      percent_text(block["fairness"]["take_rate"]), gini_text(block["fairness"]["gini"]))
    console.print(t)

    reuse = overall["reuse"]
    console.print(
        f"[bold]reuse[/]: {reuse['contributions']:,} contributions, {reuse['contributions_never_reused']:,} never "
        f"reused ({percent_text(reuse['never_reused_share'])}), mean uses "
        f"{reuse['mean_uses_per_contribution']['decimal'] if reuse['mean_uses_per_contribution'] else '-'}; "
        f"{reuse['outputs']:,} outputs ({reuse['outputs_reused']:,} remixed in turn), "
        f"{reuse['component_links']:,} component links, deepest output {reuse['max_output_depth']}")
    t = Table(title="contributions by number of uses")
    t.add_column("uses", justify="right")
    t.add_column("contributions", justify="right")
    for b in reuse["uses_histogram"]:
        span_text = str(b["uses_from"]) if b["uses_from"] == b["uses_to"] else f"{b['uses_from']}-{b['uses_to']}"
        t.add_row(span_text, f"{b['contributions']:,}")
    d = Table(title="outputs by depth")
    d.add_column("depth", justify="right")
    d.add_column("outputs", justify="right")
    for b in reuse["output_depth_histogram"]:
        d.add_row(str(b["depth"]), f"{b['outputs']:,}")
    top = Table(title=f"top {len(reuse['top_reused'])} reused works")
    for col in ("work", "kind", "uses"):
        top.add_column(col, justify="right" if col == "uses" else "left")
    for w in reuse["top_reused"]:
        top.add_row(w["work"], w["kind"], f"{w['uses']:,}")
    console.print(t, d, top)

    t = Table(title="network effect: ln(realized per active prosumer) on ln(active prosumers)")
    for col in ("currency", "months", "elasticity [95 % CI]", "R²"):
        t.add_column(col, justify="left" if col == "currency" else "right")
    for currency, fit in overall["network_effect"].items():
        t.add_row(currency, str(fit["points"]), _elasticity_text(fit),
                  "-" if fit["r_squared"] is None else f"{fit['r_squared']:.3f}")
    console.print(t)

    t = Table(title="fairness and capture (net bookings, minor units)")
    t.add_column("")
    for currency in currencies:
        t.add_column(currency, justify="right")
    fairness = [b["fairness"] for b in blocks]
    t.add_row("take rate (@platform / net realized)", *(percent_text(f["take_rate"]) for f in fairness))
    t.add_row("@platform", *(f"{f['platform_booked_minor']:,}" for f in fairness))
    t.add_row("@unattributed", *(f"{f['unattributed_booked_minor']:,}" for f in fairness))
    t.add_row("prosumers (registered) / earning", *(f"{f['prosumers']:,} / {f['earners']:,}" for f in fairness))
    t.add_row("Gini of earnings", *(gini_text(f["gini"]) for f in fairness))
    t.add_row("top 1 % share", *(percent_text(f["top_1pct_share"]) for f in fairness))
    t.add_row("top 10 % share", *(percent_text(f["top_10pct_share"]) for f in fairness))
    console.print(t)
    print_pools(console, report["pools"])


def _methods_cells(doc: dict[str, Any]) -> list[str]:
    """Gini, top 1 % and top 10 % under pro_rata / user_centric, side by side."""
    pr, uc = doc["pro_rata"], doc["user_centric"]

    def pct(ratio: dict[str, str] | None) -> str:
        return "-" if ratio is None else f"{float(_fraction(ratio['exact'])) * 100:.1f}"

    return [f"{gini_text(pr['gini'])} / {gini_text(uc['gini'])}",
            f"{pct(pr['top_1pct_share'])} / {pct(uc['top_1pct_share'])}",
            f"{pct(pr['top_10pct_share'])} / {pct(uc['top_10pct_share'])}"]


# The columns both pool tables share: each method's fairness, side by side.
POOL_COLUMNS = ("Gini pr / uc", "top 1 % pr / uc", "top 10 % pr / uc")


def print_pools(console: Console, pools: dict[str, Any], by_period: bool = True) -> None:
    """The closed usage pools: each method's fairness among the pool's
    prosumers (pr: pro_rata, uc: user_centric; the booked allocation and
    the alternative), per pool and, with ``by_period``, per month of the
    closes."""
    if not pools["closed"]:
        return
    t = Table(title="usage pools: the two methods side by side (pr: pro_rata, uc: user_centric; "
                    "top shares in %; the method not booked is the pool's alternative, never booked)")
    for col in ("pool", "booked", "funding", "prosumers", *POOL_COLUMNS, "gain / lose under the other"):
        t.add_column(col, justify="left" if col in ("pool", "booked") else "right")
    for p in pools["closed"]:
        other = p["other_method"]
        t.add_row(f"{p['pool']} ({p['month']})", p["method"], f"{p['amount_minor']:,} {p['currency']}",
                  f"{p['prosumers']:,}", *_methods_cells(p), f"{other['gain']:,} / {other['lose']:,}")
    console.print(t)
    if not by_period:
        return
    t = Table(title="usage pools by month of their close, every pool summed per prosumer under each method")
    for col in ("month", "pools", "funding", "prosumers", *POOL_COLUMNS, "more / less under uc"):
        t.add_column(col, justify="left" if col == "month" else "right")
    for p in pools["by_period"]:
        change = p["user_centric_vs_pro_rata"]
        t.add_row(p["month"], str(p["pools"]), f"{p['amount_minor']:,} {p['currency']}", f"{p['prosumers']:,}",
                  *_methods_cells(p), f"{change['gain']:,} / {change['lose']:,}")
    console.print(t)


def summary_table(report: dict[str, Any]) -> Table:
    """The headline numbers, one column per currency (the demo ends with it)."""
    overall = report["overall"]
    reuse = overall["reuse"]
    currencies = list(overall["currencies"])
    blocks = [overall["currencies"][c] for c in currencies]
    fits = [overall["network_effect"][c] for c in currencies]
    t = Table(title=f"insights over {len(report['window']['months'])} months (`peerledger insights` for more)")
    t.add_column("", no_wrap=True)
    for currency in currencies:
        t.add_column(currency, justify="right", no_wrap=True)
    t.add_row("net realized", *(f"{b['net_minor']:,}" for b in blocks))
    t.add_row("dividend / net", *(percent_text(b["flow"]["dividend_share_of_net"]) for b in blocks))
    t.add_row("direct / net", *(
        percent_value(money_value(b["flow"]["direct_on_contributions"]) / b["net_minor"] if b["net_minor"] else None)
        for b in blocks))
    t.add_row("take rate", *(percent_text(b["fairness"]["take_rate"]) for b in blocks))
    t.add_row("@unattributed", *(f"{b['fairness']['unattributed_booked_minor']:,}" for b in blocks))
    t.add_row("Gini (earnings)", *(gini_text(b["fairness"]["gini"]) for b in blocks))
    t.add_row("top 10 % share", *(percent_text(b["fairness"]["top_10pct_share"]) for b in blocks))
    t.add_row("elasticity", *("-" if f["elasticity"] is None else f"{f['elasticity']:+.3f}" for f in fits))
    t.add_row("  95 % CI", *("-" if not f["ci95"] else f"{f['ci95'][0]:+.2f} .. {f['ci95'][1]:+.2f}" for f in fits))
    pad = [""] * (len(currencies) - 1)
    t.add_row("never reused", percent_text(reuse["never_reused_share"]), *pad)
    t.add_row("deepest output", str(reuse["max_output_depth"]), *pad)
    return t


# -- charts -------------------------------------------------------------------------


def write_plots(report: dict[str, Any], directory: Path) -> list[Path]:
    """The four charts of the report, as PNG and SVG, in ``directory``.

    matplotlib's object API on the Agg backend's canvas: no pyplot, so no
    global figure state and no display needed.  Amounts are plotted as floats (a
    chart has no exact pixels); the figures themselves are in the report.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory.mkdir(parents=True, exist_ok=True)
    overall = report["overall"]
    currencies = list(overall["currencies"])
    builders = {
        "flow_by_depth": _plot_flow_by_depth,
        "reuse_distribution": _plot_reuse,
        "network_effect": _plot_network_effect,
        "lorenz": _plot_lorenz,
        "pools": _plot_pools,
    }
    written = []
    # A fixed salt keeps SVG element ids, and so the files, the same across runs.
    with matplotlib.rc_context({"svg.hashsalt": "peerledger-insights"}):
        for name in PLOT_NAMES:
            fig = Figure(figsize=(10, 6), layout="constrained")
            FigureCanvasAgg(fig)
            builders[name](fig, report, currencies)
            for ext in ("png", "svg"):
                path = directory / f"{name}.{ext}"
                fig.savefig(path, format=ext, dpi=100, metadata={"Date": None} if ext == "svg" else None)
                written.append(path)
    return written


def _axes_per_currency(fig: Any, currencies: list[str]) -> list[Any]:
    n = max(1, len(currencies))
    return [fig.add_subplot(1, n, i + 1) for i in range(n)]


def _plot_flow_by_depth(fig: Any, report: dict[str, Any], currencies: list[str]) -> None:
    fig.suptitle("Where realized value went, by month (net of reversals, minor units)")
    series = ["direct on contributions", "output authors (depth 0)",
              *(f"depth {d}" for d in range(1, TABLE_DEPTHS)), f"depth {TABLE_DEPTHS}+"]
    for ax, currency in zip(_axes_per_currency(fig, currencies), currencies):
        months, rows = [], []
        for month in report["months"]:
            block = month["currencies"].get(currency)
            if block is None:
                continue
            flow = block["flow"]
            months.append(month["month"])
            rows.append([float(money_value(flow["direct_on_contributions"])),
                         *(float(_on_outputs(flow, d)) for d in range(TABLE_DEPTHS)),
                         float(_on_outputs(flow, TABLE_DEPTHS, and_deeper=True))])
        bottom = [0.0] * len(months)
        for i, label in enumerate(series):
            heights = [r[i] for r in rows]
            ax.bar(months, heights, bottom=bottom, label=label)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_title(currency)
        ax.tick_params(axis="x", labelrotation=60)
    fig.axes[0].legend(fontsize="small")


def _plot_reuse(fig: Any, report: dict[str, Any], currencies: list[str]) -> None:
    reuse = report["overall"]["reuse"]
    ax_uses, ax_depth = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    labels = [str(b["uses_from"]) if b["uses_from"] == b["uses_to"] else f"{b['uses_from']}-{b['uses_to']}"
              for b in reuse["uses_histogram"]]
    ax_uses.bar(labels, [b["contributions"] for b in reuse["uses_histogram"]])
    ax_uses.tick_params(axis="x", labelrotation=45)
    ax_uses.set_yscale("log")
    ax_uses.set_xlabel("outputs using the contribution")
    ax_uses.set_ylabel("contributions (log scale)")
    ax_uses.set_title("Reuse of contributions")
    ax_depth.bar([str(b["depth"]) for b in reuse["output_depth_histogram"]],
                 [b["outputs"] for b in reuse["output_depth_histogram"]])
    ax_depth.set_yscale("log")
    ax_depth.set_xlabel("output depth (1 = only contributions below)")
    ax_depth.set_ylabel("outputs (log scale)")
    ax_depth.set_title("Depth of outputs")


def _plot_network_effect(fig: Any, report: dict[str, Any], currencies: list[str]) -> None:
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig.suptitle("Network effect: realized value per active prosumer against active prosumers (log-log)")
    for ax, currency in zip(_axes_per_currency(fig, currencies), currencies):
        xs, ys = [], []
        for month in report["months"]:
            block = month["currencies"].get(currency)
            if block is None or not block["realized_minor"] or not block["network"]["active_prosumers"]:
                continue
            per_active = block["network"]["value_realized_per_active_prosumer"]
            xs.append(block["network"]["active_prosumers"])
            ys.append(float(money_value(per_active)))
        ax.scatter(xs, ys, label="months")
        fit = report["overall"]["network_effect"][currency]
        if fit["elasticity"] is not None and xs:
            line_x = [min(xs), max(xs)]
            ax.plot(line_x, [math.exp(fit["intercept"]) * x ** fit["elasticity"] for x in line_x],
                    color="tab:red", label=f"slope {_elasticity_text(fit)}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            # Ticks at 1, 2 and 5 times powers of ten, written as plain numbers.
            axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("active prosumers in the month")
        ax.set_ylabel(f"realized per active prosumer ({currency} minor units)")
        ax.set_title(currency)
        ax.legend(fontsize="small")


def _plot_lorenz(fig: Any, report: dict[str, Any], currencies: list[str]) -> None:
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="equality")
    for currency in currencies:
        fairness = report["overall"]["currencies"][currency]["fairness"]
        points = fairness["lorenz"]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points],
                    label=f"{currency} (Gini {gini_text(fairness['gini'])})")
    ax.set_xlabel("share of prosumers (poorest first)")
    ax.set_ylabel("share of net earnings")
    ax.set_title("Lorenz curve of prosumer earnings")
    ax.legend()


# -- the parser ---------------------------------------------------------------------


def _plot_pools(fig: Any, report: dict[str, Any], currencies: list[str]) -> None:
    """The two methods side by side: the Lorenz curve of each over the
    window's pools (per currency), and per pool each method's Gini and top
    10 % share."""
    pools = report["pools"]
    fig.suptitle("Usage pools: pro_rata and user_centric side by side (booked and alternative allocations)")
    lorenz, bars = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if not pools["closed"]:
        for ax in (lorenz, bars):
            ax.text(0.5, 0.5, "no closed pool in the window", ha="center", va="center", transform=ax.transAxes)
        return
    lorenz.plot([0, 1], [0, 1], color="grey", linestyle="--", label="equality")
    for currency, doc in pools["overall"].items():
        for method, style in (("pro_rata", "-"), ("user_centric", ":")):
            points = doc["lorenz"][method]
            if points:
                lorenz.plot([p[0] for p in points], [p[1] for p in points], linestyle=style,
                            label=f"{currency} {method} (Gini {gini_text(doc[method]['gini'])})")
    lorenz.set_xlabel("share of the pools' prosumers (poorest first)")
    lorenz.set_ylabel("share of what the pools pay prosumers")
    lorenz.set_title("Lorenz curves over the window's pools")
    lorenz.legend(fontsize="small")
    labels = [f"{p['pool']} ({p['month']})" for p in pools["closed"]]
    xs = range(len(labels))
    width = 0.2
    for i, (method, measure) in enumerate((("pro_rata", "gini"), ("user_centric", "gini"),
                                           ("pro_rata", "top_10pct_share"), ("user_centric", "top_10pct_share"))):
        values = [float(_fraction(p[method][measure]["exact"])) if p[method][measure] else 0.0
                  for p in pools["closed"]]
        bars.bar([x + (i - 1.5) * width for x in xs], values, width,
                 label=f"{'Gini' if measure == 'gini' else 'top 10 % share'}, {method}")
    bars.set_xticks(list(xs), labels, rotation=45, ha="right")
    bars.set_ylim(0, 1)
    bars.set_title("each pool's prosumers under each method")
    bars.legend(fontsize="small")


def _month(text: str) -> str:
    if not is_period(text):
        raise argparse.ArgumentTypeError(f"expected YYYY-MM, got {text!r}")
    return text


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    s = sub.add_parser("insights", parents=[common, jsonf, plat],
                       help="recombination dividend, reuse, network effect and fairness, by month")
    s.add_argument("--from", dest="from_month", type=_month, metavar="YYYY-MM", help="first UTC month reported")
    s.add_argument("--to", dest="to_month", type=_month, metavar="YYYY-MM", help="last UTC month reported")
    s.add_argument("--plots", metavar="DIR", help="write PNG and SVG charts to DIR")
    s.set_defaults(func=cmd_insights)
