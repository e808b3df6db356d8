"""`peerledger`: the command line, the contract scripts and tools rely on.

Every command takes `--db URL` (or `PEERLEDGER_DB`; default
`sqlite:///peerledger.db` in the current directory).  `--json` prints
machine output on stdout; otherwise readable tables.  Exit codes: 0 success,
3 `ingest` rejected some events (the rest were accepted), 1 verification
difference or a failure, 2 bad usage, 4 not found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from contextlib import ExitStack
from typing import Any, Iterator, Sequence

import orjson
from rich.console import Console
from rich.table import Table

from ledger.api import as_of_seq, balances_doc, explain_doc, reject_docs, statement_doc
from ledger.audit import ledger_instant
from ledger.ingest import (
    ACCEPTED,
    DUPLICATE,
    REJECTED,
    Ingestor,
    Offered,
    batches,
    read_lines,
)
from ledger.project import Projector, ProjectorProcess
from ledger.replay import verify
from ledger.runtime import tune_gc
from ledger.store import DEFAULT_DB_URL, Store
from ledger.views import create_views
from projections.balances import balances_digest

# Every environment variable peerledger reads, and what for.  The deploy
# files may set these and no others (tests/test_deploy_files.py).
DB_ENV = "PEERLEDGER_DB"
ENVIRONMENT: dict[str, str] = {
    DB_ENV: "the database URL when --db is not given",
    "PGUSER": "the PostgreSQL user when the database URL names none (default postgres)",
    "PGPASSWORD": "the PostgreSQL password when the database URL has none: keep it in a secret, not in the URL",
    "PEERLEDGER_SIGNING_KEY": "the checkpoint signing key's file when --key-file is not given (ledger.signing)",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SOME_REJECTED = 3
EXIT_NOT_FOUND = 4

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _print_json(obj: Any) -> None:
    # orjson cannot hold integers over 64 bits; balances in principle can.
    try:
        data = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    except TypeError:
        import json

        data = json.dumps(obj, indent=2, ensure_ascii=False).encode()
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.flush()


def _open(args: argparse.Namespace) -> Store:
    store = Store(args.db)
    create_views(store)
    return store


# -- ingest -----------------------------------------------------------------


def _offered(paths: Sequence[str], stack: ExitStack, progress: Any) -> Iterator[Offered]:
    for path in paths:
        if path == "-":
            yield from read_lines(sys.stdin.buffer, "stdin")
            continue
        stream = stack.enter_context(open(path, "rb"))
        task = None
        if progress is not None:
            task = progress.add_task(os.path.basename(path), total=os.path.getsize(path))
        for item in read_lines(stream, path):
            if task is not None:
                progress.update(task, completed=stream.tell())
            yield item


# Inputs at least this large are projected by a second process while they
# are appended (two cores busy); smaller ones are projected afterwards, in
# process, which is quicker than starting a process.
PARALLEL_PROJECTION_MIN_BYTES = 4 * 1024 * 1024


def ingest_paths(store: Store, paths: Sequence[str], show_progress: bool) -> dict[str, Any]:
    """Ingest files (or stdin), then bring the read models to the log's head."""
    counts: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    size_bytes = sum(os.path.getsize(p) for p in paths if p != "-")
    parallel = "-" in paths or size_bytes >= PARALLEL_PROJECTION_MIN_BYTES
    with ExitStack() as stack:
        if parallel:
            stack.enter_context(ProjectorProcess(store.url))
        ingestor = Ingestor(store)
        progress = None
        if show_progress:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            progress = stack.enter_context(Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=err, transient=False))
        for batch in batches(_offered(paths, stack, progress)):
            for outcome in ingestor.ingest(batch):
                counts[outcome.outcome] += 1
                if outcome.code:
                    by_code[outcome.code] += 1
    if not parallel:
        Projector(store).catch_up()
    return {
        ACCEPTED: counts[ACCEPTED],
        DUPLICATE: counts[DUPLICATE],
        REJECTED: counts[REJECTED],
        "rejected_by_code": dict(sorted(by_code.items())),
    }


def cmd_ingest(args: argparse.Namespace) -> int:
    with _open(args) as store:
        summary = ingest_paths(store, args.files, show_progress=sys.stderr.isatty() and not args.json)
    if args.json:
        _print_json(summary)
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
    """Key columns left, money columns right with thousands separators."""
    t = Table(title=title)
    for col in keys:
        t.add_column(col)
    for col in figures:
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*(str(r[k]) for k in keys), *(f"{r[c]:,}" for c in figures))
    return t


def cmd_balances(args: argparse.Namespace) -> int:
    with _open(args) as store:
        rows = _balances(store, args)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    title = f"balances of {args.platform}" + (f" as of seq {args.as_of}" if args.as_of else "") + (
        f" as of {args.as_of_time}" if args.as_of_time else "")
    out.print(_money_table(title, ("account", "currency"), ("earned", "reversed", "paid", "balance"), rows))
    return EXIT_OK


