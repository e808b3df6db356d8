"""`peerledger`: the command line, the contract scripts and tools rely on.

Every command takes `--db URL` (or `PEERLEDGER_DB`; default
`sqlite:///peerledger.db` in the current directory).  `--json` prints
machine output on stdout; otherwise readable tables.  Exit codes: 0 success,
3 `ingest` rejected some events (the rest were accepted), 1 verification
difference or a failure, 2 bad usage, 4 not found.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from rich.table import Table

from ledger.audit.verify import verify
from ledger.cli import audit, bookings, cluster, http, insights, kafka, payees, payouts, webhooks
from ledger.cli.common import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_SOME_REJECTED,
    EXIT_USAGE,
    as_of_options,
    err,
    is_period,
    open_store,
    out,
    parent_parsers,
    print_json,
    upgrade_store,
)
from ledger.contract.documents import reject_docs
from ledger.contract.money import format_money
from ledger.ingest.files import ingest_paths
from ledger.ingest.ingestor import (
    REJECTED,
)
from ledger.ingest.projector import Projector
from ledger.ops.runtime import tune_gc
from ledger.storage.queries import (
    NotFound,
    as_of_seq,
    balances_doc,
    explain_doc,
    log_head,
    statement_doc,
)
from ledger.storage.store import STATE_SCHEMA_VERSION, Store
from projections.balances import balances_digest

# -- ingest -----------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        summary = ingest_paths(store, args.files, show_progress=sys.stderr.isatty() and not args.json)
    if args.json:
        print_json(summary)
    else:
        t = Table(title="ingest")
        for col in ("accepted", "duplicate", "rejected"):
            t.add_column(col, justify="right")
        t.add_row(*(str(summary[c]) for c in ("accepted", "duplicate", "rejected")))
        out.print(t)
        for code, n in summary["rejected_by_code"].items():
            out.print(f"  rejected {code}: {n}  (see `peerledger rejects`)")
    return EXIT_SOME_REJECTED if summary[REJECTED] else EXIT_OK


# -- queries ----------------------------------------------------------------


def _as_of_seq(store: Store, args: argparse.Namespace) -> int | None:
    return as_of_seq(store, args.platform, args.as_of, args.as_of_time)


def _balances(store: Store, args: argparse.Namespace) -> list[dict[str, Any]]:
    return balances_doc(store, args.platform, args.currency, _as_of_seq(store, args))


def _money_table(title: str, keys: Sequence[str], figures: Sequence[str], rows: Sequence[dict[str, Any]]) -> Table:
    """Key columns left, money columns right in the row's currency's major
    unit (`ledger.contract.money`: 1,306.57 EUR)."""
    t = Table(title=title)
    for col in keys:
        t.add_column(col)
    for col in figures:
        t.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(*(str(r[k]) for k in keys), *(format_money(r[c], r["currency"]) for c in figures))
    return t


def cmd_balances(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = _balances(store, args)
    if args.json:
        print_json(rows)
        return EXIT_OK
    title = f"balances of {args.platform}" + (f" as of seq {args.as_of}" if args.as_of else "") + (
        f" as of {args.as_of_time}" if args.as_of_time else "")
    out.print(_money_table(title, ("account", "currency"), ("earned", "reversed", "paid", "balance"), rows))
    return EXIT_OK


def cmd_digest(args: argparse.Namespace) -> int:
    args.currency = None
    with open_store(args) as store:
        rows = _balances(store, args)
    print(balances_digest(rows))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        as_of = _as_of_seq(store, args)
        ex = explain_doc(store, args.platform, args.value, as_of)
    if ex is None:
        when = f" as of seq {as_of}" if as_of is not None else ""
        err.print(f"no value {args.value!r} in platform {args.platform!r}{when}")
        return EXIT_NOT_FOUND
    if args.json:
        print_json(ex)
        return EXIT_OK
    if "pool" in ex:
        _print_pool_explanation(ex)
        return EXIT_OK
    out.print(f"value [bold]{ex['value']}[/] on work [bold]{ex['work']}[/]: {format_money(ex['amount'], ex['currency'])}, "
              f"fee {ex['fee_bps']} bps, reversed {format_money(ex['reversed'], ex['currency'])}, accepted at seq {ex['seq']}")
    t = Table(title="shares and allocation")
    t.add_column("recipient")
    t.add_column("share", justify="right")
    t.add_column("allocation", justify="right")
    for r, share in ex["shares"].items():
        t.add_row(r, _short(share, 60), format_money(ex['allocation'][r], ex['currency']))
    out.print(t)
    p = Table(title=f"largest paths ({ex['works_reached']} works reached)")
    p.add_column("path")
    p.add_column("recipient")
    p.add_column("share", justify="right")
    for path in ex["paths"]:
        share = path["share"]
        p.add_row(" → ".join(path["works"]), path["recipient"], _short(share, 40))
    out.print(p)
    return EXIT_OK


# Works listed in a pool's readable explanation (the largest under the method
# booked); --json has them all.
EXPLAIN_POOL_WORKS = 20


def _short(share: str, width: int) -> str:
    return share if len(share) < width else share[:width - 3] + "…"


def _print_pool_explanation(ex: dict[str, Any]) -> None:
    """A closed pool, readably: per recipient the share and units booked
    beside what the other method would have given them, then stage 1."""
    pool = ex["pool"]
    booked, other = pool["method"], pool["alternative"]["method"]
    alternative = pool["alternative"]["allocation"]
    out.print(f"pool [bold]{ex['value']}[/], split {booked}: {format_money(ex['amount'], ex['currency'])}, "
              f"refunded {format_money(ex['reversed'], ex['currency'])}; {len(pool['works']):,} works used")
    t = Table(title=f"what each recipient got ({booked}, booked) and what {other} would have given them")
    for col, justify in (("recipient", "left"), ("share", "right"), (booked, "right"), (other, "right"),
                         (f"{other} − {booked}", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    money = ex["currency"]
    for r in sorted(set(ex["allocation"]) | set(alternative)):
        got, would = ex["allocation"].get(r, 0), alternative.get(r, 0)
        change = format_money(would - got, money)
        t.add_row(r, _short(ex["shares"].get(r, "0"), 40), format_money(got, money), format_money(would, money),
                  change if would < got else "+" + change)
    out.print(t)
    works, other_works = pool["works"], pool["alternative"]["works"]
    if not works:
        out.print(f"no stage 1 under {booked}: " + ("nobody funded the pool, it booked nothing" if not ex["amount"]
                  else "nothing was used, so after the fee the pool went to @unattributed"))
        return
    largest = sorted(works, key=lambda w: (-works[w], w))[:EXPLAIN_POOL_WORKS]
    w = Table(title=f"stage 1, money to works ({len(largest)} largest of {len(works):,}; --json has all)")
    for col, justify in (("work", "left"), (booked, "right"), (other, "right")):
        w.add_column(col, justify=justify)  # type: ignore[arg-type]
    for work in largest:
        w.add_row(work, format_money(works[work], money), format_money(other_works.get(work, 0), money))
    out.print(w)


def cmd_statement(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        doc = statement_doc(store, args.platform, args.prosumer, args.period)
    periods = doc["periods"]
    if args.json:
        print_json(doc)
        return EXIT_OK
    out.print(_money_table(f"statement of {args.prosumer} on {args.platform}", ("period", "currency"),
                           ("earned", "reversed", "paid", "net"), periods))
    return EXIT_OK


def cmd_rejects(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = store.rejects(args.platform, args.limit)
    docs = reject_docs(rows)
    if args.json:
        print_json(docs)
        return EXIT_OK
    t = Table(title="rejected events")
    for col in ("#", "platform", "id", "code", "message", "source"):
        t.add_column(col)
    for d in docs:
        t.add_row(str(d["reject_id"]), d["platform"] or "?", d["id"] or "?", d["code"], d["message"], d["source"])
    out.print(t)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if args.platform:
            log_head(store, args.platform)  # verifying an unknown platform would report an empty log as OK
        platforms = [args.platform] if args.platform else store.platforms()
        reports = [verify(store, p) for p in platforms]
    status = EXIT_OK
    for r in reports:
        if r.ok:
            print(f"{r.platform}: OK {r.events} events, {r.digests_checked} recorded digests matched, digest {r.digest}")
        else:
            print(f"{r.platform}: DIFFERENCE after {r.events} events: {r.difference}")
            status = EXIT_FAILURE
    if not reports:
        print("no platform has any event")
    return status


def cmd_project(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ledger.ingest.claims import open_claims
    from ledger.ops import metrics

    if args.metrics_port is not None and not args.follow:
        err.print("peerledger: --metrics-port is for a projector that keeps running (--follow)")
        return EXIT_USAGE
    with open_store(args) as store:
        if not args.follow:
            n = Projector(store).catch_up()
            print(f"projected {n} events")
            return EXIT_OK
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        if args.metrics_port is not None:
            metrics.serve(args.metrics_port, checks=(metrics.database_check(args.db),))
        claims = open_claims(args.db)  # several workers on one PostgreSQL split the platforms
        try:
            Projector(store, claims).follow(stop)
        finally:
            if claims is not None:
                claims.close()
    return EXIT_OK


def cmd_upgrade(args: argparse.Namespace) -> int:
    """What every command does on opening a database written by an older
    peerledger (`open_store`), asked for explicitly: build its state from its
    log once.  Running it again is harmless."""
    with Store(args.db) as store:
        if not store.upgrade_pending:
            print(f"nothing to upgrade: the state is at schema version {STATE_SCHEMA_VERSION}")
            return EXIT_OK
        upgrade_store(store)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from ledger.cli.demo import run_demo

    return run_demo(args)


# -- the parser -------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common, jsonf, plat = parent_parsers()
    p = argparse.ArgumentParser(prog="peerledger", description="Event-sourced contribution ledger with exact value attribution.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", parents=[common, jsonf], help="ingest JSON Lines files ('-' = stdin)")
    s.add_argument("files", nargs="+")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("balances", parents=[common, jsonf, plat], help="balances per account and currency")
    s.add_argument("--currency")
    as_of_options(s)
    s.set_defaults(func=cmd_balances)

    s = sub.add_parser("digest", parents=[common, plat], help="the balances digest (EVENTS.md §5)")
    as_of_options(s)
    s.set_defaults(func=cmd_digest)

    s = sub.add_parser("explain", parents=[common, jsonf, plat], help="why a value was split as it was")
    s.add_argument("--value", required=True)
    as_of_options(s)
    s.set_defaults(func=cmd_explain)

    s = sub.add_parser("statement", parents=[common, jsonf, plat], help="a prosumer's statement by UTC month")
    s.add_argument("--prosumer", required=True)
    s.add_argument("--period", metavar="YYYY-MM")
    s.set_defaults(func=cmd_statement)

    s = sub.add_parser("rejects", parents=[common, jsonf], help="rejected events with their reasons")
    s.add_argument("--platform")
    s.add_argument("--limit", type=int, default=1000)
    s.set_defaults(func=cmd_rejects)

    s = sub.add_parser("verify", parents=[common], help="rebuild from the log and compare with the live ledger")
    s.add_argument("--platform")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("project", parents=[common], help="bring the derived views (the dashboard's flows) to the log's head")
    s.add_argument("--follow", action="store_true",
                   help="keep following the logs until SIGINT/SIGTERM; on PostgreSQL, several followers "
                        "split the platforms between them (docs/scaling.md)")
    s.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="with --follow: serve /metrics, /healthz and /readyz on http://0.0.0.0:PORT")
    s.set_defaults(func=cmd_project)

    s = sub.add_parser("upgrade", parents=[common],
                       help="build the state of a database written by an older peerledger from its log "
                            "(every command does it on opening such a database)")
    s.set_defaults(func=cmd_upgrade)

    s = sub.add_parser("demo", parents=[common], help="generate, ingest and explain a realistic stream")
    s.add_argument("--events", type=int, default=60_000)
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=cmd_demo)

    # The auditor's commands build on this module's helpers: their module is
    # imported once this one is complete.
    for family in (audit, http, kafka, insights, cluster, payouts, payees, bookings, webhooks):
        family.register(sub, common, jsonf, plat)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    tune_gc()
    args = parser().parse_args(argv)
    if getattr(args, "period", None) and not is_period(args.period):
        err.print(f"--period must be YYYY-MM, got {args.period!r}")
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return EXIT_OK
    except NotFound as e:
        err.print(f"peerledger: {e}")
        return EXIT_NOT_FOUND
    except (ValueError, OSError) as e:
        err.print(f"peerledger: {e}")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
