"""The auditor's check of liabilities trees (AUDIT.md §5), from a replayed log.

`peerledger audit` replays an export into a scratch database; when the
checkpoint signed liabilities trees, these checks compare them with the
replayed balances at its size:

* **liabilities totals**: per currency, the number of prosumer rows and the
  sum of their positive balances are the signed `accounts` and `total`, and
  the signed currencies are exactly those with a prosumer row.  This needs
  no salt, so every audit makes it;
* **liabilities export** (one per `--liabilities FILE`, the leaves of one
  currency as `peerledger liabilities` prints them): every line is a leaf's
  canonical bytes, of the checkpoint's size, of a prosumer account, salts
  64 lower-case hex and strictly ascending (so distinct), no account twice;
  the leaves hash to the signed root, total and count; and merged in
  account order with the replayed rows, every prosumer row appears with
  exactly its balance and no leaf names an account without a row.

Memory stays bounded: the leaves go into a scratch table, and both sides
are read back sorted, a page at a time.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ledger.audit.checks import Check
from ledger.storage.state import streamed_balances
from ledger.storage.store import Store
from projections.liabilities import LEAF_FIELDS, SALT_RE, SumFrontier, is_prosumer, leaf_bytes, leaf_node

# A leaf line is a prosumer id, a balance and a salt: far below this.
LEAF_LINE_MAX_BYTES = 64 * 1024
LEAF_PAGE_ROWS = 10_000


def liabilities_checks(checkpoint: dict[str, Any], scratch: Store | None, paths: Sequence[str | Path]) -> list[Check]:
    """The checks of the module doc; `scratch` holds the replay at the
    checkpoint's size, or is None when the replay did not get there."""
    if scratch is None:
        return [Check("liabilities totals", False, "not recomputed: the replay did not reach the checkpoint's size")]
    platform, signed = checkpoint["platform"], checkpoint["liabilities"]
    accounts: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    with scratch.transaction(commit=False) as c:
        for account, currency, f in streamed_balances(c, scratch.dialect, platform):
            if is_prosumer(account):
                accounts[currency] += 1
                totals[currency] += max(f.balance, 0)
    replayed = {cur: {"accounts": accounts[cur], "total": totals[cur]} for cur in sorted(accounts)}
    claimed = {cur: {"accounts": tree["accounts"], "total": tree["total"]} for cur, tree in sorted(signed.items())}
    checks = [Check("liabilities totals", replayed == claimed,
                    f"replayed prosumer rows give {replayed}; the checkpoint signed {claimed}")]
    with scratch.write_transaction() as c:
        c.execute("CREATE TABLE IF NOT EXISTS audit_leaves (currency TEXT NOT NULL, account TEXT NOT NULL, "
                  "balance TEXT NOT NULL, PRIMARY KEY (currency, account)) WITHOUT ROWID")
    exported: set[str] = set()
    for path in paths:
        checks.append(_export_check(Path(path), checkpoint, scratch, exported))
    return checks


def _export_check(path: Path, checkpoint: dict[str, Any], scratch: Store, exported: set[str]) -> Check:
    name = f"liabilities export {path.name}"
    try:
        currency, problem = _load_export(path, checkpoint, scratch, exported)
    except OSError as e:
        return Check(name, False, f"cannot read {path}: {e.strerror}")
    if problem is not None:
        return Check(name, False, problem)
    difference = _compare_with_replay(scratch, checkpoint["platform"], currency)
    if difference is not None:
        return Check(name, False, f"{currency}: {difference}")
    tree = checkpoint["liabilities"][currency]
    return Check(name, True, f"{currency}: {tree['accounts']} leaves hash to the signed root {tree['root']} and total "
                             f"{tree['total']}, each with its replayed balance, salts distinct and ascending")


