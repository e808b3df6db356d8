"""`peerledger bookings`: a platform's booking documents (EVENTS.md §9) as JSON Lines.

    peerledger bookings --platform P [--from-seq N] [--follow]

One document per accepted event from seq N (default 1), in seq order, each
line its canonical bytes; `--follow` then waits for new ones, like `tail -f`,
until interrupted (a follower may start before the platform's first event).
Exit 4 without `--follow` for a platform without events.  Only committed
events are read (`ledger.bookings.documents`).
A reader that closes the pipe (`| head`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from ledger.bookings.documents import follow_documents
from ledger.cli.common import EXIT_NOT_FOUND, EXIT_OK, err, open_store, seq


def cmd_bookings(args: argparse.Namespace) -> int:
    stream = sys.stdout.buffer
    if args.follow:
        # Installed, not inherited: a shell's background job starts with SIGINT
        # ignored, and a follower must still end on SIGINT or SIGTERM.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
    with open_store(args) as store:
        if not args.follow and store.head(args.platform) == 0:
            err.print(f"peerledger: platform {args.platform!r} has no events")
            return EXIT_NOT_FOUND
        try:
            for document in follow_documents(store, args.platform, max(args.from_seq - 1, 0), follow=args.follow):
                stream.write(document.body + b"\n")
                if args.follow:
                    stream.flush()  # a follower's reader sees each document as it is committed
            stream.flush()
        except BrokenPipeError:
            sys.stdout = None  # type: ignore[assignment]  # nothing left to flush into the closed pipe
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `bookings` to `peerledger`'s subparsers."""
    s = sub.add_parser("bookings", parents=[common, plat],
                       help="the platform's booking documents (EVENTS.md §9) as JSON Lines, in seq order")
    s.add_argument("--from-seq", type=seq, default=1, metavar="N",
                   help="the first seq (default 1; 0 is the start too)")
    s.add_argument("--follow", action="store_true", help="then wait for new documents, like tail -f")
    s.set_defaults(func=cmd_bookings)
