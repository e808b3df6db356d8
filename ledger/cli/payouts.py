"""The operator's payout runs: `payouts plan`.

    peerledger payouts plan --platform P --currency C --min-balance N [--reference TEXT] [--at T] [--csv]

prints, on stdout, one `payout.issued` per prosumer whose balance in C is at
least N minor units, paying the whole balance, as JSON Lines ready for
`peerledger ingest` (or, with `--csv`, the same run for a payment provider:
prosumer, amount, currency, payout, reference).  Balances below N carry
forward.  Event and payout ids are derived from the run (its currency and the
log's head), so ingesting the same plan twice pays once: the second time
every event is a `duplicate` (`projections.payouts`).  A summary goes to
stderr.  Exit codes as everywhere: 0 ok, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ledger.cli.common import EXIT_OK, EXIT_USAGE, err, open_store
from ledger.storage.queries import payout_plan
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
              f"{plan.total_minor:,} {run.currency} minor units in all; {plan.carried_forward} positive "
              f"balances below {run.min_balance_minor:,} carry forward", soft_wrap=True)
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `payouts plan` to `peerledger`'s subparsers."""
    del jsonf  # the plan is JSON Lines (or CSV) already
    payouts = sub.add_parser("payouts", help="payout runs: plan the payout.issued events of a run").add_subparsers(
        dest="payouts_command", required=True)
    s = payouts.add_parser("plan", parents=[common, plat],
                           help="one payout.issued per prosumer whose balance is at least --min-balance, "
                                "as JSON Lines for `peerledger ingest` (ingesting it twice pays once)")
    s.add_argument("--currency", required=True, help="three upper-case letters; each currency is paid apart")
    s.add_argument("--min-balance", type=int, required=True, metavar="N",
                   help="pay balances of at least N minor units (N >= 1); smaller ones carry forward")
    s.add_argument("--reference", help="free text (at most 200 characters) copied into every payout")
    s.add_argument("--at", metavar="T",
                   help="the events' `at` (RFC 3339); default the `at` of the log's head event, "
                        "so the same run prints the same bytes")
    s.add_argument("--csv", action="store_true",
                   help="the same run for a payment provider: prosumer, amount, currency, payout, reference")
    s.set_defaults(func=cmd_payouts_plan)