def _load_export(path: Path, checkpoint: dict[str, Any], scratch: Store,
                 exported: set[str]) -> tuple[str, str | None]:
    """Check each line and the tree they make, writing the leaves to the
    scratch table; the export's currency and the first problem, if any."""
    frontier = SumFrontier()
    currency: str | None = None
    previous_salt = ""
    page: list[tuple[str, str, str]] = []
    with open(path, "rb") as stream:
        for number, line in enumerate(_lines(stream), start=1):
            leaf, problem = _leaf(line, checkpoint)
            if problem is None and currency is None:
                currency = leaf["currency"]
                if currency in exported:
                    return currency, f"line 1: the {currency} tree was given twice"
                exported.add(currency)
            if problem is None and leaf["currency"] != currency:
                problem = f"a leaf of {leaf['currency']}, in an export of {currency}"
            if problem is None and leaf["salt"] <= previous_salt:
                problem = "the salts are not strictly ascending (leaf order is by salt, salts are distinct)"
            if problem is not None:
                return currency or "", f"line {number}: {problem}"
            previous_salt = leaf["salt"]
            frontier.append(leaf_node(leaf))
            page.append((leaf["currency"], leaf["account"], str(leaf["balance"])))
            if len(page) >= LEAF_PAGE_ROWS and (problem := _write(scratch, page)):
                return currency or "", problem
    if currency is None:
        return "", "no leaves: an export has the leaves of one currency's tree"
    if problem := _write(scratch, page):
        return currency, problem
    tree = frontier.summary().as_json()
    signed = checkpoint["liabilities"][currency]
    if tree != signed:
        return currency, f"the leaves make the tree {tree}; the checkpoint signed {signed}"
    return currency, None


def _leaf(line: bytes, checkpoint: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    try:
        leaf = json.loads(line)  # not orjson: a balance may exceed 64 bits
    except (ValueError, RecursionError):
        return {}, "not JSON"
    if not isinstance(leaf, dict) or set(leaf) != set(LEAF_FIELDS):
        return {}, f"a leaf has exactly the fields {list(LEAF_FIELDS)}"
    if leaf_bytes(leaf) != line:
        return {}, "not the leaf's canonical bytes"
    if not isinstance(leaf["account"], str) or not is_prosumer(leaf["account"]):
        return {}, f"{leaf['account']!r} is not a prosumer account"
    if type(leaf["balance"]) is not int or not isinstance(leaf["currency"], str):
        return {}, "a balance is an integer and a currency a string"
    if not isinstance(leaf["salt"], str) or not SALT_RE.match(leaf["salt"]):
        return {}, "a salt is 64 lower-case hex characters"
    if leaf["size"] != checkpoint["size"]:
        return {}, f"a leaf of size {leaf['size']!r}; the checkpoint is of size {checkpoint['size']}"
    if leaf["currency"] not in checkpoint["liabilities"]:
        return {}, f"the checkpoint signed no {leaf['currency']!r} tree"
    return leaf, None


def _lines(stream: Any) -> Iterator[bytes]:
    while line := stream.readline(LEAF_LINE_MAX_BYTES + 1):
        yield line[:-1] if line.endswith(b"\n") else line


def _write(scratch: Store, page: list[tuple[str, str, str]]) -> str | None:
    try:
        with scratch.write_transaction() as c:
            c.executemany("INSERT INTO audit_leaves (currency, account, balance) VALUES (?, ?, ?)", page)
    except sqlite3.IntegrityError:
        return "an account appears twice among the leaves"
    finally:
        page.clear()
    return None


def _compare_with_replay(scratch: Store, platform: str, currency: str) -> str | None:
    """Merge the leaves and the replayed rows of `currency`, both in account
    (code point) order: the first account they disagree on, or None."""
    with scratch.transaction(commit=False) as c:
        connection = c.sqlite_cursor.connection
        leaves = _paged(connection, "SELECT account, balance FROM audit_leaves WHERE currency = ? ORDER BY account",
                        (currency,))
        rows = (r for r in _paged(connection, "SELECT account, CAST(earned AS TEXT), CAST(reversed AS TEXT), "
                                              "CAST(paid AS TEXT) FROM peerledger_balances WHERE platform = ? AND "
                                              "currency = ? ORDER BY account", (platform, currency))
                if is_prosumer(r[0]))
        leaf, row = next(leaves, None), next(rows, None)
        while leaf is not None or row is not None:
            if row is None or (leaf is not None and leaf[0] < row[0]):
                return f"the leaf of {leaf[0]!r} names an account without a balances row"  # type: ignore[index]
            if leaf is None or row[0] < leaf[0]:
                return f"{row[0]!r} has a balances row but no leaf: its balance is hidden"
            balance = int(row[1]) + int(row[2]) - int(row[3])
            if int(leaf[1]) != balance:
                return f"the leaf of {leaf[0]!r} shows balance {leaf[1]}, the replay gives {balance}"
            leaf, row = next(leaves, None), next(rows, None)
    return None


def _paged(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    cursor = connection.cursor()
    cursor.execute(sql, params)
    while page := cursor.fetchmany(LEAF_PAGE_ROWS):
        yield from page
