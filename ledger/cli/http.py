"""The HTTP service's commands: `serve` and `tokens`.

    peerledger serve [--host H] [--port N] [--db URL] [--projector process|none] [--deliverer process|none]
    peerledger tokens create --platform P --role ingest|operator|auditor [--label L] [--json]
    peerledger tokens create --all-platforms --role admin [--label L] [--json]
    peerledger tokens list [--json]
    peerledger tokens revoke TOKEN_ID

`tokens create` prints the token once: only its SHA-256 is stored, so it
cannot be shown again (create a new one and revoke the old).  Exit codes as
everywhere: 0 ok, 2 bad usage, 4 no such token.
"""

from __future__ import annotations

import argparse
from typing import Any

from ledger.cli.common import EXIT_NOT_FOUND, EXIT_OK, err, open_store, out, print_json
from ledger.http.tokens import (
    ADMIN,
    ROLES,
    create_token,
    create_tokens_table,
    list_tokens,
    revoke_token,
)
from ledger.storage.store import Store

EXIT_USAGE = 2
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _store(args: argparse.Namespace) -> Store:
    store = open_store(args)
    create_tokens_table(store)
    return store


def cmd_serve(args: argparse.Namespace) -> int:
    from ledger.http.app import serve

    open_store(args).close()  # an older database is upgraded once, before the service starts
    serve(args.db, args.host, args.port, log_level=args.log_level, access_log=not args.no_access_log,
          projector=args.projector == "process", deliverer=args.deliverer == "process")
    return EXIT_OK


def cmd_tokens_create(args: argparse.Namespace) -> int:
    if args.all_platforms != (args.role == ADMIN):
        err.print("peerledger: an admin token takes --all-platforms; every other role takes --platform P")
        return EXIT_USAGE
    with _store(args) as store:
        try:
            token, info = create_token(store, args.role, None if args.all_platforms else args.platform, args.label)
        except ValueError as e:
            err.print(f"peerledger: {e}")
            return EXIT_USAGE
    if args.json:
        print_json({**info.as_json(), "token": token})
    else:
        err.print(f"token {info.token_id}: role {info.role} on {info.platform or 'every platform'}; "
                  "shown once, only its hash is stored:")
        print(token)
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        tokens = list_tokens(store)
    if args.json:
        print_json([t.as_json() for t in tokens])
        return EXIT_OK
    from rich.table import Table

    t = Table(title="tokens (secrets are not stored)")
    for col in ("token_id", "role", "platform", "label", "created_at", "revoked_at"):
        t.add_column(col)
    for tok in tokens:
        t.add_row(tok.token_id, tok.role, tok.platform or "*", tok.label, tok.created_at, tok.revoked_at or "")
    out.print(t)
    return EXIT_OK


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    with _store(args) as store:
        revoked = revoke_token(store, args.token_id)
    if not revoked:
        err.print(f"peerledger: no unrevoked token {args.token_id!r}")
        return EXIT_NOT_FOUND
    print(f"revoked {args.token_id}")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `serve` and `tokens` to `peerledger`'s subparsers."""
    del plat  # `tokens create` takes --platform or --all-platforms, not the shared required --platform
    s = sub.add_parser("serve", parents=[common], help="the HTTP API and dashboard (FastAPI on uvicorn)")
    s.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--no-access-log", action="store_true", help="do not log every request")
    s.add_argument("--projector", choices=("process", "none"), default="process",
                   help="keep the derived views (the dashboard's flows) at the head from a process of this "
                        "service (default), or leave that to projection workers (peerledger project --follow)")
    s.add_argument("--deliverer", choices=("process", "none"), default="process",
                   help="POST booking documents to the webhook endpoints from a process of this service "
                        "(default), or leave that to a `peerledger deliver --follow` of its own")
    s.set_defaults(func=cmd_serve)

    tokens = sub.add_parser("tokens", help="bearer tokens of the HTTP API").add_subparsers(
        dest="tokens_command", required=True)
    s = tokens.add_parser("create", parents=[common, jsonf], help="create a token and print it once")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--platform", help="the platform the token is for")
    where.add_argument("--all-platforms", action="store_true", help="every platform (role admin only)")
    s.add_argument("--role", required=True, choices=ROLES)
    s.add_argument("--label", default="", help="a note for `tokens list` (who holds it)")
    s.set_defaults(func=cmd_tokens_create)

    s = tokens.add_parser("list", parents=[common, jsonf], help="every token, without secrets")
    s.set_defaults(func=cmd_tokens_list)

    s = tokens.add_parser("revoke", parents=[common], help="revoke a token by its id (effective at once)")
    s.add_argument("token_id")
    s.set_defaults(func=cmd_tokens_revoke)
