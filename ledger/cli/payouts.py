"""The operator's payout runs: `payouts plan | file | reconcile` (docs/payouts.md).

    peerledger payouts plan --platform P --currency C --min-balance N [--reference RUN] [--at T] [--csv]
    peerledger payouts file --platform P --reference RUN --format pain.001|paypal-csv
                            [--debtor-name N --debtor-iban I [--debtor-bic B]] [--execution-date D] [--output FILE]
    peerledger payouts reconcile --platform P REPORT [--json]

`plan` prints, on stdout, one `payout.issued` per prosumer whose balance in C
is at least N minor units, paying the whole balance, as JSON Lines ready for
`peerledger ingest` (or, with `--csv`, the same run for a payment provider:
prosumer, amount, currency, payout, reference).  Balances below N carry
forward.  Event and payout ids are derived from the run (its currency and the
log's head), so ingesting the same plan twice pays once: the second time
every event is a `duplicate` (`projections.payouts`).  A summary goes to
stderr.

`file` writes the ingested run (the `payout.issued` events whose reference
is RUN) as a bank or PayPal takes it (`ledger.payments.files`): on stdout,
or whole into FILE (through FILE.partial), or not at all when anything is
missing.  `reconcile` reads the bank's pain.002 or camt.054 and prints the
`payout.returned` events of its bounced transfers, as JSON Lines for
`peerledger ingest`; its report goes to stderr, a table, or with `--json` one
JSON object (stdout stays the events, so `reconcile … | ingest -` works either way).

Exit codes as everywhere: 0 ok, 1 a file that cannot be written or a report
that cannot be read, 2 bad usage, 4 no such run.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

import orjson
from rich.table import Table

from ledger.cli.common import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, err, open_store, write_atomically
from ledger.contract.money import format_money
from ledger.payments.files import FORMATS, Debtor, PayoutFileError, pain001, paypal_csv
from ledger.payments.reconcile import OUTCOMES, REPORT_MAX_BYTES, ReportError, reconcile
from ledger.storage.payees import PayeeError, checked_bic, checked_iban, payees_of
from ledger.storage.queries import issued_payouts, log_head, payout_plan
from projections.balances import canonical_json
from projections.payouts import plan_csv, plan_jsonl


def cmd_payouts_plan(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        try:
            plan = payout_plan(store, args.platform, args.currency, args.min_balance, args.reference, args.at)
        except ValueError as e:  # an option the events could not carry
            err.print(f"peerledger: {e}")
            return EXIT_USAGE
    if args.csv:
        sys.stdout.buffer.write(plan_csv(plan).encode("utf-8"))
    else:
        sys.stdout.buffer.write(plan_jsonl(plan))
    sys.stdout.flush()
    run = plan.run
    err.print(f"payout run of {run.platform} at seq {run.seq}: {len(plan.events)} payout.issued, "
              f"{format_money(plan.total_minor, run.currency)} in all; {plan.carried_forward} positive "
              f"balances below {format_money(run.min_balance_minor, run.currency)} carry forward", soft_wrap=True)
    return EXIT_OK


def _debtor(args: argparse.Namespace) -> Debtor:
    if not args.debtor_name or not args.debtor_iban:
        raise PayeeError("a pain.001 file needs --debtor-name and --debtor-iban (the account paid from)")
    bic = checked_bic(args.debtor_bic, "--debtor-bic") if args.debtor_bic else None
    return Debtor(args.debtor_name, checked_iban(args.debtor_iban, "--debtor-iban"), bic)


def cmd_payouts_file(args: argparse.Namespace) -> int:
    try:
        debtor = _debtor(args) if args.format == "pain.001" else None
        execution = date.fromisoformat(args.execution_date) if args.execution_date else None
    except ValueError as e:
        err.print(f"peerledger: {e}")
        return EXIT_USAGE
    with open_store(args) as store:
        log_head(store, args.platform)
        events = issued_payouts(store, args.platform, args.reference)
        if not events:
            err.print(f"peerledger: platform {args.platform!r} issued no payout with reference {args.reference!r}")
            return EXIT_NOT_FOUND
        payees = payees_of(store, args.platform, {e["data"]["prosumer"] for e in events})
    try:
        if debtor is not None:
            data = pain001(args.platform, args.reference, events, payees, debtor, execution)
        else:
            data = paypal_csv(args.reference, events, payees)
    except PayoutFileError as e:
        err.print(f"peerledger: no file written: {len(e.problems)} problem(s) in run {args.reference!r}:")
        for problem in e.problems:
            err.print(f"  {problem}", soft_wrap=True)
        return EXIT_FAILURE
    if args.output:
        write_atomically(args.output, data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    totals: dict[str, int] = {}
    for e in events:
        totals[e["data"]["currency"]] = totals.get(e["data"]["currency"], 0) + e["data"]["amount"]
    err.print(f"{args.format} of run {args.reference!r} of {args.platform}: {len(events)} payouts, "
              + ", ".join(format_money(v, c) for c, v in sorted(totals.items()))
              + (f", written to {args.output}" if args.output else ""), soft_wrap=True)
    return EXIT_OK


def cmd_payouts_reconcile(args: argparse.Namespace) -> int:
    with open(args.report, "rb") as f:
        data = f.read(REPORT_MAX_BYTES + 1)
    with open_store(args) as store:
        try:
            result = reconcile(store, args.platform, data)
        except ReportError as e:
            err.print(f"peerledger: {args.report}: {e}")
            return EXIT_FAILURE
    sys.stdout.buffer.write(b"".join(canonical_json(event) + b"\n" for event in result.events))
    sys.stdout.flush()
    doc = result.as_json()
    if args.json:
        sys.stderr.buffer.write(orjson.dumps(doc) + b"\n")
        sys.stderr.flush()
        return EXIT_OK
    err.print(f"{result.kind} {result.msg_id} for {result.platform}: {doc['items']} items, {doc['matched']} "
              f"matched, {doc['events']} payout.returned events on stdout", soft_wrap=True)
    t = Table(title="reconciliation")
    for col in ("payout", "outcome", "amount", "reason"):
        t.add_column(col)
    for item in result.items:
        amount = format_money(item["amount"], item["currency"]) if item["amount"] is not None else ""
        t.add_row(str(item["payout"] or item["file_id"]), item["outcome"], amount, item["reason_code"] or "")
    err.print(t)
    err.print("  " + ", ".join(f"{o}: {doc[o]}" for o in OUTCOMES), soft_wrap=True)
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `payouts plan | file | reconcile` to `peerledger`'s subparsers."""
    payouts = sub.add_parser("payouts", help="payout runs: plan them, write their bank or PayPal file, "
                                             "reconcile the bank's report").add_subparsers(
        dest="payouts_command", required=True)
    s = payouts.add_parser("plan", parents=[common, plat],
                           help="one payout.issued per prosumer whose balance is at least --min-balance, "
                                "as JSON Lines for `peerledger ingest` (ingesting it twice pays once)")
    s.add_argument("--currency", required=True, help="three upper-case letters; each currency is paid apart")
    s.add_argument("--min-balance", type=int, required=True, metavar="N",
                   help="pay balances of at least N minor units (N >= 1); smaller ones carry forward")
    s.add_argument("--reference", help="free text (at most 200 characters) copied into every payout: "
                                       "the run's name for `payouts file`")
    s.add_argument("--at", metavar="T",
                   help="the events' `at` (RFC 3339); default the `at` of the log's head event, "
                        "so the same run prints the same bytes")
    s.add_argument("--csv", action="store_true",
                   help="the same run for a payment provider: prosumer, amount, currency, payout, reference")
    s.set_defaults(func=cmd_payouts_plan)

    s = payouts.add_parser("file", parents=[common, plat],
                           help="the issued run (payout.issued with this reference) as a SEPA pain.001.001.09 "
                                "or a PayPal Payouts CSV file; the same run gives the same bytes")
    s.add_argument("--reference", required=True, metavar="RUN")
    s.add_argument("--format", required=True, choices=FORMATS)
    s.add_argument("--debtor-name", help="pain.001: the name of the account paid from")
    s.add_argument("--debtor-iban", help="pain.001: the IBAN paid from")
    s.add_argument("--debtor-bic", help="pain.001: its bank's BIC (optional)")
    s.add_argument("--execution-date", metavar="YYYY-MM-DD",
                   help="pain.001: the requested execution date; default the day of the run's events")
    s.add_argument("--output", metavar="FILE", help="write FILE whole (through FILE.partial); default stdout")
    s.set_defaults(func=cmd_payouts_file)

    s = payouts.add_parser("reconcile", parents=[common, jsonf, plat],
                           help="a bank's pain.002 or camt.054 as payout.returned events (JSON Lines on "
                                "stdout, for `peerledger ingest`) and a report on stderr")
    s.add_argument("report", metavar="FILE")
    s.set_defaults(func=cmd_payouts_reconcile)