def cmd_digest(args: argparse.Namespace) -> int:
    args.currency = None
    with _open(args) as store:
        rows = _balances(store, args)
    print(balances_digest(rows))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    with _open(args) as store:
        as_of = _as_of_seq(store, args)
        ex = explain_doc(store, args.platform, args.value, as_of)
    if ex is None:
        when = f" as of seq {as_of}" if as_of is not None else ""
        err.print(f"no value {args.value!r} in platform {args.platform!r}{when}")
        return EXIT_NOT_FOUND
    if args.json:
        _print_json(ex)
        return EXIT_OK
    out.print(f"value [bold]{ex['value']}[/] on work [bold]{ex['work']}[/]: {ex['amount']:,} {ex['currency']}, "
              f"fee {ex['fee_bps']} bps, reversed {ex['reversed']:,}, accepted at seq {ex['seq']}")
    t = Table(title="shares and allocation")
    t.add_column("recipient")
    t.add_column("share", justify="right")
    t.add_column("allocation", justify="right")
    for r, share in ex["shares"].items():
        t.add_row(r, share if len(share) < 60 else share[:57] + "…", f"{ex['allocation'][r]:,}")
    out.print(t)
    p = Table(title=f"largest paths ({ex['works_reached']} works reached)")
    p.add_column("path")
    p.add_column("recipient")
    p.add_column("share", justify="right")
    for path in ex["paths"]:
        share = path["share"]
        p.add_row(" → ".join(path["works"]), path["recipient"], share if len(share) < 40 else share[:37] + "…")
    out.print(p)
    return EXIT_OK


def cmd_statement(args: argparse.Namespace) -> int:
    with _open(args) as store:
        doc = statement_doc(store, args.platform, args.prosumer, args.period)
    periods = doc["periods"]
    if args.json:
        _print_json(doc)
        return EXIT_OK
    out.print(_money_table(f"statement of {args.prosumer} on {args.platform}", ("period", "currency"),
                           ("earned", "reversed", "paid", "net"), periods))
    return EXIT_OK


def cmd_rejects(args: argparse.Namespace) -> int:
    with _open(args) as store:
        rows = store.rejects(args.platform, args.limit)
    docs = reject_docs(rows)
    if args.json:
        _print_json(docs)
        return EXIT_OK
    t = Table(title="rejected events")
    for col in ("#", "platform", "id", "code", "message", "source"):
        t.add_column(col)
    for d in docs:
        t.add_row(str(d["reject_id"]), d["platform"] or "?", d["id"] or "?", d["code"], d["message"], d["source"])
    out.print(t)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args) as store:
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

    from ledger import metrics
    from ledger.claims import open_claims

    if args.metrics_port is not None and not args.follow:
        err.print("peerledger: --metrics-port is for a projector that keeps running (--follow)")
        return EXIT_USAGE
    with _open(args) as store:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from ledger.demo import run_demo

    return run_demo(args)


# -- the parser -------------------------------------------------------------


def parent_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """(--db, --json, --platform): the options every command family shares."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=os.environ.get(DB_ENV, DEFAULT_DB_URL),
                        help="sqlite:///FILE (default sqlite:///peerledger.db) or postgresql://user@host:port/db; "
                             f"env {DB_ENV}")
    jsonf = argparse.ArgumentParser(add_help=False)
    jsonf.add_argument("--json", action="store_true", help="machine-readable output")
    plat = argparse.ArgumentParser(add_help=False)
    plat.add_argument("--platform", required=True)
    return common, jsonf, plat


def _instant(text: str) -> str:
    try:
        return ledger_instant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _as_of_options(s: argparse.ArgumentParser) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument("--as-of", type=int, metavar="SEQ", help="the state after the event at SEQ")
    g.add_argument("--as-of-time", type=_instant, metavar="T",
                   help="RFC 3339: the state after the last event the ledger accepted at or before T")


def parser() -> argparse.ArgumentParser:
    common, jsonf, plat = parent_parsers()
    p = argparse.ArgumentParser(prog="peerledger", description="Event-sourced contribution ledger with exact value attribution.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", parents=[common, jsonf], help="ingest JSON Lines files ('-' = stdin)")
    s.add_argument("files", nargs="+")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("balances", parents=[common, jsonf, plat], help="balances per account and currency")
    s.add_argument("--currency")
    _as_of_options(s)
    s.set_defaults(func=cmd_balances)

    s = sub.add_parser("digest", parents=[common, plat], help="the balances digest (EVENTS.md §5)")
    _as_of_options(s)
    s.set_defaults(func=cmd_digest)

    s = sub.add_parser("explain", parents=[common, jsonf, plat], help="why a value was split as it was")
    s.add_argument("--value", required=True)
    _as_of_options(s)
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

    s = sub.add_parser("project", parents=[common], help="bring the read models to the log's head")
    s.add_argument("--follow", action="store_true",
                   help="keep following the logs until SIGINT/SIGTERM; on PostgreSQL, several followers "
                        "split the platforms between them (docs/scaling.md)")
    s.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="with --follow: serve /metrics, /healthz and /readyz on http://0.0.0.0:PORT")
    s.set_defaults(func=cmd_project)

    s = sub.add_parser("demo", parents=[common], help="generate, ingest and explain a realistic stream")
    s.add_argument("--events", type=int, default=60_000)
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=cmd_demo)

    # The auditor's commands build on this module's helpers: their module is
    # imported once this one is complete.
    from ledger.cli_audit import register

    register(sub, common, jsonf, plat)
    from ledger import cli_http

    cli_http.register(sub, common, jsonf, plat)
    from ledger import cli_kafka

    cli_kafka.register(sub, common, jsonf, plat)
    from ledger import cli_insights

    cli_insights.register(sub, common, jsonf, plat)
    from ledger import cluster

    cluster.register(sub, common, jsonf, plat)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    tune_gc()
    args = parser().parse_args(argv)
    if getattr(args, "period", None) and not _is_period(args.period):
        err.print(f"--period must be YYYY-MM, got {args.period!r}")
        return 2
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return EXIT_OK
    except (ValueError, OSError) as e:
        err.print(f"peerledger: {e}")
        return EXIT_FAILURE


def _is_period(s: str) -> bool:
    return len(s) == 7 and s[4] == "-" and s[:4].isdigit() and s[5:].isdigit() and 1 <= int(s[5:]) <= 12


if __name__ == "__main__":
    sys.exit(main())
