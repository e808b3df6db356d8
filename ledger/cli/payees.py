"""The operator's payees: `payees set | list | delete` (`ledger.storage.payees`).

    peerledger payees set --platform P --prosumer X --name N (--iban I [--bic B] | --email E)
    peerledger payees list --platform P [--json]
    peerledger payees delete --platform P --prosumer X

The details live outside the log (a payout file joins them with a run), so
deleting them erases them.  `list` shows them to the operator; its table masks
IBANs, `--json` gives every field for tools.  Exit codes: 0 ok, 2 bad details,
4 no such payee to delete.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from ledger.cli.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, err, open_store, out, print_json
from ledger.storage.payees import PayeeError, delete_payee, list_payees, masked_iban, payee, set_payee


def cmd_payees_set(args: argparse.Namespace) -> int:
    try:
        p = payee(args.platform, args.prosumer, args.name, args.iban, args.bic, args.email)
        with open_store(args) as store:
            set_payee(store, p)
    except PayeeError as e:
        err.print(f"peerledger: {e}")
        return EXIT_USAGE
    err.print(f"payee {p.prosumer} of {p.platform} set ({'SEPA transfer' if p.iban else 'e-mail'})")
    return EXIT_OK


def cmd_payees_list(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        payees = list_payees(store, args.platform)
    if args.json:
        print_json([p.as_json() for p in payees])
        return EXIT_OK
    t = Table(title=f"payees of {args.platform}")
    for col in ("prosumer", "name", "method", "account"):
        t.add_column(col)
    for p in payees:
        account = f"{masked_iban(p.iban)}" + (f" {p.bic}" if p.bic else "") if p.iban else p.email or ""
        t.add_row(p.prosumer, p.name, p.method, account)
    out.print(t)
    return EXIT_OK


def cmd_payees_delete(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        deleted = delete_payee(store, args.platform, args.prosumer)
    if not deleted:
        err.print(f"peerledger: no payee {args.prosumer!r} on platform {args.platform!r}")
        return EXIT_NOT_FOUND
    err.print(f"payee {args.prosumer} of {args.platform} deleted")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `payees set | list | delete` to `peerledger`'s subparsers."""
    payees = sub.add_parser("payees", help="the details transfers need (name, IBAN or e-mail), outside the log"
                            ).add_subparsers(dest="payees_command", required=True)
    s = payees.add_parser("set", parents=[common, plat], help="set (or replace) how a prosumer is paid")
    s.add_argument("--prosumer", required=True)
    s.add_argument("--name", required=True, help="the account holder's name (at most 70 characters)")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--iban", help="paid by SEPA credit transfer to this IBAN (checked: length, check digits)")
    how.add_argument("--email", help="paid through a wallet provider (PayPal) at this e-mail")
    s.add_argument("--bic", help="the IBAN's bank (optional within SEPA)")
    s.set_defaults(func=cmd_payees_set)
    s = payees.add_parser("list", parents=[common, jsonf, plat], help="the platform's payees (IBANs masked; "
                                                                      "--json has every field)")
    s.set_defaults(func=cmd_payees_list)
    s = payees.add_parser("delete", parents=[common, plat], help="erase a prosumer's details")
    s.add_argument("--prosumer", required=True)
    s.set_defaults(func=cmd_payees_delete)
