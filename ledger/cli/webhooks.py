"""Webhooks: `webhooks add | list | remove | rotate | enable | attempts | dead-letters | replay` and `deliver`.

    peerledger webhooks add --platform P --url URL [--types T,…] [--from-seq N] [--json]
    peerledger webhooks list --platform P [--json]          # never a secret
    peerledger webhooks remove ID
    peerledger webhooks rotate ID [--json]                  # the new secret, shown once
    peerledger webhooks enable ID                           # a disabled endpoint resumes at its cursor
    peerledger webhooks attempts ID [--limit N] [--json]
    peerledger webhooks dead-letters ID [--json]
    peerledger webhooks replay ID --from-seq N
    peerledger deliver [--follow] [--metrics-port PORT] [--time-scale F]

`add` and `rotate` print the secret once (`whsec_…`): the receiver verifies
signatures with it.  The tables are `ledger.webhooks.endpoints`'; the
deliverer is `ledger.webhooks.delivery`.  Exit codes: 0 ok, 2 bad usage (a
bad URL, an unknown event type), 4 no such endpoint.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ledger.cli.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, err, open_store, out, print_json
from ledger.webhooks import endpoints as eps


def _types(text: str | None) -> list[str] | None:
    return None if text is None else [t for t in text.split(",") if t.strip()]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _no_endpoint(endpoint_id: str) -> int:
    err.print(f"peerledger: no webhook endpoint {endpoint_id!r}")
    return EXIT_NOT_FOUND


def cmd_add(args: argparse.Namespace) -> int:
    try:
        with open_store(args) as store:
            endpoint, secret = eps.add_endpoint(store, args.platform, args.url, _types(args.types), args.from_seq)
    except eps.WebhookError as e:
        err.print(f"peerledger: {e}")
        return EXIT_USAGE
    if args.json:
        print_json({**endpoint.as_json(), "secret": secret})
    else:
        err.print(f"webhook endpoint {endpoint.endpoint_id} of {endpoint.platform}: documents after seq "
                  f"{endpoint.cursor_seq}; its secret, shown once:")
        print(endpoint.endpoint_id)
        print(secret)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        found = eps.list_endpoints(store, args.platform)
    if args.json:
        print_json([e.as_json() for e in found])
        return EXIT_OK
    from rich.table import Table

    t = Table(title=f"webhook endpoints of {args.platform} (secrets are shown only when made)")
    for col in ("endpoint_id", "url", "types", "cursor_seq", "state"):
        t.add_column(col)
    for e in found:
        state = "enabled" if e.enabled else f"disabled {e.disabled_at}: {e.disabled_reason}"
        t.add_row(e.endpoint_id, e.url, ",".join(e.types) or "*", str(e.cursor_seq), state)
    out.print(t)
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if not eps.remove_endpoint(store, args.endpoint_id):
            return _no_endpoint(args.endpoint_id)
    err.print(f"webhook endpoint {args.endpoint_id} removed, with its attempts and dead letters")
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        secret = eps.rotate_secret(store, args.endpoint_id)
    if secret is None:
        return _no_endpoint(args.endpoint_id)
    if args.json:
        print_json({"endpoint_id": args.endpoint_id, "secret": secret,
                    "previous_secret_seconds": eps.ROTATION_GRACE_SECONDS})
    else:
        err.print(f"webhook endpoint {args.endpoint_id}: new secret, shown once; the previous one also signs "
                  f"for {eps.ROTATION_GRACE_SECONDS // 3600} h:")
        print(secret)
    return EXIT_OK


def cmd_enable(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if not eps.enable_endpoint(store, args.endpoint_id):
            return _no_endpoint(args.endpoint_id)
    err.print(f"webhook endpoint {args.endpoint_id} enabled: it resumes at its cursor")
    return EXIT_OK


def cmd_attempts(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if eps.get_endpoint(store, args.endpoint_id) is None:
            return _no_endpoint(args.endpoint_id)
        found = eps.list_attempts(store, args.endpoint_id, args.limit)
    if args.json:
        print_json([a.as_json() for a in found])
        return EXIT_OK
    from rich.table import Table

    t = Table(title=f"the newest {len(found)} attempts of {args.endpoint_id}")
    for col in ("seq", "attempt", "at", "status or error", "seconds"):
        t.add_column(col)
    for a in found:
        t.add_row(str(a.seq), str(a.attempt), a.at, str(a.status) if a.status is not None else a.error or "",
                  f"{a.duration_seconds:.3f}")
    out.print(t)
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if eps.get_endpoint(store, args.endpoint_id) is None:
            return _no_endpoint(args.endpoint_id)
        found = eps.list_dead_letters(store, args.endpoint_id)
    if args.json:
        print_json([x.as_json() for x in found])
        return EXIT_OK
    from rich.table import Table

    t = Table(title=f"dead letters of {args.endpoint_id} (webhooks replay sends them again)")
    for col in ("seq", "attempts", "last status or error", "at"):
        t.add_column(col)
    for x in found:
        t.add_row(str(x.seq), str(x.attempts), str(x.status) if x.status is not None else x.error or "", x.at)
    out.print(t)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if not eps.replay(store, args.endpoint_id, args.from_seq):
            return _no_endpoint(args.endpoint_id)
    err.print(f"webhook endpoint {args.endpoint_id}: documents from seq {args.from_seq} are sent again")
    return EXIT_OK


def cmd_deliver(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ledger.ops import metrics
    from ledger.webhooks.delivery import Deliverer, Settings, parse_time_scale

    if args.metrics_port is not None and not args.follow:
        err.print("peerledger: --metrics-port is for a deliverer that keeps running (--follow)")
        return EXIT_USAGE
    try:
        settings = Settings.from_env(None if args.time_scale is None else parse_time_scale(args.time_scale))
    except ValueError as e:
        err.print(f"peerledger: {e}")
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, checks=(metrics.database_check(args.db),))
    with open_store(args) as store:
        summary = Deliverer(store, settings, follow=args.follow).run(stop)
    if not args.follow:
        print_json(summary.as_json())
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `webhooks …` and `deliver` to `peerledger`'s subparsers."""
    hooks = sub.add_parser("webhooks", help="endpoints that booking documents are POSTed to, signed "
                                            "(Standard Webhooks)").add_subparsers(dest="webhooks_command",
                                                                                  required=True)
    s = hooks.add_parser("add", parents=[common, jsonf, plat], help="add an endpoint; prints its id and secret once")
    s.add_argument("--url", required=True, help=f"http(s)://host/…, at most {eps.URL_MAX_CHARS} characters")
    s.add_argument("--types", metavar="T,…", help="only documents of these event types (default every type)")
    s.add_argument("--from-seq", type=_positive, metavar="N",
                   help="send the documents from seq N on (default: those accepted from now on)")
    s.set_defaults(func=cmd_add)
    s = hooks.add_parser("list", parents=[common, jsonf, plat], help="the platform's endpoints (never a secret)")
    s.set_defaults(func=cmd_list)
    for name, func, text in (("remove", cmd_remove, "delete an endpoint, its attempts and dead letters"),
                             ("enable", cmd_enable, "re-enable a disabled endpoint (it resumes at its cursor)")):
        s = hooks.add_parser(name, parents=[common], help=text)
        s.add_argument("endpoint_id", metavar="ID")
        s.set_defaults(func=func)
    s = hooks.add_parser("rotate", parents=[common, jsonf],
                         help=f"a new secret, printed once; the old one also signs for "
                              f"{eps.ROTATION_GRACE_SECONDS // 3600} h")
    s.add_argument("endpoint_id", metavar="ID")
    s.set_defaults(func=cmd_rotate)
    s = hooks.add_parser("attempts", parents=[common, jsonf], help="the endpoint's newest delivery attempts")
    s.add_argument("endpoint_id", metavar="ID")
    s.add_argument("--limit", type=_positive, default=100, help=f"at most {eps.LIST_LIMIT_MAX} (default 100)")
    s.set_defaults(func=cmd_attempts)
    s = hooks.add_parser("dead-letters", parents=[common, jsonf], help="documents that failed every attempt")
    s.add_argument("endpoint_id", metavar="ID")
    s.set_defaults(func=cmd_dead_letters)
    s = hooks.add_parser("replay", parents=[common], help="send the documents from seq N on again")
    s.add_argument("endpoint_id", metavar="ID")
    s.add_argument("--from-seq", type=_positive, required=True, metavar="N")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("deliver", parents=[common],
                       help="POST every booking document to the endpoints that want it (webhooks)")
    s.add_argument("--follow", action="store_true", help="keep delivering new documents until interrupted")
    s.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="with --follow: serve /metrics, /healthz and /readyz on http://0.0.0.0:PORT")
    s.add_argument("--time-scale", metavar="F",
                   help="multiply the retry schedule's delays and the 5 days before disabling by F (tests; "
                        "env PEERLEDGER_WEBHOOK_TIME_SCALE)")
    s.set_defaults(func=cmd_deliver)
