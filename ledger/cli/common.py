"""What every `peerledger` command shares: options, exit codes, output.

The command modules (`ledger.cli.main`, `.audit`, `.http`, `.kafka`, `.payouts`,
`.insights`, `.cluster`) import from here and never from each other, so the
CLI has no import circle; `ledger.cli.main` assembles the parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from rich.console import Console

from ledger.storage.queries import ledger_instant
from ledger.storage.store import DEFAULT_DB_URL, Store
from ledger.storage.upgrade import upgrade

# Every environment variable peerledger reads, and what for.  The deploy
# files may set these and no others (tests/test_deploy_files.py).
DB_ENV = "PEERLEDGER_DB"
ENVIRONMENT: dict[str, str] = {
    DB_ENV: "the database URL when --db is not given",
    "PGUSER": "the PostgreSQL user when the database URL names none (default postgres)",
    "PGPASSWORD": "the PostgreSQL password when the database URL has none: keep it in a secret, not in the URL",
    "PEERLEDGER_CACHE_MIB": "the state cache budget of a writer process, in MiB (ledger.ops.runtime)",
    "PEERLEDGER_WEBHOOK_TIME_SCALE": "multiplies the webhook retry schedule and the 5 days before disabling "
                                     "(tests; ledger.webhooks.delivery)",
    "PEERLEDGER_SIGNING_KEY": "the checkpoint signing key's file when --key-file is not given (ledger.audit.signing)",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SOME_REJECTED = 3
EXIT_NOT_FOUND = 4

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    # orjson cannot hold integers over 64 bits; balances in principle can.
    try:
        data = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    except TypeError:
        import json

        data = json.dumps(obj, indent=2, ensure_ascii=False).encode()
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.flush()


def open_store(args: argparse.Namespace) -> Store:
    """The database of `--db`; one written by an older peerledger is
    upgraded first, once (`ledger.storage.upgrade`), with a progress bar."""
    store = Store(args.db)
    if store.upgrade_pending:
        upgrade_store(store)
    return store


def redacted(url: str) -> str:
    """`url` without its password, fit for a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def upgrade_store(store: Store) -> None:
    """Build the state of a database whose upgrade is pending, with a progress
    bar on stderr (on a terminal; otherwise a line per platform)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    # One line per message (soft_wrap): without a terminal rich would wrap at 80 columns.
    err.print(f"peerledger: upgrading {redacted(store.url)}: building each platform's state from its log (once)",
              soft_wrap=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=False, disable=not err.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def progress(platform: str, done: int, total: int) -> None:
            if platform not in tasks:
                tasks[platform] = bar.add_task(platform, total=total)
            bar.update(tasks[platform], completed=done)
            if bar.disable and done == total:  # no bar (not a terminal): a line per platform
                err.print(f"peerledger: {platform}: state built from {total} events", soft_wrap=True)

        platforms = upgrade(store, progress)
    err.print(f"peerledger: upgraded {len(platforms)} platform(s)" if platforms else
              "peerledger: nothing to upgrade: another process upgraded it meanwhile", soft_wrap=True)


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


def instant(text: str) -> str:
    try:
        return ledger_instant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seq(text: str) -> int:
    """A seq option: an integer ≥ 0 (0: before the first event)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def as_of_options(s: argparse.ArgumentParser) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument("--as-of", type=seq, metavar="SEQ",
                   help="the state after the event at SEQ (at most the log's head; 0: before the first event)")
    g.add_argument("--as-of-time", type=instant, metavar="T",
                   help="RFC 3339: the state after the last event the ledger accepted at or before T")


def is_period(s: str) -> bool:
    return len(s) == 7 and s[4] == "-" and s[:4].isdigit() and s[5:].isdigit() and 1 <= int(s[5:]) <= 12




def write_atomically(path: str, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: into PATH.partial beside it,
    fsynced, then renamed, so a file named PATH is never half-written."""
    import contextlib

    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
